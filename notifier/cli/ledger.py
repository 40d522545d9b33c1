"""`notifier ledger ...`: the ledger's own health."""

from __future__ import annotations

import click

from notifier.cli.app import AppContext, cli, pass_app
from notifier.errors import ExitCode


@cli.group()
def ledger() -> None:
    """Check the ledger, the record of who was told what and when."""


@ledger.command()
@pass_app
def verify(app: AppContext) -> None:
    """Check that no event was edited, deleted, inserted or reordered.

    Exit 0 with a one-line summary when the chain is intact; exit 1 naming the first
    bad event otherwise.
    """
    with app.open_ledger() as led:
        result = led.verify()
    if result.ok:
        click.echo(f"ledger {led.path}: {result.events} events, chain intact (head {result.head})")
        return
    click.echo(f"ledger {led.path}: TAMPERED: {result.reason}", err=True)
    raise SystemExit(ExitCode.PROBLEMS)
