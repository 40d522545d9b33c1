"""`notifier history`, `notifier report`, `notifier export unreachable`: proof of notification."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import click

from notifier.cli.app import (
    AppContext,
    cli,
    echo_data_pieces,
    echo_json,
    format_option,
    no_bom_option,
    pass_app,
    require_writable_file,
    write_csv,
    write_private,
)
from notifier.errors import ExitCode
from notifier.layout import Column, table
from notifier.message import state_words
from notifier.outputs import counted, in_blocks
from notifier.report_formats import (
    NOT_RECORDED,
    history_as_dicts,
    owed_lines,
    recipients_csv_lines,
    recipients_json_pieces,
    report_csv_lines,
    report_html_pieces,
    report_json_pieces,
    shown_time,
    timeline_kinds,
    unreachable_csv_lines,
    unreachable_json_pieces,
)
from notifier.service import CampaignReport, Event, UnreachablePerson
from notifier.terminal import terminal_width


@cli.command()
@click.argument("volunteer")
@format_option("table", "json", help="table for reading, json (one array of events) for keeping.")
@pass_app
def history(app: AppContext, volunteer: str, fmt: str) -> None:
    """Every event for one person, in time order.

    VOLUNTEER is a volunteer id or an email address. Each event carries its hash, so the
    history can be checked against `notifier ledger verify`.
    """
    with app.workspace() as ws:
        events = ws.history(volunteer)
    if fmt == "json":
        echo_json(history_as_dicts(events))
        return
    zone = app.settings.time_zone
    click.echo("\n".join(_history_table(volunteer, events, terminal_width(), zone)))


@cli.command()
@click.argument("campaign_id", metavar="ID")
@format_option(
    "table",
    "csv",
    "json",
    "html",
    help="table: a summary on the terminal; csv: one row per recipient; json: everything; "
    "html: one self-contained file to attach to a regulator's file.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the report to this file instead of the terminal.",
)
@no_bom_option
@pass_app
def report(app: AppContext, campaign_id: str, fmt: str, out: Path | None, no_bom: bool) -> None:
    """Who was told what, when, and what happened to each message of campaign ID.

    Counts by state, per language and exposure, a timeline, and each recipient's final
    state with times and server replies, together with the ledger's verification result
    and the sha256 of the ledger and of the templates used; who the campaign is meant
    for now and who of them is still owed the notice, and why. A report made while a
    send runs says so at its top. Exits 1 (after writing the report) when the ledger
    fails verification.

    \b
      notifier report 2020-03-breach
      notifier report 2020-03-breach --format html --out 2020-03-breach-report.html
    """
    if out is not None:
        require_writable_file(out)
    # The report is written out while it is read from the ledger (one snapshot): a
    # million recipients are never held in memory.
    writer = {"json": recipients_json_pieces, "csv": recipients_csv_lines}.get(fmt)
    with app.workspace() as ws, ws.open_report(campaign_id, read_ahead=writer) as result:
        if fmt == "table":
            if out is None:
                _print_summary(click.echo, terminal_width(), result, app.settings.time_zone)
            else:
                lines: list[str] = []
                _print_summary(lines.append, FILE_WIDTH, result, app.settings.time_zone)
                write_private(out, "".join(line + "\n" for line in lines))
        else:
            pieces: Iterable[str]
            if fmt == "html":
                pieces = report_html_pieces(result, time_zone=app.settings.time_zone)
            elif fmt == "csv":
                pieces = report_csv_lines(result)
            else:
                pieces = report_json_pieces(result)
            _emit(pieces, out, csv=fmt == "csv", bom=not no_bom)
        verification = result.verification
    if out is not None:
        click.echo(f"wrote {out}", err=True)
    if not verification.ok:
        click.echo(f"Warning: the ledger fails verification: {verification.reason}", err=True)
        raise SystemExit(ExitCode.PROBLEMS)


@cli.group()
def export() -> None:
    """Export lists for work outside notifier (letters by post)."""


@export.command("unreachable")
@format_option("csv", "json")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to this file instead of the terminal.",
)
@no_bom_option
@pass_app
def export_unreachable(app: AppContext, fmt: str, out: Path | None, no_bom: bool) -> None:
    """Everyone no notice has reached, with the reason and their postal address.

    Lists every row rejected at an import (row number, id, name and postal address as
    the file has them) until that person is imported; hard bounces; suppressed
    addresses; permanent failures; temporary failures that ran out of retries; and
    notices still soft-bounced, blocked or deferred (the reason names the state). A
    person is left out once a later message reached them. Write to these people.
    """
    if out is not None:
        require_writable_file(out)
    written = 0

    def counting(people: Iterable[UnreachablePerson]) -> Iterator[UnreachablePerson]:
        nonlocal written
        for person in people:
            written += 1
            yield person

    # Written out as it is read (one read of the ledger), a chunk of people at a time.
    with app.workspace() as ws, ws.open_unreachable() as people:
        listed = counting(people)
        pieces = unreachable_csv_lines(listed) if fmt == "csv" else unreachable_json_pieces(listed)
        _emit(pieces, out, csv=fmt == "csv", bom=not no_bom)
    if out is not None and fmt == "json":
        click.echo(f"wrote {counted(written, 'person', 'people')} to {out}", err=True)


def _emit(pieces: Iterable[str], out: Path | None, *, csv: bool, bom: bool) -> None:
    """A streamed output: on standard output, or written to `out` (a CSV file with its
    byte-order mark unless `bom` is False)."""
    if out is None:
        echo_data_pieces(pieces)
    elif csv:
        write_csv(out, in_blocks(pieces), bom=bom)
    else:
        write_private(out, in_blocks(pieces))


# --- terminal views ---------------------------------------------------------------------

# The width of a summary written to a file with --out.
FILE_WIDTH = 120
HISTORY_COLUMNS = (
    Column("seq", "right", breaks=False),
    Column("at", breaks=False),
    Column("event", breaks=False),
    "campaign",
    "details",
)


def _history_table(volunteer: str, events: list[Event], width: int, zone: str) -> list[str]:
    rows = []
    for event in events:
        details = ", ".join(
            f"{k}={v}" for k, v in sorted(event.data.items()) if v not in ("", None)
        )
        rows.append((event.seq, shown_time(event.at, zone), event.kind, event.campaign_id, details))
    return table(HISTORY_COLUMNS, rows, width, title=f"History of {volunteer}", max_lines=8)


def _print_summary(
    out: Callable[[str], object], width: int, r: CampaignReport, zone: str = "UTC"
) -> None:
    """The report for a terminal (or a file, `width` wide): times to the second in the
    organisation's zone, states in words beside their names."""
    out(f"Campaign {r.campaign_id}  {r.title}")
    if r.running is not None:
        out(
            f"NOTE: {r.running.describe(zone)} was running as this report was made:"
            " its figures are a moment of a run still going on."
        )
    out(f"generated at {shown_time(r.generated_at, zone)}; {counted(r.total, 'message')}")
    if r.owed is not None:
        for line in owed_lines(r.owed):
            out(line)
    if r.verification.ok:
        out(
            f"ledger verification: passed, {r.verification.events} events, "
            f"head {r.verification.head}"
        )
    else:
        out(f"ledger verification: FAILED: {r.verification.reason}")
    if r.verification.warning:
        out(f"ledger warning: {r.verification.warning}")
    out(f"ledger head:      {r.ledger_head}  (anchor: ledger verify --anchor)")
    out(f"ledger sha256:    {r.ledger.sha256}  ({r.ledger_file})")
    if r.ledger.note:
        out(f"  note: {r.ledger.note}")
    out(f"templates sha256: {r.templates.recorded or NOT_RECORDED}")
    if r.state_mismatches:
        out(
            f"{len(r.state_mismatches)} message(s) have a state no event backs: "
            + ", ".join(r.state_mismatches)
        )
    out(
        f"first send attempt {shown_time(r.timeline.first_send_at, zone) or 'none'}, "
        f"last {shown_time(r.timeline.last_send_at, zone) or 'none'}"
    )
    # States down, groups across: a few narrow columns fit most terminals, and where
    # they do not, each state is a block of its own.
    for title, groups in (
        ("by language", r.counts_by_locale),
        ("by exposure", r.counts_by_exposure),
    ):
        columns: list[Column | str] = [
            Column("state", breaks=False),
            Column("all", "right", breaks=False),
            *(Column(key, "right", breaks=False) for key in groups),
            "what it means",
        ]
        rows: list[list[object]] = [
            [state, r.counts[state], *(c[state] for c in groups.values()), state_words(state)]
            for state in r.states
        ]
        rows.append(["total", r.total, *(sum(c.values()) for c in groups.values()), ""])
        for line in table(columns, rows, width, title=f"Recipients {title}"):
            out(line)
    kinds = timeline_kinds(r.timeline)
    hours = [
        (
            shown_time(bucket.hour, zone, precision="minutes"),
            sum(bucket.counts.values()),
            ", ".join(f"{k} {bucket.counts[k]}" for k in kinds if k in bucket.counts),
        )
        for bucket in r.timeline.hours
    ]
    timeline_columns = (
        Column("hour", breaks=False),
        Column("events", "right", breaks=False),
        "of which",
    )
    for line in table(timeline_columns, hours, width, title="Events per hour"):
        out(line)
    _print_apart(out, r)
    out(f"Each recipient's outcome: notifier report {r.campaign_id} --format csv (or html, json)")


def _print_apart(out: Callable[[str], object], r: CampaignReport) -> None:
    """What the counts above leave out: rows refused at import, test messages."""
    rows = r.rejected_rows
    if rows:
        unfixed = sum(1 for row in rows if not row.fixed)
        out(
            f"Roster rows refused at import: {len(rows)}, {unfixed} of them not on the roster"
            " since (never e-mailed: notifier export unreachable)"
        )
    if r.test_sends:
        n = len(r.test_sends)
        out(
            f"{counted(n, 'test message')} to the sender, not counted above (--format html"
            f" lists {'it' if n == 1 else 'them'})"
        )
