"""`notifier status`: how far a campaign has got, at any time (also while a send runs)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import click
from rich.table import Table

from notifier.campaign import require_known_campaign
from notifier.cli.app import AppContext, cli, console, format_option, pass_app
from notifier.message import UNREACHED_STATES, state_words
from notifier.message import MessageState as S


@cli.command()
@click.argument("campaign_id", metavar="ID")
@format_option("table", "json")
@pass_app
def status(app: AppContext, campaign_id: str, fmt: str) -> None:
    """How far a campaign has got: messages by state, at any time.

    Works while a send is running in another process. JSON output is one object
    with `campaign`, `counts` (state -> number), `total` and `uncertain` (the
    addresses whose outcome is unknown after a crash).
    """
    with app.open_ledger() as led:
        require_known_campaign(campaign_id, led.campaign_ids())
        counts = led.state_counts(campaign_id)
        uncertain = led.uncertain_messages(campaign_id)
        registered = led.campaign_is_registered(campaign_id)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "campaign": campaign_id,
                    "registered": registered,
                    "total": sum(counts.values()),
                    "counts": counts,
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
    if not registered:
        console.print(f"Campaign {campaign_id} has not been sent yet (no messages in the ledger).")
        return
    table = Table("state", "messages", "what it means", box=None, pad_edge=False)
    for state, n in counts.items():
        table.add_row(state, str(n), state_words(state))
    table.add_row("total", str(sum(counts.values())), "", style="bold")
    console.print(f"Campaign {campaign_id}")
    console.print(table)
    for line in unreached_lines(campaign_id, counts):
        console.print(line, markup=False)
    if uncertain:
        console.print(
            f"{len(uncertain)} message(s) with an unknown outcome "
            f"(re-send with: notifier send {campaign_id} --yes --resend-uncertain):"
        )
        for m in uncertain:
            console.print(f"  {m.email}  ({m.volunteer_id}, {m.state})")


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
