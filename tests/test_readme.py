"""The README stays true: every `notifier ...` line in it names a real command and options.

Running every example for real needs a mail server and a roster; the demo test does that
for the main command. Here each documented command line is parsed by the real CLI, so a
renamed command or option fails the suite instead of misleading a newcomer.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest
from conftest import REPO

from notifier.cli import cli

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
