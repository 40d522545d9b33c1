"""`python -m notifier` as a real process: for tests where processes are the point (two
senders at once, a SIGKILL mid-send, Ctrl-C). Each runs in the ledger's folder with no
NOTIFIER_* variable from the test run's own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def notifier_command(ledger_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "notifier", "--ledger", str(ledger_path), *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}


def start_notifier(ledger_path: Path, *args: str) -> subprocess.Popen[str]:
    """Start `notifier ARGS` in the background; pair with `finished`."""
    return subprocess.Popen(
        notifier_command(ledger_path, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ledger_path.parent,
        env=clean_env(),
    )


def run_notifier(ledger_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `notifier ARGS` to the end (two minutes at most)."""
    return subprocess.run(
        notifier_command(ledger_path, *args),
        capture_output=True,
        text=True,
        cwd=ledger_path.parent,
        env=clean_env(),
        timeout=120,
        check=False,
    )


def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait (two minutes at most) for a started process: exit code, stdout, stderr."""
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, out, err
