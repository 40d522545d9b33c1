"""`notifier approve ID --by NAME`: four-eyes sign-off of a campaign's exact content."""

from __future__ import annotations

import click

from notifier.approval import approve as record_approval
from notifier.campaign import apply_overrides, load_campaign
from notifier.cli.app import AppContext, cli, console, pass_app
from notifier.outputs import visible
from notifier.report_formats import shown_time


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option("--by", "by", required=True, help='Who approves: "Jane Doe, DPO".')
@pass_app
def approve(app: AppContext, campaign_id: str, by: str) -> None:
    """Record that NAME read this campaign's proof sheet and approves sending it.

    \b
    The approval covers the exact content: the campaign file, its templates and
    catalogs, and the settings that appear in messages (From, Reply-To, the contact
    point). Change any of them and `send --yes` stops until it is approved again.
      notifier check 2020-03-breach --proof proof.html    # what the approver reads
      notifier approve 2020-03-breach --by "Jane Doe, DPO"
    """
    campaign = apply_overrides(load_campaign(campaign_id), app.settings)
    with app.open_ledger() as led:
        approval = record_approval(led, campaign, by)
    console.print(
        f"Approved: {campaign.campaign_id} by {visible(approval.by)} at"
        f" {shown_time(approval.at, app.settings.time_zone)}"
        f" (content sha256 {approval.sha256[:16]}…). It can now be sent with:"
        f" notifier send {campaign.campaign_id} --yes"
    )
