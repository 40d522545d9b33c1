"""`notifier status`: how far a campaign has got, at any time (also while a send runs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict

import click
from rich.table import Table

from notifier.approval import ApprovalStatus, approval_status
from notifier.campaign import Campaign, apply_overrides, load_campaign, require_known_campaign
from notifier.cli.app import AppContext, cli, console, format_option, pass_app
from notifier.errors import CampaignError
from notifier.message import UNREACHED_STATES, MessageState, state_words
from notifier.message import MessageState as S
from notifier.outputs import visible
from notifier.report_formats import shown_time
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
    with app.open_ledger() as led:
        require_known_campaign(campaign_id, led.campaign_ids())  # a typo exits 2
        campaign = _shipped_campaign(campaign_id, app)
        signed_off = approval_status(led, campaign) if campaign else None
        # Read the lock before the messages: a send that ends in between is then seen
        # as running with its messages settled, never as a crash.
        running = running_sender(led.path)
        recorded = led.recorded_sender() if running else None
        counts = led.state_counts(campaign_id)
        claimed = led.uncertain_messages(campaign_id)
        registered = led.campaign_is_registered(campaign_id)
    # While a sender holds the lock, what it has claimed is in flight, not uncertain:
    # only a run that died leaves messages whose outcome nobody knows.
    # (Only the running send's own campaign: another campaign's claims are a crash's.)
    live = running is not None and running.is_sending and running.campaign_id == campaign_id
    in_flight = [m for m in claimed if live and m.state == MessageState.SENDING]
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
    table = Table("state", "messages", "what it means", box=None, pad_edge=False)
    for state, n in counts.items():
        table.add_row(state, str(n), state_words(state))
    table.add_row("total", str(sum(counts.values())), "", style="bold")
    console.print(f"Campaign {campaign_id}")
    console.print(table)
    if running and running.is_sending:
        console.print(
            f"Sending now: {visible(running.describe())};"
            f" {len(in_flight)} message(s) of {campaign_id} in flight"
            " (not uncertain: that send is alive).",
            markup=False,
        )
    elif running:
        console.print(
            f"Running now: {visible(running.describe())} (no send can start until it ends).",
            markup=False,
        )
    for line in unreached_lines(campaign_id, counts):
        console.print(line, markup=False)
    if uncertain:
        console.print(
            f"{len(uncertain)} message(s) with an unknown outcome: settle them from the mail"
            f" server's log (notifier reconcile {campaign_id} --mta-log FILE) or re-send"
            f" them (notifier send {campaign_id} --yes --resend-uncertain):"
        )
        for m in uncertain:
            console.print(visible(f"  {m.email}  ({m.volunteer_id}, {m.state})"), markup=False)


def _shipped_campaign(campaign_id: str, app: AppContext) -> Campaign | None:
    """The campaign as it would be sent now, or None when only the ledger knows it (a
    campaign sent from a file elsewhere): then there is no content to compare."""
    try:
        return apply_overrides(load_campaign(campaign_id), app.settings)
    except CampaignError:
        return None


def _approval_json(status: ApprovalStatus | None) -> dict[str, object] | None:
    if status is None or status.approval is None:
        return None
    return {"by": status.approval.by, "at": status.approval.at, "current": status.is_current}


def _approval_line(status: ApprovalStatus | None, campaign_id: str) -> str:
    if status is None:
        return "Approval: the campaign file is not among the shipped campaigns."
    if status.approval is None:
        return f"Not approved yet (notifier approve {campaign_id} --by NAME)."
    who = f"{visible(status.approval.by)} at {shown_time(status.approval.at)}"
    if status.is_current:
        return f"Approved by {who}; the content has not changed since."
    return f"Approved by {who}, but the content has changed since: approve it again before sending."


def unreached_lines(campaign_id: str, counts: Mapping[str, int]) -> list[str]:
    """What `status` says about the people this campaign has not reached yet, and the
    command that reaches each group. Blocked is apart: the fix is the sender's."""
    n = {state: counts.get(state, 0) for state in UNREACHED_STATES}
    total = sum(n.values())
    if total == 0:
        return []
    lines = [f"{total} people not reached yet by {campaign_id}:"]
    steps = (
        ((S.PENDING, S.DEFERRED), f"notifier send {campaign_id} --yes"),
        (
            (S.BOUNCED_SOFT, S.FAILED_TEMPORARY),
            f"notifier resend {campaign_id} --status bounced_soft,failed_temporary --yes",
        ),
        (
            (S.BOUNCED_HARD, S.SUPPRESSED, S.FAILED_PERMANENT),
            "notifier export unreachable --out letters.csv (write to them)",
        ),
    )
    for states, command in steps:
        group = sum(n[s] for s in states)
        if group:
            what = ", ".join(f"{n[s]} {s}" for s in states if n[s])
            lines.append(f"  {group} ({what}): {command}")
    if n[S.BLOCKED]:
        lines.append(
            f"  {n[S.BLOCKED]} blocked: our mail was refused; the addresses are fine. This needs "
            "action by the sender (reputation, SPF, DKIM), then: "
            f"notifier resend {campaign_id} --status blocked --yes"
        )
    return lines
