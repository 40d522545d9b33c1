"""The root command group, shared options, and the error boundary."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console

from notifier import __version__
from notifier.config import Settings, load_settings
from notifier.errors import NotifierError
from notifier.files import require_writable_file as require_writable_file
from notifier.files import write_csv as write_csv
from notifier.files import write_private as write_private
from notifier.layout import Column, key_values, table
from notifier.outputs import in_blocks, json_text, redact_urls, visible
from notifier.service import Workspace
from notifier.terminal import as_data, guarded_streams, live_stream, terminal_width

F = TypeVar("F", bound=Callable[..., Any])


class _LiveConsole(Console):
    """rich for live displays (progress bars, spinners) on the terminal under standard
    error (notifier.terminal.live_stream): they move the cursor, which the guarded stream
    would only show as text. Messages go through click.echo(..., err=True), guarded."""

    @property
    def file(self) -> IO[str]:
        return live_stream()

    @file.setter
    def file(self, new_file: IO[str]) -> None:
        pass  # always the live stream


# Everything on standard output goes through the guarded sys.stdout (notifier.terminal).
console = Console(highlight=False, soft_wrap=True)
err_console = _LiveConsole(stderr=True, highlight=False, soft_wrap=True)


def echo_table(
    columns: Sequence[Column | str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    max_lines: int = 4,
    err: bool = False,
) -> None:
    """A table laid out for the terminal's width (notifier.layout): cells wrap, no column
    is lost, and a table that cannot fit becomes one block per record."""
    lines = table(columns, rows, terminal_width(), title=title, max_lines=max_lines)
    click.echo("\n".join(lines), err=err)


def echo_fields(pairs: Iterable[tuple[str, str]]) -> None:
    """`field  value` lines, the values wrapping under themselves."""
    click.echo("\n".join(key_values(pairs, terminal_width())))


def echo_data(data: str | bytes) -> None:
    """Machine-readable output (CSV, JSON, a message) on standard output: guarded like
    every output, never wrapped."""
    with as_data():
        click.echo(data, nl=False)


def echo_data_pieces(pieces: Iterable[str]) -> None:
    """echo_data() of an output written as it is made (a report of a million people)."""
    with as_data():
        for block in in_blocks(pieces):
            click.echo(block, nl=False)


def echo_json(value: Any) -> None:
    """`value` as JSON on standard output (outputs.json_text: valid, nothing raw)."""
    echo_data(json_text(value) + "\n")


class NotifierGroup(click.Group):
    """Turns a NotifierError anywhere below into one line on stderr and its exit code;
    guards standard output and error (notifier.terminal) for the whole run, click's own
    usage errors included."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with guarded_streams():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotifierError as exc:
            echo_error(exc)
            ctx.exit(exc.exit_code)


def echo_error(exc: NotifierError) -> None:
    """One clean message on stderr: no secret from a URL, no terminal control characters."""
    click.echo(f"Error: {visible(redact_urls(str(exc)), keep_newlines=True)}", err=True)


class AppContext:
    """What every command needs: the settings, and the workspace every operation goes
    through (notifier.service): commands parse options, call it, and print."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._warned: set[str] = set()

    def workspace(self) -> Workspace:
        """The ledger's workspace; use it as a context manager (it closes the ledger)."""
        return Workspace(self.settings, warn=self.warn_once)

    def warn_once(self, text: str) -> None:
        """A warning about the ledger's surroundings, once a command (the demo opens the
        ledger many times): one line on stderr."""
        if text not in self._warned:
            self._warned.add(text)
            click.echo(f"Warning: {visible(redact_urls(text))}", err=True)


pass_app = click.make_pass_decorator(AppContext)


def format_option(*choices: str, help: str | None = None) -> Callable[[F], F]:
    """The `--format` option: the first choice is the default; the value arrives as `fmt`."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=help,
    )


def no_bom_option(f: F) -> F:
    """`--no-bom`: CSV files written to a path without the byte-order mark (notifier.files);
    the value arrives as `no_bom`."""
    return click.option(
        "--no-bom",
        is_flag=True,
        help="Write CSV files without the UTF-8 byte-order mark that tells Excel they are "
        "UTF-8 (standard output never has one).",
    )(f)


# color=True: click never strips what looks like an escape sequence from a message (a
# file name holding one would lose it silently): the guarded stream shows it instead.
# So no command styles its output (click.secho, rich styles): it would show as escapes.
@click.group(
    cls=NotifierGroup, context_settings={"help_option_names": ["-h", "--help"], "color": True}
)
@click.version_option(__version__, prog_name="notifier")
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The ledger file (default ./notifier.db, or $NOTIFIER_LEDGER).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Settings file (default: notifier.toml beside the ledger file, whatever folder "
    "you run in; or $NOTIFIER_CONFIG).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, for diagnosis.")
@click.pass_context
def cli(ctx: click.Context, ledger: Path | None, config_path: Path | None, verbose: bool) -> None:
    """notifier: tell the people affected by a data breach, in their language, and prove it.

    \b
    A typical run:
      notifier roster import volunteers.csv     # see every bad row
      notifier check 2020-03-breach             # does it render for everyone?
      notifier preview 2020-03-breach --volunteer someone@example.org
      notifier send 2020-03-breach              # dry run; add --yes to send
      notifier status 2020-03-breach
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(config_path, ledger=ledger)
    except NotifierError as exc:
        echo_error(exc)
        ctx.exit(exc.exit_code)
    ctx.obj = AppContext(settings)


def main() -> None:
    cli(prog_name="notifier")
