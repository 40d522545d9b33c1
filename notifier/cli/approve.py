"""`notifier approve ID --by NAME`: four-eyes sign-off of a campaign's exact content."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from notifier.cli.app import AppContext, cli, console, err_console, pass_app
from notifier.outputs import counted, visible
from notifier.report_formats import shown_time


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option("--by", "by", required=True, help='Who approves: "Jane Doe, DPO".')
@click.option(
    "--confirm-moved-addresses",
    is_flag=True,
    help="For a follow-up: the addresses `check` names as ones the earlier notice went to "
    "for someone else really are these people's now (not two addresses swapped by "
    "mistake). The approval records which.",
)
@pass_app
def approve(app: AppContext, campaign_id: str, by: str, confirm_moved_addresses: bool) -> None:
    """Record that NAME read this campaign's proof sheet and approves sending it.

    \b
    The approval covers the exact content: the campaign file, its templates and
    catalogs, and the settings that appear in messages (From, Reply-To, the contact
    point). Change any of them and `send --yes` stops until it is approved again.
    The whole campaign is checked first (as `notifier check` does): while the check
    finds a problem nothing is approved (exit 1, naming each problem).
      notifier check 2020-03-breach --proof proof.html    # what the approver reads
      notifier approve 2020-03-breach --by "Jane Doe, DPO"
    """
    with app.workspace() as ws:
        total = sum(ws.audience_counts(campaign_id).values())
        columns = (TextColumn("checking {task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(
            *columns,
            console=err_console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as bar:
            task = bar.add_task(visible(campaign_id), total=total)
            approved = ws.approve(
                campaign_id,
                by,
                progress=lambda: bar.advance(task),
                confirm_moved_addresses=confirm_moved_addresses,
            )
    approval = approved.approval
    for volunteer_id, address, others in approved.check.confirmed_moves:
        console.print(
            f"Confirmed: {visible(volunteer_id)}'s address {visible(address)} (the earlier"
            f" notice went there for {visible(', '.join(others))}).",
            markup=False,
        )
    console.print(
        f"Checked: {counted(approved.check.volunteers, 'message')} render with no problems.",
        markup=False,
    )
    console.print(
        f"Approved: {campaign_id} by {visible(approval.by)} at"
        f" {shown_time(approval.at, app.settings.time_zone)}"
        f" (content sha256 {approval.sha256[:16]}…). It can now be sent with:"
        f" notifier send {campaign_id} --yes",
        markup=False,
    )
