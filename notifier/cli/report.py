"""`notifier history`, `notifier report`, `notifier export unreachable`: proof of notification."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from notifier.cli.app import (
    AppContext,
    cli,
    console,
    format_option,
    no_bom_option,
    pass_app,
    require_writable_file,
    write_csv,
    write_private,
)
from notifier.errors import ExitCode
from notifier.message import state_words
from notifier.outputs import visible
from notifier.report_formats import (
    NOT_RECORDED,
    history_as_dicts,
    owed_lines,
    report_as_csv,
    report_as_html,
    report_as_json,
    shown_time,
    timeline_kinds,
    unreachable_as_csv,
    unreachable_as_json,
)
from notifier.service import CampaignReport, Event


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
        click.echo(_json(history_as_dicts(events)))
        return
    console.print(_history_table(volunteer, events, app.settings.time_zone))


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
    with app.workspace() as ws:
        result = ws.report(campaign_id)
    if fmt == "table":
        if out is None:
            _print_summary(console, result, app.settings.time_zone)
        else:
            buffer = io.StringIO()
            _print_summary(
                Console(file=buffer, width=120, highlight=False), result, app.settings.time_zone
            )
            write_private(out, buffer.getvalue())
    else:
        if fmt == "html":
            text = report_as_html(result, time_zone=app.settings.time_zone)
        else:
            text = {"csv": report_as_csv, "json": report_as_json}[fmt](result)
        if out is None:
            click.echo(text, nl=False)
        elif fmt == "csv":
            write_csv(out, text, bom=not no_bom)
        else:
            write_private(out, text)
    if out is not None:
        click.echo(f"wrote {out}", err=True)
    if not result.verification.ok:
        click.echo(
            f"Warning: the ledger fails verification: {result.verification.reason}", err=True
        )
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
    with app.workspace() as ws:
        people = ws.unreachable()
    text = unreachable_as_csv(people) if fmt == "csv" else unreachable_as_json(people)
    if out is None:
        click.echo(text, nl=False)
    elif fmt == "csv":
        write_csv(out, text, bom=not no_bom)
    else:
        write_private(out, text)
        click.echo(f"wrote {len(people)} people to {out}", err=True)


# --- terminal views ---------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _history_table(volunteer: str, events: list[Event], zone: str) -> Table:
    table = Table(title=Text(f"History of {visible(volunteer)}"), title_justify="left")
    for column in ("seq", "at", "event", "campaign"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for event in events:
        details = ", ".join(
            f"{k}={v}" for k, v in sorted(event.data.items()) if v not in ("", None)
        )
        # Text(), not str: ledger data is shown as it is, never read as rich markup.
        table.add_row(
            str(event.seq),
            shown_time(event.at, zone),
            event.kind,
            Text(visible(event.campaign_id or "")),
            Text(visible(details)),
        )
    return table


def _print_summary(out: Console, r: CampaignReport, zone: str = "UTC") -> None:
    """The report for a terminal: times to the second in the organisation's zone,
    states in words beside their names."""
    out.print(Text(f"Campaign {r.campaign_id}  {r.title}", style="bold"))
    if r.running is not None:
        out.print(
            f"NOTE: {visible(r.running.describe(zone))} was running as this report was made:"
            " its figures are a moment of a run still going on.",
            markup=False,
        )
    out.print(f"generated at {shown_time(r.generated_at, zone)}; {r.total} messages")
    if r.owed is not None:
        for line in owed_lines(r.owed):
            out.print(line, markup=False)
    if r.verification.ok:
        out.print(
            f"ledger verification: passed, {r.verification.events} events, "
            f"head {r.verification.head}",
            markup=False,
        )
    else:
        out.print(f"ledger verification: FAILED: {r.verification.reason}", markup=False)
    if r.verification.warning:
        out.print(f"ledger warning: {r.verification.warning}", markup=False)
    out.print(f"ledger head:      {r.ledger_head}  (anchor: ledger verify --anchor)", markup=False)
    out.print(f"ledger sha256:    {r.ledger.sha256}  ({r.ledger_file})", markup=False)
    if r.ledger.note:
        out.print(f"  note: {r.ledger.note}", markup=False)
    out.print(f"templates sha256: {r.templates.recorded or NOT_RECORDED}", markup=False)
    if r.state_mismatches:
        out.print(
            f"{len(r.state_mismatches)} message(s) have a state no event backs: "
            + ", ".join(r.state_mismatches),
            markup=False,
        )
    out.print(
        f"first send attempt {shown_time(r.timeline.first_send_at, zone) or 'none'}, "
        f"last {shown_time(r.timeline.last_send_at, zone) or 'none'}",
        markup=False,
    )
    # States down, groups across: a few narrow columns fit any terminal.
    for title, groups in (
        ("by language", r.counts_by_locale),
        ("by exposure", r.counts_by_exposure),
    ):
        table = Table(title=f"Recipients {title}", title_justify="left")
        table.add_column("state")
        table.add_column("all", justify="right")
        for key in groups:
            table.add_column(Text(key), justify="right")
        table.add_column("what it means")
        for state in r.states:
            table.add_row(
                Text(state),
                str(r.counts[state]),
                *(str(c[state]) for c in groups.values()),
                Text(state_words(state)),
            )
        table.add_row(
            "total",
            str(r.total),
            *(str(sum(c.values())) for c in groups.values()),
            "",
            style="bold",
        )
        out.print(table)
    timeline = Table(title="Events per hour", title_justify="left")
    timeline.add_column("hour")
    timeline.add_column("events", justify="right")
    timeline.add_column("of which")
    kinds = timeline_kinds(r.timeline)
    for bucket in r.timeline.hours:
        detail = ", ".join(f"{k} {bucket.counts[k]}" for k in kinds if k in bucket.counts)
        hour = shown_time(bucket.hour, zone, precision="minutes")
        timeline.add_row(hour, str(sum(bucket.counts.values())), Text(detail))
    out.print(timeline)
    out.print(
        f"Each recipient's outcome: notifier report {r.campaign_id} --format csv (or html, json)",
        markup=False,
    )
