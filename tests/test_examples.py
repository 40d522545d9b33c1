"""The shipped example rosters: reproducible byte for byte, and they show what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from roster_helpers import read_roster

from notifier.roster import load_mapping
from notifier.volunteer import EXPOSURES, LOCALES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GENERATED = ("volunteers.csv", "partner-ja.csv", "partner-ja-mapping.toml")


def test_examples_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    for run in ("first", "second"):
        out = tmp_path / run
        subprocess.run(
            [sys.executable, str(EXAMPLES / "make_volunteers.py"), str(out)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for name in GENERATED:
            assert (out / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_examples_volunteers_cover_what_a_newcomer_should_see() -> None:
    result = read_roster(EXAMPLES / "volunteers.csv")
    assert 190 <= result.rows_total <= 210
    volunteers = [a.volunteer for a in result.accepted]
    assert {v.locale for v in volunteers} == set(LOCALES)
    assert {v.exposure for v in volunteers} == set(EXPOSURES)
    assert any(not v.data_held for v in volunteers)
    assert any(len(v.data_held) >= 3 for v in volunteers)
    assert any("'" in v.family_name for v in volunteers)
    assert any('"' in v.given_name for v in volunteers)
    assert any(len(v.family_name) > 25 for v in volunteers)
    assert any(v.postal_address for v in volunteers)
    assert any(v.email != v.email_ascii for v in volunteers)  # an IDN
    domains = {v.email_ascii.rsplit("@", 1)[1] for v in volunteers}
    assert all(
        d.endswith((".example", "example.org", "example.com", "example.jp")) for d in domains
    )

    reasons = " | ".join(p.reason for p in result.problems)
    assert len(result.rejected_rows) == 6
    for expected in ("@-sign", "duplicate of row", "unknown exposure", "required, but empty"):
        assert expected in reasons
    assert "unknown data_held item" in reasons and "whitespace" in reasons


def test_examples_partner_export_reads_with_its_mapping() -> None:
    mapping = load_mapping(EXAMPLES / "partner-ja-mapping.toml")
    raw = (EXAMPLES / "partner-ja.csv").read_bytes()
    assert b"\xfb\xfc" in raw and b"\xfa\xb1" in raw and b"\r\n" in raw
    result = read_roster(EXAMPLES / "partner-ja.csv", mapping=mapping)
    assert result.encoding == "cp932"
    names = {a.volunteer.display_name for a in result.accepted}
    assert {"髙橋 一郎", "山﨑 花子", "ヤマモト タロウ", "佐藤 健太", "Patrick O'Brien"} <= names
    assert [p.value for p in result.problems] == ["h.tanaka＠example.jp"]
