"""Golden texts: one rendered text part per shape and locale, kept under tests/golden/ and
compared byte for byte, so that every change of wording is a diff someone reviews.

After an intended change of wording, write the files again and review the diff:

    NOTIFIER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py
    git diff tests/golden/
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import with_contact

from notifier.campaign import load_campaign
from notifier.render import Renderer
from notifier.volunteer import DATA_HELD, EXPOSURES, LOCALES, Volunteer

GOLDEN = Path(__file__).resolve().parent / "golden"
CAMPAIGNS = ("2020-03-breach", "2020-04-29-update")
UPDATE = os.environ.get("NOTIFIER_UPDATE_GOLDEN") == "1"

# The sets of data held that change the wording: nothing on record ("may have included"),
# identity documents and bank details without health information, health information
# (with test results: the HIV paragraph) without identity documents, and everything.
DATA_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "id-photo-bank": ("id_documents", "photo", "bank_details"),
    "health": ("health_questionnaire", "consent_form", "test_results"),
    "all": DATA_HELD,
}
# Someone never screened has no screening records (anything else is a contradiction
# that `notifier check` refuses), so database-only people have one shape.
SHAPES: list[tuple[str, str]] = [
    (exposure, name)
    for exposure in EXPOSURES
    for name in (DATA_SETS if exposure != "database_only" else ("none",))
]
NAMES = {"en": ("Davies", 'Margaret "Peggy"'), "ja": ("伊藤", "花子")}
# The wordings of each campaign by whether its earlier notice reached the reader: a first
# notice has one; the update reads differently to someone its first notice expired on the
# way to (a server was down), and those files say so in their names.
WORDINGS: dict[str, tuple[tuple[bool | None, str], ...]] = {
    "2020-03-breach": ((None, ""),),
    "2020-04-29-update": ((True, ""), (False, "--not-reached")),
}
CASES = [
    (campaign_id, locale, exposure, data_set, reached, suffix)
    for campaign_id in CAMPAIGNS
    for locale in LOCALES
    for exposure, data_set in SHAPES
    for reached, suffix in WORDINGS[campaign_id]
]


def golden_path(
    campaign_id: str, locale: str, exposure: str, data_set: str, suffix: str = ""
) -> Path:
    return GOLDEN / campaign_id / locale / f"{exposure}--{data_set}{suffix}.txt"


def render_text(
    campaign_id: str, locale: str, exposure: str, data_set: str, reached: bool | None = None
) -> str:
    family, given = NAMES[locale]
    volunteer = Volunteer(
        "golden", "golden@example.org", "golden@example.org", family, given, locale, exposure,
        DATA_SETS[data_set],
    )  # fmt: skip
    renderer = Renderer(with_contact(load_campaign(campaign_id)))
    return renderer.render(volunteer, reached=reached).text


@pytest.mark.parametrize(
    ("campaign_id", "locale", "exposure", "data_set", "reached", "suffix"), CASES
)
def test_golden_text(
    campaign_id: str, locale: str, exposure: str, data_set: str, reached: bool | None, suffix: str
) -> None:
    path = golden_path(campaign_id, locale, exposure, data_set, suffix)
    text = render_text(campaign_id, locale, exposure, data_set, reached).encode("utf-8")
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    assert path.exists(), f"no golden file {path}: run with NOTIFIER_UPDATE_GOLDEN=1"
    assert text == path.read_bytes(), (
        f"{path.relative_to(GOLDEN.parent)} differs from the rendered text: if the change is "
        "intended, run NOTIFIER_UPDATE_GOLDEN=1 pytest tests/test_golden.py and review the diff"
    )


def test_golden_has_no_stale_files() -> None:
    expected = {
        golden_path(c, loc, exposure, data, suffix) for c, loc, exposure, data, _r, suffix in CASES
    }
    found = set(GOLDEN.rglob("*.txt"))
    assert found == expected, sorted(str(p) for p in found ^ expected)
