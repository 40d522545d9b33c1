"""`notifier reconcile`: settle the messages a crash left uncertain, from the MTA's evidence."""

from __future__ import annotations

from pathlib import Path

import click

from notifier.cli.app import AppContext, cli, echo_table, pass_app
from notifier.layout import Column
from notifier.message import MessageState
from notifier.outputs import counted
from notifier.service import Settled

# Each decision is listed; beyond this many, the counts say the rest.
MAX_SHOWN = 200


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--mta-log",
    "mta_logs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Postfix log (maillog, mail.log) of the server the send handed its mail to."
    " May be given more than once (rotated logs).",
)
@click.option(
    "--maildir",
    "maildirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A Maildir of what a server received (its new/ and cur/), matched by Message-ID.",
)
@pass_app
def reconcile(
    app: AppContext, campaign_id: str, mta_logs: tuple[Path, ...], maildirs: tuple[Path, ...]
) -> None:
    """Settle the messages of campaign ID left uncertain by a crash, from evidence.

    \b
    A message found in the evidence was received: it becomes sent, with the evidence
    (file and line, queue id, what the MTA did with it) in its event. One not found
    goes back to pending, so a plain `notifier send ID --yes` sends it, and nobody
    gets the notice twice. Refused while a send of this ledger is running.
    Example:
      notifier reconcile 2020-03-breach --mta-log /var/log/mail.log
    """
    with app.workspace() as ws:
        settled = ws.reconcile(campaign_id, mta_logs=mta_logs, maildirs=maildirs)
    searched = ", ".join(str(p) for p in (*mta_logs, *maildirs))
    _print_settled(campaign_id, settled, searched)


def _print_settled(campaign_id: str, settled: list[Settled], searched: str) -> None:
    if not settled:
        click.echo(f"No uncertain messages in {campaign_id}: nothing to reconcile.")
        return
    rows = []
    for s in settled[:MAX_SHOWN]:
        where = s.data.get("evidence", "not found")
        fate = s.data.get("fate")
        evidence = f"{where} ({fate})" if fate else str(where)
        rows.append((s.message.volunteer_id, s.message.email, s.state, evidence))
    columns = (Column("volunteer", breaks=False), "email", Column("now", breaks=False), "evidence")
    echo_table(columns, rows, max_lines=6)
    if len(settled) > MAX_SHOWN:
        click.echo(f"... and {len(settled) - MAX_SHOWN} more (the counts below cover them)")
    sent = sum(1 for s in settled if s.state is MessageState.SENT)
    pending = len(settled) - sent
    click.echo(
        f"Reconciled {counted(len(settled), 'uncertain message')} of {campaign_id}"
        f" against {searched}: "
        f"{sent} received (now sent), {pending} not received (back to pending)."
    )
    if pending:
        click.echo(f"To send those {pending}: notifier send {campaign_id} --yes")
