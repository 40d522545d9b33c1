"""Campaign files: loading, validation errors a person can act on, overrides."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from notifier.campaign import (
    CAMPAIGN_DIR,
    DEFAULT_FOLLOWS_STATES,
    apply_overrides,
    list_campaigns,
    load_campaign,
)
from notifier.config import Settings
from notifier.errors import CampaignError

GOOD = """\
id = "test-notice"
title = "A test notice"
template = "breach"
date = 2020-03-24
from = "HMR Data Protection <dpo@example.org>"
{extra}
[reply_to]
en = "volunteers@example.org"
ja = "volunteers@example.jp"

[subject]
en = "Subject"
ja = "件名"

[dates]
attack = 2020-03-14

[audience]
exposures = ["published", "screened"]
locales = ["en", "ja"]
"""


def write(tmp_path: Path, text: str, name: str = "test-notice.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_campaign_shipped_first_notice_loads_by_id() -> None:
    campaign = load_campaign("2020-03-breach")
    assert campaign.campaign_id == "2020-03-breach"
    assert campaign.template == "breach"
    assert campaign.notice_date == date(2020, 3, 24)
    assert campaign.dates["attack"] == date(2020, 3, 14)
    assert set(campaign.subject) == set(campaign.reply_to) == {"en", "ja"}
    assert campaign.reply_to["en"].endswith("@example.org>")
    assert campaign.reply_to["ja"].endswith("@example.jp>")
    assert campaign.follows is None and campaign.allow_links is False
    assert campaign.path == CAMPAIGN_DIR / "2020-03-breach.toml"


def test_campaign_shipped_update_follows_first_notice() -> None:
    update = load_campaign("2020-04-29-update")
    assert update.follows == "2020-03-breach"
    # Everyone the first notice reached, or may not have only because a server was down.
    assert update.audience.exposures == ("published", "screened", "database_only")
    assert update.audience.follows_states == ("sent", "delivered", "expired")
    assert [c.campaign_id for c in list_campaigns()] == ["2020-03-breach", "2020-04-29-update"]


def test_campaign_loads_by_path_and_defaults_follow_states(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD.format(extra=""))
    follow = GOOD.format(extra='follows = "test-notice"').replace(
        '"test-notice"\ntitle', '"x"\ntitle'
    )
    follow_path = write(
        tmp_path, follow.replace('id = "test-notice"', 'id = "follow-up"'), "f.toml"
    )
    assert load_campaign(first).campaign_id == "test-notice"
    assert load_campaign(str(first)).path == first
    follow_up = load_campaign(follow_path)
    assert follow_up.follows == "test-notice"
    assert follow_up.audience.follows_states == DEFAULT_FOLLOWS_STATES


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (lambda t: t.replace('title = "A test notice"\n', ""), "title", "missing key"),
        (lambda t: t.replace('title = "A test notice"', "title = 3"), "title", "string"),
        (lambda t: t.replace("date = 2020-03-24", 'date = "24/03/2020"'), "date", "date like"),
        (lambda t: t.replace("date = 2020-03-24", "date = 2020-03-24T10:00:00"), "date", "date"),
        (lambda t: t.replace('"screened"]', '"leaked"]'), "audience.exposures", "'leaked'"),
        (
            lambda t: t.replace('locales = ["en", "ja"]', 'locales = ["fr"]'),
            "audience.locales",
            "fr",
        ),
        (lambda t: t.replace('ja = "件名"', 'fr = "Objet"'), "subject.fr", "unknown locale"),
        (lambda t: t.replace('ja = "件名"\n', ""), "subject.ja", "missing key"),
        (
            lambda t: t.replace('template = "breach"', 'template = "nope"'),
            "template",
            "unknown template",
        ),
        (lambda t: t.format(extra='follows = "no-such-campaign"'), "follows", "unknown campaign"),
        (lambda t: t.format(extra='attachments = ["a.pdf"]'), "attachments", "attachments"),
        (lambda t: t.format(extra='colour = "red"'), "colour", "unknown key"),
        (lambda t: t.format(extra="allow_links = 1"), "allow_links", "true or false"),
        (
            lambda t: t.replace(
                '[reply_to]\nen = "volunteers@example.org"\nja = "volunteers@example.jp"',
                'reply_to = "volunteers@example.org"',
            ),
            "reply_to",
            "table",
        ),
    ],
)
def test_campaign_malformed_file_names_file_key_and_expectation(
    tmp_path: Path, change: object, field: str, expected: str
) -> None:
    assert callable(change)
    text = change(GOOD)
    path = write(tmp_path, text.format(extra="") if "{extra}" in text else text)
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    error = caught.value
    assert error.file == str(path)
    assert error.field == field
    assert expected in str(error)
    assert str(path) in str(error)


def test_campaign_not_toml_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, 'id = "x\n')
    with pytest.raises(CampaignError, match="not valid TOML") as caught:
        load_campaign(path)
    assert caught.value.file == str(path)


def test_campaign_unknown_id_hints_at_list() -> None:
    with pytest.raises(CampaignError, match="no campaign with id 'nope'") as caught:
        load_campaign("nope")
    assert caught.value.hint is not None and "campaign list" in caught.value.hint
    assert "did you mean" not in str(caught.value)


def test_campaign_typo_suggests_the_closest_ids_and_names_no_internal_path() -> None:
    with pytest.raises(CampaignError) as caught:
        load_campaign("2020-03-breech")
    text = str(caught.value)
    assert text.startswith("no campaign with id '2020-03-breech'; did you mean 2020-03-breach")
    assert caught.value.file is None and "notifier/campaigns" not in text


def test_campaign_overrides_from_settings_without_editing_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(extra=""))
    before = path.read_bytes()
    settings = Settings(sender_from="DPO <dpo@example.com>", reply_to={"ja": "ja@example.com"})
    campaign = apply_overrides(load_campaign(path), settings)
    assert campaign.sender == "DPO <dpo@example.com>"
    assert campaign.reply_to == {"en": "volunteers@example.org", "ja": "ja@example.com"}
    assert path.read_bytes() == before
    untouched = apply_overrides(load_campaign(path), Settings())
    assert untouched.sender == "HMR Data Protection <dpo@example.org>"
