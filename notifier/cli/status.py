"""`notifier status`: how far a campaign has got, at any time (also while a send runs)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.table import Table

from notifier.approval import ApprovalStatus, approval_status
from notifier.campaign import apply_overrides, load_campaign
from notifier.cli.app import AppContext, cli, console, format_option, pass_app
from notifier.message import MessageState
from notifier.outputs import visible
from notifier.sendlock import running_sender


@cli.command()
@click.argument("campaign_id", metavar="ID")
@format_option("table", "json")
@pass_app
def status(app: AppContext, campaign_id: str, fmt: str) -> None:
    """How far a campaign has got: messages by state, at any time.

    Works while a send is running in another process. JSON output is one object
    with `campaign`, `counts` (state -> number), `total`, `running` (the live
    sender: pid, host, since, command; null when none), `in_flight` and
    `uncertain` (the addresses whose outcome is unknown after a crash).
    """
    campaign = apply_overrides(load_campaign(campaign_id), app.settings)  # a typo exits 2
    with app.open_ledger() as led:
        signed_off = approval_status(led, campaign)
        # Read the lock before the messages: a send that ends in between is then seen
        # as running with its messages settled, never as a crash.
        running = running_sender(led.path)
        recorded = led.recorded_sender() if running else None
        counts = led.state_counts(campaign_id)
        claimed = led.uncertain_messages(campaign_id)
        registered = led.campaign_is_registered(campaign_id)
    # While a sender holds the lock, what it has claimed is in flight, not uncertain:
    # only a run that died leaves messages whose outcome nobody knows.
    in_flight = [m for m in claimed if running and m.state == MessageState.SENDING]
    uncertain = [m for m in claimed if m not in in_flight]
    sender = {**(recorded or {}), **asdict(running)} if running else None
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "campaign": campaign_id,
                    "registered": registered,
                    "total": sum(counts.values()),
                    "counts": counts,
                    "approval": _approval_json(signed_off),
                    "running": sender,
                    "in_flight": len(in_flight),
                    "uncertain": [m.email for m in uncertain],
                    "uncertain_messages": [
                        {
                            "volunteer_id": m.volunteer_id,
                            "email": m.email,
                            "message_id": m.message_id,
                            "state": m.state,
                            "attempts": m.attempts,
                        }
                        for m in uncertain
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    console.print(_approval_line(signed_off, campaign_id))
    if not registered:
        console.print(f"Campaign {campaign_id} has not been sent yet (no messages in the ledger).")
        return
    table = Table("state", "messages", box=None, pad_edge=False)
    for state, n in counts.items():
        table.add_row(state, str(n))
    table.add_row("total", str(sum(counts.values())), style="bold")
    console.print(f"Campaign {campaign_id}")
    console.print(table)
    if running:
        console.print(
            f"Sending now: {visible(running.describe())};"
            f" {len(in_flight)} message(s) in flight (not uncertain: that send is alive)."
        )
    if uncertain:
        console.print(
            f"{len(uncertain)} message(s) with an unknown outcome "
            f"(re-send with: notifier send {campaign_id} --yes --resend-uncertain):"
        )
        for m in uncertain:
            console.print(visible(f"  {m.email}  ({m.volunteer_id}, {m.state})"), markup=False)


def _approval_json(status: ApprovalStatus) -> dict[str, object] | None:
    if status.approval is None:
        return None
    return {"by": status.approval.by, "at": status.approval.at, "current": status.is_current}


def _approval_line(status: ApprovalStatus, campaign_id: str) -> str:
    if status.approval is None:
        return f"Not approved yet (notifier approve {campaign_id} --by NAME)."
    who = f"{visible(status.approval.by)} at {status.approval.at}"
    if status.is_current:
        return f"Approved by {who}; the content has not changed since."
    return f"Approved by {who}, but the content has changed since: approve it again before sending."
