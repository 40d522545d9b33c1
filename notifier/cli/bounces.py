"""`notifier bounces ...`: read delivery reports, record them, list the ones not matched."""

from __future__ import annotations

from pathlib import Path

import click

from notifier.cli.app import AppContext, cli, echo_json, echo_table, format_option, pass_app
from notifier.layout import Column
from notifier.report_formats import shown_time
from notifier.service import BounceRecord, IngestSummary, parse_reports


@cli.group()
def bounces() -> None:
    """Read bounces and delivery reports, and tie them to the notices sent."""


@bounces.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@format_option("table", "json", help="json: one array, one object per (file, recipient).")
def parse(files: tuple[Path, ...], fmt: str) -> None:
    """Show what each report says, per recipient, without touching the ledger.

    FILES may be .eml files, mbox files, Maildir folders or folders of .eml files.
    """
    records = parse_reports(files)
    if fmt == "json":
        echo_json([r.to_json() for r in records])
        return
    _print_records(records)


PARSE_COLUMNS = (
    "file",
    "recipient",
    Column("action", breaks=False),
    Column("status", breaks=False),
    Column("kind", breaks=False),
    "diagnostic",
)


def _print_records(records: list[BounceRecord]) -> None:
    if not records:
        click.echo("(no delivery reports found)")
        return
    # Report text comes from anyone who can send mail: the table shows every control
    # character as an escape, and wraps a long diagnostic rather than cutting it.
    fields = ("file", "recipient", "action", "status", "kind", "diagnostic")
    rows = ([getattr(r, f) or "-" for f in fields] for r in records)
    echo_table(PARSE_COLUMNS, rows, max_lines=8)


@bounces.command(name="ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--imap",
    "imap_url",
    metavar="URL",
    default=None,
    help="Also read an IMAP folder, e.g. imaps://bounces@mail.example.org/INBOX "
    "(password from $NOTIFIER_IMAP_PASSWORD; a private CA in [imap] ca_file or "
    "$NOTIFIER_IMAP_CA_FILE).",
)
@pass_app
def ingest_command(app: AppContext, paths: tuple[Path, ...], imap_url: str | None) -> None:
    """Record bounces and delivery reports in the ledger, each once.

    PATHS may be Maildir folders, mbox files, .eml files or folders of .eml files.
    Hard bounces suppress the address for later campaigns; refusals for policy or
    reputation (blocked) never do. Auto-replies are not bounces. A report over the size,
    depth or parts limits ([bounces] in notifier.toml) is skipped and recorded as
    unparseable. Reports that cannot be tied to a notice are kept (their headers and
    first 64 KB) and listed by `notifier bounces unmatched`.
    """
    if not paths and not imap_url:
        raise click.UsageError("give at least one PATH, or --imap URL")
    with app.workspace() as ws:
        summary = ws.ingest_bounces(paths, imap_url=imap_url)
    click.echo(_summary_line(summary))
    if summary.unmatched or summary.forged or summary.unparseable:
        click.echo("see the reports not matched with: notifier bounces unmatched")


def _summary_line(s: IngestSummary) -> str:
    line = (
        f"{s.reports} reports read ({s.duplicates} already recorded): {s.matched} matched, "
        f"{s.unmatched} unmatched, {s.forged} refused as forged; "
        f"{s.hard} hard, {s.soft} soft, {s.delayed} delayed (still being tried), "
        f"{s.expired} expired (the mail system gave up; not suppressed), "
        f"{s.delivered} delivered, {s.unclear} unclear, "
        f"{s.blocked} blocked; {s.suppressed} addresses suppressed"
    )
    if s.auto_replies or s.not_bounces or s.unparseable:
        line += (
            f"\n{s.auto_replies} auto-replies and {s.not_bounces} other messages were not "
            f"bounces; {s.unparseable} skipped as unparseable (over a limit)"
        )
    if s.blocked:
        line += (
            f"\n{s.blocked} refused by the receiving server for policy or reputation "
            "(blocked): the addresses are fine and were not suppressed; fix the sending "
            "(SPF, DKIM, reputation), then: notifier resend CAMPAIGN --status blocked"
        )
    return line


@bounces.command()
@format_option("table", "json")
@pass_app
def unmatched(app: AppContext, fmt: str) -> None:
    """List the reports that could not be tied to a notice (forged ones included)."""
    with app.workspace() as ws:
        reports = ws.unmatched_reports()
    if fmt == "json":
        echo_json(
            [
                {
                    "sha256": r.sha256,
                    "source": r.source,
                    "received_at": r.received_at,
                    "reason": r.reason,
                    "recipients": list(r.recipients),
                }
                for r in reports
            ]
        )
        return
    if not reports:
        click.echo("no unmatched reports")
        return
    for r in reports:
        recipients = ", ".join(r.recipients) or "-"
        at = shown_time(r.received_at, app.settings.time_zone)
        click.echo(f"{at}  {r.source}  {recipients}  ({r.reason})")
