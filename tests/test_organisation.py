"""[organisation] in notifier.toml: the organisation's own statements, and every mistake in
them named by its key; and a campaign's [facts]."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.campaign import load_campaign
from notifier.config import load_settings
from notifier.errors import CampaignError, ConfigError
from notifier.organisation import Organisation

GOOD = """
[organisation]
database_holds = ["name", "contact_details", "name"]
never_asks_for = ["password"]
independent_check.en = "  the number on   your consent form "
[organisation.advice]
action_fraud = "0300 123 2040"
"""


def settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_statements_are_read_and_listed_for_the_proof_sheet(tmp_path: Path) -> None:
    organisation = load_settings(settings(tmp_path, GOOD), env={}).organisation
    assert organisation.database_holds == ("name", "contact_details")  # each once
    assert organisation.independent_check == {"en": "the number on your consent form"}
    assert organisation.statements() == [
        ("database_holds", "name, contact_details"),
        ("never_asks_for", "password"),
        ("independent_check.en", "the number on your consent form"),
        ("advice.action_fraud", "0300 123 2040"),
    ]
    assert load_settings(settings(tmp_path, ""), env={}).organisation == Organisation()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[organisation]\nwebsite = "x"\n', "organisation.website"),
        ('[organisation]\nnever_asks_for = ["passport"]\n', "organisation.never_asks_for"),
        ('[organisation]\nnever_sends = "link"\n', "organisation.never_sends"),
        ('[organisation]\npromises_update = "yes"\n', "organisation.promises_update"),
        ('[organisation]\nindependent_check.fr = "x"\n', "organisation.independent_check.fr"),
        ('[organisation]\nindependent_check.en = "a\\nb"\n', "organisation.independent_check.en"),
        ('[organisation.advice]\nsamaritans = "116 123"\n', "organisation.advice.samaritans"),
        ('organisation = "HMR"\n', "organisation"),
    ],
)
def test_every_mistake_names_its_key(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(settings(tmp_path, text), env={})
    assert caught.value.field == field
    assert "notifier.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("facts", "field"),
    [
        ('published_surname_initials = ["d"]', "facts.published_surname_initials"),
        ('published_surname_initials = "DGIJ"', "facts.published_surname_initials"),
        ('published_surname_initials = ["DG"]', "facts.published_surname_initials"),
        ('published_initials = ["D"]', "facts.published_initials"),
    ],
)
def test_a_campaign_facts_mistake_names_its_key(tmp_path: Path, facts: str, field: str) -> None:
    source = load_campaign("2020-03-breach").path
    assert source is not None
    text = source.read_text(encoding="utf-8").replace(
        'published_surname_initials = ["D", "G", "I", "J"]', facts
    )
    path = tmp_path / "campaign.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    assert caught.value.field == field
