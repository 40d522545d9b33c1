"""`notifier campaign list|show` and `notifier check`: what a campaign says, who it goes
to, and whether it renders correctly for every one of them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from notifier.cli.app import (
    AppContext,
    cli,
    console,
    echo_fields,
    echo_table,
    err_console,
    pass_app,
    require_writable_file,
    write_private,
)
from notifier.errors import ExitCode
from notifier.layout import Column
from notifier.outputs import counted, visible
from notifier.render import long_date
from notifier.service import Campaign, Workspace
from notifier.volunteer import EXPOSURES, LOCALES


@cli.group()
def campaign() -> None:
    """The notices that can be sent: what each says, and who it goes to."""


@campaign.command("list")
@pass_app
def list_command(app: AppContext) -> None:
    """List the campaigns shipped in notifier/campaigns, oldest notice first."""
    rows = (
        (item.campaign_id, item.notice_date.isoformat(), item.title, item.follows or "")
        for item in app.workspace().campaigns()
    )
    columns = (Column("id", breaks=False), Column("date", breaks=False), "title", "follows")
    echo_table(columns, rows)


@campaign.command("show")
@click.argument("campaign_id", metavar="ID")
@pass_app
def show_command(app: AppContext, campaign_id: str) -> None:
    """What campaign ID says and who it goes to (counts by locale and exposure).

    ID is a campaign id from `notifier campaign list`, or the path of a campaign file.
    From and Reply-To are shown as they will be sent, after notifier.toml's [sender].
    """
    with app.workspace() as ws:
        item = ws.campaign(campaign_id)
        _print_definition(item, app)
        if not ws.has_ledger():
            console.print(
                f"\nNo ledger at {app.settings.ledger}: import a roster to see who it goes to."
            )
            return
        _print_audience(ws, item)


def _print_definition(item: Campaign, app: AppContext) -> None:
    overridden = " (from notifier.toml)"
    rows: list[tuple[str, str]] = [
        ("id", item.campaign_id),
        ("title", item.title),
        ("date", f"{item.notice_date.isoformat()} ({long_date(item.notice_date, 'en')})"),
        ("file", str(item.path)),
        ("templates", f"{item.templates_dir}/<locale>/{item.template}.txt, .html"),
        ("from", item.sender + (overridden if app.settings.sender_from else "")),
    ]
    for locale in item.locales:
        note = overridden if locale in app.settings.reply_to else ""
        rows.append((f"reply-to ({locale})", item.reply_to.get(locale, "") + note))
    for locale in item.locales:
        rows.append((f"subject ({locale})", item.subject.get(locale, "")))
    audience = item.audience
    rows.append(("exposures", ", ".join(audience.exposures or EXPOSURES)))
    rows.append(("locales", ", ".join(item.locales)))
    if item.follows:
        states = ", ".join(audience.follows_states)
        rows.append(("follows", f"{item.follows} (people whose message there is: {states})"))
    rows.append(("links allowed", "yes" if item.allow_links else "no"))
    echo_fields(rows)


def _print_audience(ws: Workspace, item: Campaign) -> None:
    counts = ws.audience_counts(item.campaign_id)
    if ws.follows_unsent(item.campaign_id):
        console.print(
            f"\n{item.follows} has not been sent yet, so it is not yet known who it reached: "
            f"counting everyone {item.campaign_id} could go to (this is fine until then)."
        )
    console.print(f"\nWho it goes to ({counted(sum(counts.values()), 'volunteer')}):")
    print_audience(counts)


def print_audience(counts: Counter[tuple[str, str]]) -> None:
    """Counts by locale (rows) and exposure (columns), with totals."""
    columns = [
        Column("locale", breaks=False),
        *(Column(e, "right", breaks=False) for e in EXPOSURES),
        Column("total", "right", breaks=False),
    ]
    rows: list[list[object]] = []
    locales = [loc for loc in LOCALES if any(counts[(loc, e)] for e in EXPOSURES)]
    for locale in locales:
        row = [counts[(locale, e)] for e in EXPOSURES]
        rows.append([locale, *row, sum(row)])
    totals = [sum(counts[(loc, e)] for loc in LOCALES) for e in EXPOSURES]
    rows.append(["total", *totals, sum(totals)])
    echo_table(columns, rows)


@cli.command("check")
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--proof",
    "proof_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.html",
    help="Also write the proof sheet: every distinct message, English and Japanese side "
    "by side, with how many people get each (one self-contained page, for sign-off).",
)
@pass_app
def check_command(app: AppContext, campaign_id: str, proof_path: Path | None) -> None:
    """Render campaign ID for its whole audience, without sending, and report problems.

    \b
    Problems: render errors (missing variable, with template and line), untranslated
    or fuzzy catalog entries, en and ja templates out of step, a required element of
    a breach notice missing or empty (the data list, the contact point, the line on
    what we never ask for), no [contact] in notifier.toml, a volunteer whose data_held
    contradicts their exposure, a follow-up leaving out people the notice it follows
    promised to write to again, and any link, URL or attachment.
    Exit 0 with a summary line if all is well; exit 1 listing each problem once, with
    the number of volunteers it affects and a few of their ids.

    For a follow-up whose earlier campaign has not been sent yet, everyone matching its
    exposure and locale filters is checked, so a correction can be checked in advance.

    \b
    With --proof, the proof sheet is written even when there are problems (it lists
    them at the top): notifier check 2020-03-breach --proof proof.html
    """
    if proof_path is not None:
        require_writable_file(proof_path)  # before the check, not after it
    with app.workspace() as ws:
        item = ws.campaign(campaign_id)
        total = sum(ws.audience_counts(campaign_id).values())
        with Progress(
            TextColumn("checking {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as bar:
            task = bar.add_task(visible(item.campaign_id), total=total)
            report = ws.check(campaign_id, progress=lambda: bar.advance(task))
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        if proof_path is not None:
            write_private(proof_path, ws.proof(campaign_id, report))
            versions = counted(len(report.shapes), "version")
            click.echo(f"wrote the proof sheet {proof_path} ({versions} of the notice)", err=True)
    by_locale = ", ".join(f"{loc} {n}" for loc, n in report.by_locale.items())
    rendered = f"{counted(report.volunteers, 'message')} rendered ({by_locale or 'none'})"
    if report.ok:
        click.echo(f"{item.campaign_id}: {rendered}; no problems")
        return
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    count = len(report.problems)
    click.echo(f"{item.campaign_id}: {rendered}; {counted(count, 'problem')}", err=True)
    raise SystemExit(ExitCode.PROBLEMS)
