"""`notifier roster ...`: import a roster, list the volunteers, show the rejected rows."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from notifier.cli.app import (
    AppContext,
    cli,
    console,
    err_console,
    format_option,
    no_bom_option,
    pass_app,
    require_writable_file,
    write_csv,
)
from notifier.errors import ExitCode
from notifier.outputs import csv_lines, csv_text, visible
from notifier.render import listed
from notifier.report_formats import shown_time
from notifier.service import (
    ENCODING_CHOICES,
    AddressMove,
    ImportSummary,
    RosterStream,
    RowProblem,
    SurnameOutliers,
    VolunteerQuery,
)
from notifier.volunteer import EXPOSURES, FIELDS, LOCALES

# `warning` is "yes" for a row that was imported all the same (see notifier.roster._contradiction).
REJECTS_HEADER: tuple[str, ...] = ("row", "column", "value", "reason", "warning")
# A terminal is no place for thousands of problems: beyond this many, point to the CSV.
MAX_TABLE_ROWS = 200
MAX_CHANGES_SHOWN = 50
TABLE_COLUMNS: tuple[str, ...] = (
    "volunteer_id",
    "display_name",
    "email",
    "locale",
    "exposure",
    "data_held",
)


@cli.group()
def roster() -> None:
    """Import the roster of affected volunteers, and look at what was imported."""


@roster.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    "mapping_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file mapping the file's headers and values to the canonical ones.",
)
@click.option(
    "--encoding",
    default="auto",
    show_default=True,
    metavar="|".join(ENCODING_CHOICES) + "|...",
    help="The file's encoding; auto tells UTF-8, UTF-8 with BOM and cp932 apart.",
)
@click.option(
    "--default-locale",
    type=click.Choice(LOCALES),
    default="en",
    show_default=True,
    help="Language for everyone, when the file has no locale column.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the rejected rows, and the rows imported with a warning, to this CSV "
    "file (row,column,value,reason,warning).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Import nothing if any row is bad (exit 1), instead of skipping it.",
)
@no_bom_option
@pass_app
def import_(
    app: AppContext,
    file: Path,
    mapping_path: Path | None,
    encoding: str,
    default_locale: str,
    rejects_path: Path | None,
    strict: bool,
    no_bom: bool,
) -> None:
    """Import volunteers from FILE, a CSV file saved from a spreadsheet.

    \b
    Every bad row is shown with its spreadsheet row number, column, value and reason;
    good rows are imported anyway (exit 0) unless --strict. Importing the same file
    again changes nothing; importing an edited file updates the changed volunteers.
    Example, for a Japanese partner's Excel export:
      notifier roster import partner-ja.csv --mapping partner-ja-mapping.toml
    """
    if rejects_path is not None:
        require_writable_file(rejects_path)  # before the import, not after it
    with app.workspace() as ws, contextlib.ExitStack() as stack:
        # The file is read, checked and recorded a chunk of rows at a time, in one
        # transaction; a spinner on stderr meanwhile (silent when it is not a terminal).
        with err_console.status(f"Importing {file} ..."):
            imported = stack.enter_context(
                ws.import_roster(
                    file,
                    mapping=mapping_path,
                    encoding=encoding,
                    default_locale=default_locale,
                    strict=strict,
                )
            )
        summary, result = imported.summary, imported.stream
        _print_problems(result, summary)
        if rejects_path is not None:
            # Every problem, as the ledger recorded it, and every warning: read as written.
            warnings = iter(()) if summary.refused else result.all_warnings()
            write_rejects_csv(
                rejects_path, ws.rejected_rows(summary.import_id), warnings, bom=not no_bom
            )
            also = " and warnings" if result.warning_count and not summary.refused else ""
            click.echo(f"Rejected rows{also} written to {rejects_path}")
    _print_outcome(summary, strict)
    _print_moves(imported.moved, imported.moved_count)
    _print_surname_outliers(imported.surname_outliers)
    if summary.refused:
        raise SystemExit(ExitCode.PROBLEMS)


def _print_problems(result: RosterStream, summary: ImportSummary) -> None:
    click.echo(
        f"Read {result.file} ({result.encoding}): {result.rows_total} rows, "
        f"{result.rows_total - summary.rejected} valid, {summary.rejected} rejected"
        + (f" ({_count(summary.problem_count, 'problem')})" if summary.problem_count else "")
    )
    if summary.problem_count:
        console.print(problems_table(summary.problems, limit=MAX_TABLE_ROWS))
        if summary.problem_count > MAX_TABLE_ROWS:
            click.echo(
                f"... and {summary.problem_count - MAX_TABLE_ROWS} more problems; "
                "see them all with: notifier roster rejects --format csv"
            )
    if result.warning_count and not summary.refused:
        console.print(problems_table(result.warnings, limit=MAX_TABLE_ROWS, title=WARNINGS_TITLE))
        if result.warning_count > MAX_TABLE_ROWS:
            click.echo(
                f"... and {result.warning_count - MAX_TABLE_ROWS} more warnings; "
                "see them all with --rejects FILE"
            )
        click.echo(
            f"Warning: {_count(result.warning_count, 'warning')} on rows imported all the"
            " same (data held that contradicts the exposure, a name or address that could"
            " mislead); `notifier check` fails until the roster is corrected."
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_outcome(summary: ImportSummary, strict: bool) -> None:
    if summary.refused:
        click.echo(
            f"--strict: nothing imported, because {_count(summary.rejected, 'row')} "
            f"{'has' if summary.rejected == 1 else 'have'} problems. "
            "Fix them, or import without --strict to skip them."
        )
        return
    if summary.already_imported:
        click.echo(
            f"Nothing changed: this file was already imported (import {summary.import_id}) "
            "and the ledger already holds its volunteers as they are in it; nothing written."
        )
        return
    click.echo(
        f"Import {summary.import_id}: {summary.added} added, {summary.updated} updated, "
        f"{summary.unchanged} unchanged."
    )
    if not summary.added and not summary.updated:
        click.echo("Nothing changed in the ledger's volunteers.")
    for vid, name, old, new in summary.changes[:MAX_CHANGES_SHOWN]:
        click.echo(f"  {vid}: {name}: {old!r} -> {new!r}")
    if summary.change_count > MAX_CHANGES_SHOWN:
        click.echo(
            f"  ... and {summary.change_count - MAX_CHANGES_SHOWN} more changes "
            "(each person's are in: notifier history VOLUNTEER)"
        )


def _print_moves(moved: Sequence[AddressMove], count: int) -> None:
    """Each address the import gave to someone other than who had it, naming both."""
    for move in moved[:MAX_CHANGES_SHOWN]:
        click.echo(
            f"Warning: the address {visible(move.address)} went from volunteer"
            f" {visible(move.previous)} to volunteer {visible(move.volunteer_id)}"
            f" ({visible(move.previous)} {visible(move.how)})."
        )
    if count > MAX_CHANGES_SHOWN:
        click.echo(f"  ... and {count - MAX_CHANGES_SHOWN} more moved addresses")
    if moved:
        click.echo(
            "If the roster swapped people's addresses by mistake, correct it and import it"
            " again: a follow-up would reach the wrong person, and `notifier check` names"
            " each one until then."
        )


def _print_surname_outliers(outliers: Sequence[SurnameOutliers]) -> None:
    """Published volunteers the campaigns' published-surname fact does not fit."""
    for rule in outliers:
        shown = ", ".join(
            f"{visible(v.volunteer_id)} ({visible(v.family_name)})" for v in rule.first
        )
        more = f" and {rule.count - len(rule.first)} more" if rule.count > len(rule.first) else ""
        click.echo(
            f"Warning: {_count(rule.count, 'published volunteer')} whose family name does not"
            f" begin with {listed(rule.initials, 'en', 'or')}, the initials the campaigns say"
            f" the published records had: {shown}{more}. Their notice would say so: check"
            " their exposure, or give a name in kanji as their records spell it in a"
            " family_name_latin column. `notifier check` names them until then."
        )


WARNINGS_TITLE = "Imported with a warning"


def problems_table(
    problems: Iterable[RowProblem], *, limit: int | None = None, title: str = "Rejected rows"
) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("row", justify="right")
    table.add_column("column")
    table.add_column("value", overflow="fold")  # wrapped, never cut: it is what to fix
    table.add_column("reason")
    for p in itertools.islice(problems, limit):
        # Text(), not markup: a value such as "[b]" must show as typed.
        table.add_row(
            str(p.row), Text(visible(p.column)), Text(visible(p.value)), Text(visible(p.reason))
        )
    return table


def rejects_csv_lines(
    problems: Iterable[RowProblem], warnings: Iterable[RowProblem] = ()
) -> Iterator[str]:
    """The rejects file (`row,column,value,reason,warning`), a line at a time."""
    rows = itertools.chain(
        ((p.row, p.column, p.value, p.reason, "") for p in problems),
        ((p.row, p.column, p.value, p.reason, "yes") for p in warnings),
    )
    return csv_lines(REJECTS_HEADER, rows)


def write_rejects_csv(
    path: Path,
    problems: Iterable[RowProblem],
    warnings: Iterable[RowProblem] = (),
    *,
    bom: bool = True,
) -> None:
    # With the byte-order mark Excel needs (notifier.files.write_csv); readers of our own
    # CSV (roster import, --ids) skip it, so the header is still `row,column,...`.
    write_csv(path, rejects_csv_lines(problems, warnings), bom=bom)


@roster.command("list")
@format_option(
    "table", "csv", "json", help="json: one array of objects keyed by the canonical field names."
)
@click.option("--exposure", type=click.Choice(EXPOSURES), default=None, help="Only this exposure.")
@click.option("--locale", type=click.Choice(LOCALES), default=None, help="Only this locale.")
@pass_app
def list_(app: AppContext, fmt: str, exposure: str | None, locale: str | None) -> None:
    """List the volunteers in the ledger."""
    with app.workspace() as ws:
        query = VolunteerQuery(
            exposures=(exposure,) if exposure else (), locales=(locale,) if locale else ()
        )
        records = [v.as_record() for v in ws.volunteers(query)]
    if fmt == "json":
        click.echo(json.dumps(records, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        click.echo(_records_csv(records), nl=False)
    else:
        console.print(_volunteers_table(records))
        click.echo(f"{len(records)} volunteers")


def _records_csv(records: Sequence[dict[str, Any]]) -> str:
    columns = [*FIELDS, "display_name", "email_ascii"]
    return csv_text(columns, ([r[c] for c in columns] for r in records))


def _volunteers_table(records: Sequence[dict[str, Any]]) -> Table:
    table = Table()
    longest = max((len(str(r["email"])) for r in records), default=5)
    for column in TABLE_COLUMNS:
        if column == "email":
            # An address cut short ("oliver.hal…") is no address: it is never wrapped or
            # cut; the other columns wrap to make room for it.
            table.add_column(column, no_wrap=True, min_width=longest)
        elif column in ("volunteer_id", "locale"):
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    for r in records:
        # "a; b" wraps between items rather than inside a word.
        table.add_row(*(Text(visible(str(r[c])).replace(";", "; ")) for c in TABLE_COLUMNS))
    return table


@roster.command("show")
@click.argument("volunteer")
@format_option("table", "json")
@pass_app
def show(app: AppContext, volunteer: str, fmt: str) -> None:
    """Everything the ledger holds about one volunteer, every field.

    VOLUNTEER is a volunteer id or an address. Columns of the file that no mapping named
    are shown too, under the header the file gave them.
    """
    with app.workspace() as ws:
        person = ws.volunteer(volunteer)
    record = person.as_record()
    extra = dict(person.extra)
    if fmt == "json":
        click.echo(json.dumps({**record, "extra": extra}, ensure_ascii=False, indent=2))
        return
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in record.items():
        table.add_row(name, Text(visible(str(value)) or "-"))
    for header, value in extra.items():
        table.add_row(Text(f"{visible(header)} (kept from the file)"), Text(visible(value)))
    console.print(table)


@roster.command("rejects")
@format_option("table", "csv", help="csv: row,column,value,reason, as --rejects writes it.")
@pass_app
def rejects(app: AppContext, fmt: str) -> None:
    """Show the rejected rows of the latest import."""
    with app.workspace() as ws:
        latest = ws.latest_import()
        problems = ws.rejected_rows()
        if fmt == "csv":
            for line in rejects_csv_lines(problems):
                click.echo(line, nl=False)
            return
        if latest is None:
            click.echo("No roster has been imported yet.")
            return
        click.echo(
            f"Import {latest.import_id} of {latest.file_name} at"
            f" {shown_time(latest.imported_at, app.settings.time_zone)}: "
            f"{latest.rows_rejected} of {latest.rows_total} rows rejected"
        )
        shown = list(itertools.islice(problems, MAX_TABLE_ROWS))
        more = sum(1 for _ in problems)
    if shown:
        console.print(problems_table(shown))
    if more:
        click.echo(
            f"... and {more} more problems; see them all with: notifier roster rejects --format csv"
        )
