"""`notifier sink`: a local SMTP server that keeps what it receives, to try a send on."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from notifier.cli.app import AppContext, cli, pass_app
from notifier.outputs import counted
from notifier.report_formats import shown_time
from notifier.sink import ReceivedMessage, Sink, SinkHandler


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also store each message in this Maildir.",
)
@click.option("--defer", multiple=True, metavar="ADDR", help="Answer 451 for this address.")
@click.option("--reject", multiple=True, metavar="ADDR", help="Answer 550 for this address.")
@click.option("--no-dsn", is_flag=True, help="Do not advertise DSN.")
@pass_app
def sink(
    app: AppContext,
    host: str,
    port: int,
    maildir: Path | None,
    defer: tuple[str, ...],
    reject: tuple[str, ...],
    no_dsn: bool,
) -> None:
    """Run a local SMTP server that keeps what it receives, until Ctrl-C.

    \b
    For trying a campaign end to end without a real mail server:
      notifier sink --maildir sent-mail &
      notifier send 2020-03-breach --yes --smtp smtp://127.0.0.1:8025
    """

    zone = app.settings.time_zone

    def show(message: ReceivedMessage) -> None:
        at = shown_time(message.received_at, zone, precision="clock")
        click.echo(
            f"{at} {message.queue_id} from <{message.mail_from}> "
            f"to {', '.join(message.rcpt_tos)} ({len(message.data)} bytes)"
        )

    handler = SinkHandler(
        maildir=maildir, defer=defer, reject=reject, dsn=not no_dsn, keep=False, listener=show
    )
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        with Sink(host, port, handler=handler) as server:
            where = f" (Maildir {maildir})" if maildir else ""
            click.echo(f"SMTP sink listening on {server.url}{where}; Ctrl-C to stop.")
            try:
                while not done.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"Stopped; {counted(handler.count, 'message')} received.")
