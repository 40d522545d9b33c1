"""`notifier status`: how far a campaign has got, at any time (also while a send runs)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from notifier.cli.app import (
    AppContext,
    cli,
    console,
    echo_json,
    echo_table,
    format_option,
    pass_app,
)
from notifier.layout import Column
from notifier.message import state_words
from notifier.outputs import visible
from notifier.report_formats import owed_lines, shown_time
from notifier.service import ApprovalStatus, CampaignStatus, SendRun

# Per-message lists stop at this many without --verbose; the counts cover the rest.
MAX_LISTED = 20
STATE_COLUMNS = (
    Column("state", breaks=False),
    Column("messages", "right", breaks=False),
    "what it means",
)
UNCERTAIN_COLUMNS = ("email", Column("volunteer", breaks=False), Column("state", breaks=False))


@cli.command()
@click.argument("campaign_id", metavar="ID")
@format_option("table", "json")
@click.option(
    "--verbose",
    is_flag=True,
    help=f"List every message with an unknown outcome (by default the first {MAX_LISTED}).",
)
@pass_app
def status(app: AppContext, campaign_id: str, fmt: str, verbose: bool) -> None:
    """How far a campaign has got: who it is for, who was sent it, who is still owed it.

    Works while a send is running in another process. `audience` is who the campaign
    is meant for now (its cohort, from the roster and, for a follow-up, the outcomes
    of the notice it follows); `sent`, those of them whose notice a mail server
    accepted (and no report since said it failed); `owed`, the rest, each with the
    reason (not sent yet, deferred, bounced, ...). A partly sent campaign always shows
    what it still owes.

    JSON output is one object with `campaign`, `audience`, `sent`, `owed`,
    `owed_reasons` (reason -> number), `counts` (the campaign's messages by state),
    `total` (messages), `approval`, `running` (the live holder of the ledger: pid,
    host, since, command; null when none), `in_flight`, `uncertain` (the addresses
    whose outcome is unknown after a crash), `last_run` and `next_steps`.
    """
    with app.workspace() as ws:
        found = ws.status(campaign_id)
    if fmt == "json":
        echo_json(status_json(found))
        return
    _print(found, app.settings.time_zone, verbose)


def status_json(s: CampaignStatus) -> dict[str, Any]:
    return {
        "campaign": s.campaign_id,
        "registered": s.registered,
        "audience": s.owed.audience,
        "sent": s.owed.sent,
        "owed": s.owed.count,
        "owed_reasons": s.owed.reasons,
        "total": s.total,
        "counts": dict(s.counts),
        "approval": _approval_json(s.approval),
        "running": asdict(s.running) if s.running else None,
        "in_flight": len(s.in_flight),
        "uncertain": [m.email for m in s.uncertain],
        "uncertain_messages": [
            {
                "volunteer_id": m.volunteer_id,
                "email": m.email,
                "message_id": m.message_id,
                "state": m.state,
                "attempts": m.attempts,
            }
            for m in s.uncertain
        ],
        "last_run": _run_json(s.last_run),
        "next_steps": list(s.next_steps),
    }


def _run_json(run: SendRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run": run.seq,
        "started_at": run.started_at,
        "command": run.command,
        "selection": run.data.get("selection"),
        "ended": dict(run.ended) if run.ended is not None else None,
        "finished": run.finished,
    }


def _approval_json(status: ApprovalStatus | None) -> dict[str, object] | None:
    if status is None or status.approval is None:
        return None
    return {"by": status.approval.by, "at": status.approval.at, "current": status.is_current}


def _print(s: CampaignStatus, zone: str, verbose: bool = False) -> None:
    cid = s.campaign_id
    console.print(_approval_line(s.approval, cid, zone), markup=False)
    console.print(f"Campaign {cid}", markup=False)
    for line in owed_lines(s.owed):
        console.print(line, markup=False)
    if s.follows_unsent:
        console.print(
            f"{s.follows_unsent}, which it follows, has not been sent yet: its audience is"
            " everyone it could go to, until that notice has gone out.",
            markup=False,
        )
    if s.registered:
        rows = [(state, n, state_words(state)) for state, n in s.counts.items()]
        echo_table(STATE_COLUMNS, [*rows, ("total", s.total, "")])
    else:
        console.print(f"Campaign {cid} has not been sent yet (no messages in the ledger).")
    running = s.running
    if running is not None and running.is_sending:
        mine = f"; {len(s.in_flight)} message(s) of {cid} in flight" if s.sending_now else ""
        console.print(
            f"Sending now: {visible(running.describe(zone))}{mine}"
            " (not uncertain: that send is alive).",
            markup=False,
        )
    elif running is not None:
        console.print(
            f"Running now: {visible(running.describe(zone))} (no send can start until it ends).",
            markup=False,
        )
    _print_last_run(s, zone)
    if s.uncertain:
        console.print(f"{len(s.uncertain)} message(s) with an unknown outcome:", markup=False)
        shown = s.uncertain if verbose else s.uncertain[:MAX_LISTED]
        echo_table(UNCERTAIN_COLUMNS, ((m.email, m.volunteer_id, m.state) for m in shown))
        if len(shown) < len(s.uncertain):
            click.echo(f"... and {len(s.uncertain) - len(shown)} more: all of them with --verbose")
    if s.next_steps:
        console.print("Next:", markup=False)
        for step in s.next_steps:
            console.print(f"  {step}", markup=False)


def _print_last_run(s: CampaignStatus, zone: str) -> None:
    run = s.last_run
    if run is None or s.sending_now:
        return
    if run.ended is None:
        how = "never ended (the process was killed, or the machine stopped)"
    elif run.ended.get("error"):
        how = f"ended with an error: {run.ended['error']}"
    elif run.ended.get("stopped"):
        how = "was stopped before it was done"
    else:
        how = "finished"
    console.print(
        f"Last send run: {run.command}, started {shown_time(run.started_at, zone)}; it {how}.",
        markup=False,
    )


def _approval_line(status: ApprovalStatus | None, campaign_id: str, zone: str) -> str:
    if status is None:
        return "Approval: the campaign file is not among the shipped campaigns."
    if status.approval is None:
        return f"Not approved yet (notifier approve {campaign_id} --by NAME)."
    who = f"{visible(status.approval.by)} at {shown_time(status.approval.at, zone)}"
    if status.is_current:
        return f"Approved by {who}; the content has not changed since."
    return f"Approved by {who}, but the content has changed since: approve it again before sending."
