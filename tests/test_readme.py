"""The README stays true: every `notifier ...` line in it names a real command and options.

Running every example for real needs a mail server and a roster; the demo test does that
for the main command. Here each documented command line is parsed by the real CLI, so a
renamed command or option fails the suite instead of misleading a newcomer.
"""

from __future__ import annotations

import email
import email.policy
import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import REPO, write_org_config

from notifier.cli import cli
from notifier.sink import Sink

README = (REPO / "README.md").read_text(encoding="utf-8")
CODE_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def documented_commands() -> list[str]:
    lines = []
    for block in CODE_BLOCK.findall(README):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(".venv/bin/notifier "):
                line = line.removeprefix(".venv/bin/")
            if line.startswith("notifier "):
                lines.append(line)
    return lines


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    ctx = click.Context(cli)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        found = command.get_command(ctx, words[0])
        assert found is not None, f"unknown command {words[0]!r}"
        command, words = found, words[1:]
    return command, words


def test_readme_documents_commands() -> None:
    assert len(documented_commands()) > 25


@pytest.mark.parametrize("line", documented_commands())
def test_documented_command_line_parses(line: str) -> None:
    words = shlex.split(line)[1:]
    # Global options (before the command) belong to the root group.
    while words and words[0] in ("--ledger", "--config"):
        words = words[2:]
    command, rest = resolve(words)
    assert not isinstance(command, click.Group), f"{line}: names a group, not a command"
    known = {opt for param in command.params for opt in param.opts}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{line}: {command.name} has no option {word}"


def test_readme_opens_with_the_two_commands_ci_runs() -> None:
    first_block = CODE_BLOCK.findall(README)[0]
    commands = [ln for ln in first_block.splitlines() if ln and not ln.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("notifier demo")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci  # CI runs exactly the README's test command


# --- the README runs --------------------------------------------------------------------

# Lines that cannot run inside the suite, and why. Everything else is run for real, in the
# README's order, against the demo's ledger (examples copied in, a sink for sending).
NOT_RUN: dict[str, str] = {
    "notifier sink --port 8025 --maildir sink/": "runs until Ctrl-C (the suite uses a Sink)",
    "notifier console": "runs until Ctrl-C (tests/web runs it)",
    "notifier console --port 9000": "runs until Ctrl-C (tests/web runs it)",
    "notifier bounces parse bounce1.eml bounce2.eml --format json": "the reader's own files",
    "notifier bounces ingest ~/Maildir/bounces": "the reader's own Maildir",
    "notifier bounces ingest --imap imaps://user@mail.example.org/INBOX": "a real IMAP server",
}


def test_readme_lines_run_against_the_demo_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("NOTIFIER_LEDGER", "NOTIFIER_CONFIG", "NOTIFIER_RATE"):
        monkeypatch.delenv(var, raising=False)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    runner = CliRunner()
    assert runner.invoke(cli, ["demo"], catch_exceptions=False).exit_code == 0
    write_org_config(tmp_path)  # the example contact point, as the README says
    ran = []
    with Sink() as sink:
        monkeypatch.setenv("NOTIFIER_SMTP_URL", sink.url)
        for line in documented_commands():
            if line in NOT_RUN:
                continue
            words = shlex.split(line)[1:]
            if "SEQ:HASH" in words:  # the anchor `ledger head` printed, as a reader copies it
                head = runner.invoke(cli, ["ledger", "head"], catch_exceptions=False)
                words[words.index("SEQ:HASH")] = head.stdout.strip()
            result = runner.invoke(cli, words, catch_exceptions=False)
            assert result.exit_code == 0, f"{line}\n{result.output}"
            ran.append(line)
    assert len(ran) >= len(documented_commands()) - len(NOT_RUN)
    assert (tmp_path / "report.html").exists() and (tmp_path / "letters.csv").exists()
    tests = [m for m in sink.messages if m.rcpt_tos == ("you@your-organisation.example",)]
    subjects = [
        email.message_from_bytes(m.data, policy=email.policy.default)["Subject"] for m in tests
    ]
    assert subjects and all(s.startswith("[TEST HMR-") for s in subjects)
