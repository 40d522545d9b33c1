"""A roster path that is no CSV file (a device, a binary, a huge file) is refused at once,
in one line, with exit 2: it never fills memory or runs for minutes."""

from __future__ import annotations

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
