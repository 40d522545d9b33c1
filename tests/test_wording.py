"""Wording per exposure with no fall-through, and the facts a notice states held to the
roster: a fourth exposure with only a label, a template that tests the exposure, a
published volunteer outside the published records' surname initials."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import Notifier, with_contact, write_org_config
from smtp_helpers import add_volunteers, make_volunteers

from notifier import campaign as campaign_module
from notifier import check as check_module
from notifier import volunteer as volunteer_module
from notifier.campaign import TEMPLATES_DIR, load_campaign
from notifier.catalogs import LOCALE_DIR
from notifier.check import check_campaign
from notifier.ledger import Ledger, volunteer_to_row
from notifier.volunteer import EXPOSURES, LATIN_FAMILY_NAME, Volunteer, surname_initial

FIRST = "2020-03-breach"


def copy_of_first_notice(tmp_path: Path, audience: str) -> Path:
    """The first notice with its own templates and catalogs and another [audience]."""
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    shutil.copytree(LOCALE_DIR, tmp_path / "locale", ignore=shutil.ignore_patterns("*.mo"))
    source = load_campaign(FIRST).path
    assert source is not None
    text = source.read_text(encoding="utf-8")
    text = text[: text.index("[audience]")] + audience
    text = text.replace(
        "\nallow_links = false",
        '\nallow_links = false\ntemplates_dir = "templates"\nlocale_dir = "locale"',
    )
    path = tmp_path / "first.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_fourth_exposure_with_only_a_label_fails_the_check(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone adds "contractor" to the vocabulary and to a campaign's audience, with a
    label and nothing else: the check names the missing wording in both locales, instead
    of sending contractors another exposure's words."""
    exposures = (*volunteer_module.EXPOSURES, "contractor")
    for module in (volunteer_module, campaign_module, check_module):
        monkeypatch.setattr(module, "EXPOSURES", exposures)
    path = copy_of_first_notice(
        tmp_path, '[audience]\nexposures = ["published", "screened", "contractor"]\n'
    )
    po = tmp_path / "locale" / "ja" / "LC_MESSAGES" / "messages.po"
    po.write_text(
        po.read_text(encoding="utf-8") + '\nmsgid "contractor"\nmsgstr "業務委託先"\n', "utf-8"
    )
    people = [*make_volunteers(6), Volunteer("C1", "c@example.com", "c@example.com", "Doe",
              "Jo", "en", "contractor")]  # fmt: skip
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])

    report = check_campaign(ledger, with_contact(load_campaign(path)))
    wording = [p for p in report.problems if p.kind == "wording"]
    assert sorted(p.message.split(":")[0] for p in wording) == [
        "no wording for contractor readers in en",
        "no wording for contractor readers in ja",
    ]
    assert all("breach/contractor.j2 is missing" in p.message for p in wording)
    assert sum(p.volunteers for p in wording) == 1  # the one English contractor
    # Their message is never made from another exposure's wording.
    render_errors = [p for p in report.problems if p.kind == "render_error"]
    assert render_errors and all("contractor" in p.message for p in render_errors)
    assert not report.ok


def test_a_template_that_tests_the_exposure_is_named(ledger: Ledger, tmp_path: Path) -> None:
    path = copy_of_first_notice(tmp_path, '[audience]\nlocales = ["en", "ja"]\n')
    layout = tmp_path / "templates" / "en" / "_breach.j2"
    text = layout.read_text(encoding="utf-8").replace(
        "{% block closing %}\n",
        '{% block closing %}\n{% if exposure == "published" %}Sorry.{% endif %}\n',
    )
    layout.write_text(text, encoding="utf-8")
    add_volunteers(ledger, make_volunteers(6))
    report = check_campaign(ledger, with_contact(load_campaign(path)))
    tests = [p for p in report.problems if "reads the reader's exposure" in p.message]
    assert [p.message.split(" reads ")[0] for p in tests] == [
        f"en/_breach.j2:{text.splitlines().index('{% block closing %}') + 2}"
    ]
    assert "belongs in breach/<exposure>.j2" in tests[0].message
    # Rendering it fails too: the render does not define the exposure at all, so no
    # English reader's wording renders.
    broken = {
        p.message.split(" does not render")[0] for p in report.problems if p.kind == "wording"
    }
    assert {f"the wording for {e} readers in en" for e in EXPOSURES} <= broken


@pytest.mark.parametrize(
    ("family", "latin", "initial"),
    [
        ("Davies", "", "D"),
        ("d'Arcy", "", "D"),
        ("Ó Gallchóir", "", "O"),
        ("Íñiguez", "", "I"),
        ("山田", "", None),
        ("山田", "Yamada", "Y"),
        ("井上", "Inoue", "I"),
    ],
)
def test_the_surname_initial_is_the_latin_spelling(
    family: str, latin: str, initial: str | None
) -> None:
    extra = {LATIN_FAMILY_NAME: latin} if latin else {}
    volunteer = Volunteer("v", "a@example.jp", "a@example.jp", family, "x", "ja", "published",
                          extra=extra)  # fmt: skip
    assert surname_initial(volunteer) == initial


def test_published_volunteers_outside_the_surname_rule_are_named_and_warned(
    notifier: Notifier, tmp_path: Path
) -> None:
    """The 2020 notice: the published records were of surnames beginning with D, G, I or
    J. A published 山田 (or Smith) would be told so; import warns, check names them."""
    write_org_config(notifier.ledger_path.parent)
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "volunteer_id,email,family_name,given_name,locale,exposure,family_name_latin\n"
        "V1,davies@example.com,Davies,Jo,en,published,\n"
        "V2,smith@example.com,Smith,Al,en,published,\n"
        "V3,yamada@example.jp,山田,太郎,ja,published,\n"
        "V4,ito@example.jp,伊藤,花子,ja,published,Ito\n"
        "V5,sato@example.jp,佐藤,健,ja,screened,\n",
        encoding="utf-8",
    )
    imported = notifier("roster", "import", str(roster))
    assert imported.exit_code == 0, imported.output
    assert (
        "Warning: 2 published volunteers whose family name does not begin with D, G, I or J"
        in imported.stdout
    )
    assert "V2 (Smith), V3 (山田)" in imported.stdout
    checked = notifier("check", FIRST)
    assert checked.exit_code == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2
    (outside,) = [p for p in problems if "does not begin with D, G, I or J" in p]
    assert outside.endswith("[1 volunteer, e.g. V2]")
    (unknown,) = [p for p in problems if "not in Latin letters" in p]
    assert "family_name_latin column" in unknown and unknown.endswith("e.g. V3]")
