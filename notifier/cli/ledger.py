"""`notifier ledger ...`: the ledger's own health, its head, and carrying old ledgers forward."""

from __future__ import annotations

import click

from notifier.cli.app import AppContext, cli, pass_app
from notifier.errors import ExitCode
from notifier.outputs import counted
from notifier.service import UPGRADE_HINT


@cli.group()
def ledger() -> None:
    """Check the ledger, the record of who was told what and when."""


@ledger.command()
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="SEQ:HASH",
    help="An event hash written down earlier (notifier ledger head, a report's "
    "ledger_head): fail unless the ledger holds that event with that hash. Repeatable.",
)
@pass_app
def verify(app: AppContext, anchors: tuple[str, ...]) -> None:
    """Check that no event was edited, deleted, inserted or reordered, and that the
    volunteers, messages, suppressions and rejected-row tables are what the events say.

    Exit 0 with a one-line summary when all holds (and a warning line when an event is
    dated earlier than the one before it: the clock was set back); exit 1 naming the
    first bad event, anchor or table row otherwise; exit 2 when the ledger's key file
    is missing or is not this ledger's.
    """
    with app.workspace() as ws:
        result = ws.verify(anchors)
        path = ws.ledger().path
    if result.warning:
        click.echo(f"ledger {path}: warning: {result.warning}", err=True)
    if result.ok:
        anchored = (
            f", {counted(len(anchors), 'anchor')} {'holds' if len(anchors) == 1 else 'hold'}"
            if anchors
            else ""
        )
        click.echo(
            f"ledger {path}: {counted(result.events, 'event')}, chain intact, tables match"
            f"{anchored} (head {result.events}:{result.head})"
        )
        return
    if result.reason == UPGRADE_HINT:
        click.echo(f"ledger {path}: {result.reason}", err=True)
    else:
        click.echo(f"ledger {path}: TAMPERED: {result.reason}", err=True)
    raise SystemExit(ExitCode.PROBLEMS)


@ledger.command()
@pass_app
def head(app: AppContext) -> None:
    """Print SEQ:HASH of the last event: write it down outside the ledger (a ticket, an
    e-mail, a report to a regulator) and check it later with verify --anchor."""
    with app.workspace() as ws:
        click.echo(ws.head())


@ledger.command()
@pass_app
def upgrade(app: AppContext) -> None:
    """Re-key a ledger written before keyed hashes, recording the step as an event.

    The old chain must hold; its head is kept in the `ledger_upgraded` event, so an
    anchor written down before still ties to this ledger. The key file is the one the
    ledger's sends made (for VERP tokens), or a new one when there is none. A ledger
    that shows it was written keyed (it records a key fingerprint, or holds events only
    a keyed notifier writes) is refused: its hashes were recomputed without the key.
    """
    with app.workspace() as ws:
        done = ws.upgrade()
        path, key_file = ws.ledger().path, ws.ledger().key_file
    if done is None:
        click.echo(f"ledger {path}: already keyed; nothing to do")
        return
    made = f"made a new key file {key_file}" if done.key_created else f"key {key_file}"
    click.echo(
        f"ledger {path}: {done.events} events re-hashed ({made}), {done.adopted} table "
        f"rows adopted; old head {done.old_head}, new head {done.new_head}"
    )
