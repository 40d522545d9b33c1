"""`notifier status`: how far a campaign has got, at any time (also while a send runs)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from notifier.campaign import require_known_campaign
from notifier.cli.app import AppContext, cli, console, format_option, pass_app


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
    table = Table("state", "messages", box=None, pad_edge=False)
    for state, n in counts.items():
        table.add_row(state, str(n))
    table.add_row("total", str(sum(counts.values())), style="bold")
    console.print(f"Campaign {campaign_id}")
    console.print(table)
    if uncertain:
        console.print(
            f"{len(uncertain)} message(s) with an unknown outcome "
            f"(re-send with: notifier send {campaign_id} --yes --resend-uncertain):"
        )
        for m in uncertain:
            console.print(f"  {m.email}  ({m.volunteer_id}, {m.state})")
