"""`notifier roster ...`: import a roster, list the volunteers, show the rejected rows."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from notifier.cli.app import (
    AppContext,
    cli,
    echo_data,
    echo_fields,
    echo_json,
    echo_table,
    err_console,
    format_option,
    no_bom_option,
    pass_app,
    require_writable_file,
    write_csv,
)
from notifier.errors import ExitCode
from notifier.layout import Column
from notifier.outputs import counted, csv_lines, csv_text, visible
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
# The list's columns: (header, the record's field); an id never breaks.
TABLE_COLUMNS: tuple[tuple[Column, str], ...] = (
    (Column("id", breaks=False), "volunteer_id"),
    (Column("name"), "display_name"),
    (Column("email"), "email"),
    (Column("locale"), "locale"),
    (Column("exposure"), "exposure"),
    (Column("data held"), "data_held"),
)
# data_held in the list, short enough for a row of three lines at 100 columns; the
# legend under the list names each, and `roster show` and --format csv give them whole.
DATA_HELD_SHORT: dict[str, str] = {
    "id_documents": "ID",
    "photo": "photo",
    "health_questionnaire": "health",
    "consent_form": "consent",
    "gp_information": "GP",
    "test_results": "tests",
    "bank_details": "bank",
}


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
        with err_console.status(f"Importing {visible(file.name)} ..."):
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
        + (f" ({counted(summary.problem_count, 'problem')})" if summary.problem_count else "")
    )
    if summary.problem_count:
        print_problems(summary.problems, limit=MAX_TABLE_ROWS)
        if summary.problem_count > MAX_TABLE_ROWS:
            click.echo(
                f"... and {summary.problem_count - MAX_TABLE_ROWS} more problems; "
                "see them all with: notifier roster rejects --format csv"
            )
    if result.warning_count and not summary.refused:
        print_problems(result.warnings, limit=MAX_TABLE_ROWS, title=WARNINGS_TITLE)
        if result.warning_count > MAX_TABLE_ROWS:
            click.echo(
                f"... and {result.warning_count - MAX_TABLE_ROWS} more warnings; "
                "see them all with --rejects FILE"
            )
        click.echo(
            f"Warning: {counted(result.warning_count, 'warning')} on rows imported all the"
            " same (data held that contradicts the exposure, a name or address that could"
            " mislead); `notifier check` fails until the roster is corrected."
        )


def _print_outcome(summary: ImportSummary, strict: bool) -> None:
    if summary.refused:
        click.echo(
            f"--strict: nothing imported, because {counted(summary.rejected, 'row')} "
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
            f"Warning: {counted(rule.count, 'published volunteer')} whose family name does not"
            f" begin with {listed(rule.initials, 'en', 'or')}, the initials the campaigns say"
            f" the published records had: {shown}{more}. Their notice would say so: check"
            " their exposure, or give a name in kanji as their records spell it in a"
            " family_name_latin column. `notifier check` names them until then."
        )


WARNINGS_TITLE = "Imported with a warning"


PROBLEM_COLUMNS = (Column("row", "right", breaks=False), "column", "value", "reason")


def print_problems(
    problems: Iterable[RowProblem], *, limit: int | None = None, title: str = "Rejected rows"
) -> None:
    # The value wraps, never cut: it is what to fix.
    rows = ((p.row, p.column, p.value, p.reason) for p in itertools.islice(problems, limit))
    echo_table(PROBLEM_COLUMNS, rows, title=title)


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
        echo_json(records)
    elif fmt == "csv":
        echo_data(_records_csv(records))
    else:
        _print_volunteers(records)


def _records_csv(records: Sequence[dict[str, Any]]) -> str:
    columns = [*FIELDS, "display_name", "email_ascii"]
    return csv_text(columns, ([r[c] for c in columns] for r in records))


def _print_volunteers(records: Sequence[dict[str, Any]]) -> None:
    """One row of at most three lines per person at 100 columns (an address breaks only
    after an @, . or -, never cut); a block per person where that cannot be."""
    rows = (
        [_shown_data_held(r[f]) if f == "data_held" else r[f] for _, f in TABLE_COLUMNS]
        for r in records
    )
    echo_table([c for c, _ in TABLE_COLUMNS], rows, max_lines=3)
    click.echo(counted(len(records), "volunteer"))
    held = {item for r in records for item in str(r["data_held"]).split(";") if item}
    legend = [f"{short} = {i}" for i, short in DATA_HELD_SHORT.items() if i in held and short != i]
    if legend:
        echo_fields([("data held", ", ".join(legend))])


def _shown_data_held(value: str) -> str:
    return ", ".join(DATA_HELD_SHORT.get(item, item) for item in value.split(";") if item)


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
        echo_json({**record, "extra": extra})
        return
    # "a; b": a long data_held wraps between its items.
    fields = [(name, str(value).replace(";", "; ") or "-") for name, value in record.items()]
    fields += [(f"{header} (kept from the file)", value) for header, value in extra.items()]
    echo_fields(fields)


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
                echo_data(line)
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
        print_problems(shown)
    if more:
        click.echo(
            f"... and {counted(more, 'more problem')}; see them all with:"
            " notifier roster rejects --format csv"
        )
