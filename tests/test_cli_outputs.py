"""Files the CLI writes on request carry personal data: owner-only, and clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import REPO, Notifier


@pytest.fixture
def imported(notifier: Notifier) -> None:
    result = notifier(
        "roster", "import", str(REPO / "examples" / "volunteers.csv"), "--rejects", "rejects.csv"
    )
    assert result.exit_code == 0, result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_output_file_is_owner_only(
    notifier: Notifier, imported: None, tmp_path: Path
) -> None:
    (tmp_path / "previews").mkdir()
    old = tmp_path / "unreachable.csv"
    old.write_text("stale", encoding="utf-8")
    os.chmod(old, 0o644)  # an existing file is tightened too, and truncated
    for args in (
        (
            "preview",
            "2020-03-breach",
            "--volunteer",
            "HMR-0001",
            "--out",
            "one.eml",
            "--format",
            "eml",
        ),
        ("preview", "2020-03-breach", "--all", "--out", "previews"),
        ("export", "unreachable", "--out", "unreachable.csv"),
    ):
        result = notifier(*args)
        assert result.exit_code == 0, result.output
    written = [
        tmp_path / "rejects.csv",
        tmp_path / "one.eml",
        old,
        *sorted((tmp_path / "previews").iterdir())[:3],
    ]
    for path in written:
        assert mode(path) == 0o600, path
    assert old.read_text(encoding="utf-8").startswith("volunteer_id")


def test_unwritable_output_is_one_clean_error(notifier: Notifier, imported: None) -> None:
    result = notifier("export", "unreachable", "--out", "no/such/folder/x.csv")
    assert result.exit_code == 2
    assert "no/such/folder/x.csv: cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_password_in_a_mistyped_url_is_never_echoed(notifier: Notifier, imported: None) -> None:
    result = notifier("send", "2020-03-breach", "--smtp", "smtpx://bob:s3cret@mail.example.org")
    assert result.exit_code == 2
    assert "s3cret" not in result.output
    assert "smtpx://***@mail.example.org" in result.output
