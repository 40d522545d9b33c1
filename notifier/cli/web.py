"""`notifier console`: the web console, for people who do not use a terminal."""

from __future__ import annotations

import click

from notifier.cli.app import AppContext, cli, console, pass_app
from notifier.web.server import DEFAULT_HOST, DEFAULT_PORT, bind, is_loopback, serve


@cli.command("console")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The port to listen on (0: any free one).",
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="The address to listen on. Any other than this machine's loopback address lets "
    "other machines reach the console: only with good reason.",
)
@pass_app
def console_command(app: AppContext, port: int, host: str) -> None:
    """Serve the web console for this ledger on this machine, until Ctrl-C.

    \b
    It prints an address with a one-time token: open it in your browser (it signs that
    browser in; the address works only once). Every page calls the same operations,
    under the same rules, as these commands.
    """
    if not is_loopback(host):
        click.echo(
            f"Warning: listening on {host}: other machines that reach this address can reach "
            f"the console (its one-time address still guards it); the default, {DEFAULT_HOST} "
            "(with an SSH tunnel from elsewhere), keeps it to this machine.",
            err=True,
        )
    sock = bind(host, port)

    def announce(address: str) -> None:
        console.print(
            f"The console for {app.settings.ledger} is at this address; open it in your "
            "browser (it works once). Ctrl-C stops the console.",
            markup=False,
        )
        console.print(address, markup=False, soft_wrap=True)

    serve(app.settings, sock, announce)
    console.print("The console has stopped.", markup=False)
