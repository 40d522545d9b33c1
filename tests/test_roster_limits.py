"""A roster path that is no CSV file (a device, a binary, a huge file) is refused at once,
in one line, with exit 2: it never fills memory or runs for minutes."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Notifier
from roster_helpers import read_roster

from notifier.config import load_settings
from notifier.errors import ConfigError, RosterError

ROSTER = REPO / "examples" / "volunteers.csv"
ARGS = ("roster", "import")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_at_once(device: str, tmp_path: Path) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "--ledger", str(tmp_path / "l.db"), *ARGS, device],
        capture_output=True,
        text=True,
        timeout=60,  # bounded: before the fix it ran until memory ran out
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {device}")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the error and its hint


def test_no_line_break_in_the_first_mb(tmp_path: Path) -> None:
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"email," + b"x" * (2 * 1024 * 1024))
    with pytest.raises(RosterError, match="no line break in the first MB"):
        read_roster(path)


def test_a_file_over_the_limit_is_refused(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFIER_ROSTER_MAX_BYTES", "1000")
    result = notifier("roster", "import", str(ROSTER))
    assert result.exit_code == 2
    assert "over the size limit for a roster (1,000 bytes)" in result.stderr
    monkeypatch.delenv("NOTIFIER_ROSTER_MAX_BYTES")
    assert notifier("roster", "import", str(ROSTER)).exit_code == 0


def test_the_limit_is_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text("[roster]\nmax_bytes = 2048\n", encoding="utf-8")
    assert load_settings(config, env={}).roster_max_bytes == 2048
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    assert load_settings(empty, env={}).roster_max_bytes == 500 * 1024 * 1024
    with pytest.raises(ConfigError, match="expected a whole number of bytes"):
        config.write_text('[roster]\nmax_bytes = "lots"\n', encoding="utf-8")
        load_settings(config, env={})


def test_a_huge_cell_refuses_its_row_and_the_rest_imports(
    notifier: Notifier, tmp_path: Path
) -> None:
    """A 10 MB cell (a pasted document, a broken export) is one bad row, not a damaged
    file: the row is refused with the reason, the others import."""
    roster = tmp_path / "roster.csv"
    huge = "x" * (10 * 1024 * 1024)
    roster.write_text(
        "volunteer_id,email,family_name,exposure,notes\r\n"
        "V1,a@example.org,Ashe,published,\r\n"
        f'V2,b@example.org,Brown,screened,"{huge}"\r\n'
        "V3,c@example.org,Chen,screened,\r\n",
        encoding="utf-8",
    )
    result = notifier("roster", "import", str(roster))
    assert result.exit_code == 0, result.output
    assert "3 rows, 2 valid, 1 rejected" in result.stdout
    (problem,) = read_rejected(notifier)
    assert problem["row"] == "3" and problem["column"] == "notes"
    assert "10240 KB of text; a roster cell holds at most 64 KB" in problem["reason"]
    assert len(problem["value"]) < 100  # what is kept of it is cut short
    listed = notifier("roster", "list", "--format", "csv").stdout
    assert "V1" in listed and "V3" in listed and "V2" not in listed


def read_rejected(notifier: Notifier) -> list[dict[str, str]]:
    text = notifier("roster", "rejects", "--format", "csv").stdout
    return list(csv.DictReader(io.StringIO(text)))
