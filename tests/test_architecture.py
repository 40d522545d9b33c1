"""The command line only parses, calls the service, and prints: a rule that lived in a CLI
module would be skipped by the first other caller (the web console). So `notifier/cli`
may import the service and the modules that only describe or format things, never the
ledger, the sending machinery or the rules' own modules; and no module of the library
imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "notifier"

# What a command module may import from notifier: the service, and modules that only
# name or format things (vocabularies, words for states, output helpers, settings, the
# embedded SMTP sink the demo sends into).
CLI_MAY_IMPORT = {
    "notifier",  # __version__
    "notifier.cli",
    "notifier.service",
    "notifier.errors",
    "notifier.outputs",
    "notifier.layout",  # tables laid out for a terminal's width
    "notifier.terminal",  # the guard on standard output and error
    "notifier.report_formats",
    "notifier.message",
    "notifier.volunteer",
    "notifier.config",
    "notifier.organisation",  # [organisation] settings, read like the rest of notifier.toml
    "notifier.render",
    "notifier.sink",
    "notifier.files",  # files and folders written for the user
    "notifier.web.server",  # the web console, which calls the service as the commands do
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_command_modules_only_call_the_service(path: Path) -> None:
    for line, module in imported_modules(path):
        if not module.startswith("notifier"):
            continue
        allowed = module in CLI_MAY_IMPORT or module.startswith("notifier.cli.")
        assert allowed, f"{path.name}:{line} imports {module}: go through notifier.service"


# The web console is held to the same: its pages call the service (never SQL, the ledger,
# or a command module); it may also use its own web framework.
WEB_MAY_IMPORT = (CLI_MAY_IMPORT - {"notifier.cli", "notifier.layout", "notifier.terminal"}) | {
    "notifier.web",
}
WEB_NEVER_IMPORTS = ("sqlite3", "sqlite_utils", "click", "rich", "notifier.ledger")


@pytest.mark.parametrize("path", sorted((PACKAGE / "web").glob("*.py")), ids=lambda p: p.name)
def test_web_modules_only_call_the_service(path: Path) -> None:
    for line, module in imported_modules(path):
        assert not module.startswith(WEB_NEVER_IMPORTS), f"{path.name}:{line} imports {module}"
        if not module.startswith("notifier"):
            continue
        allowed = module in WEB_MAY_IMPORT or module.startswith("notifier.web.")
        assert allowed, f"{path.name}:{line} imports {module}: go through notifier.service"


def test_web_modules_hold_no_sql() -> None:
    for path in (PACKAGE / "web").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", ".execute("):
            assert word not in text, f"{path.relative_to(REPO)} holds {word.strip()}"


def test_the_library_never_imports_the_command_line() -> None:
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue
        for line, module in imported_modules(path):
            assert not module.startswith(("notifier.cli", "click", "rich")), (
                f"{path.relative_to(REPO)}:{line} imports {module}"
            )


def test_only_the_ledger_package_moves_a_message_or_appends_an_event() -> None:
    """The transition function and the chain are called only inside notifier/ledger."""
    for path in PACKAGE.rglob("*.py"):
        if "ledger" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text(encoding="utf-8")
        for forbidden in ("chain.append(", "append_serialised(", "messages.move("):
            assert forbidden not in text, f"{path.relative_to(REPO)} calls {forbidden}"
