"""`notifier preview`: exactly what a person will receive, built by the code that sends it."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from notifier.cli.app import (
    AppContext,
    cli,
    echo_data,
    err_console,
    pass_app,
    require_writable_file,
    write_private,
)
from notifier.files import prepare_folder
from notifier.outputs import visible
from notifier.service import ComposedMessage, Workspace

FORMATS = ("text", "html", "eml")
# The headers a reader sees above the text, in the order mail clients show them.
SHOWN_HEADERS = ("From", "To", "Reply-To", "Subject", "Date")
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*")


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--volunteer",
    "volunteer_key",
    metavar="VOLUNTEER_ID_OR_EMAIL",
    help="The person whose message to show.",
)
@click.option(
    "--all",
    "everyone",
    is_flag=True,
    help="Write one <volunteer_id>.eml per recipient into the directory given by --out.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default=None,
    help="text: the plain-text part under the headers a reader sees (the default); "
    "html: the HTML part; eml: the whole message as it goes to the server.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write to this file (with --all: this directory) instead of the screen.",
)
@pass_app
def preview(
    app: AppContext,
    campaign_id: str,
    volunteer_key: str | None,
    everyone: bool,
    output_format: str | None,
    out: Path | None,
) -> None:
    """Show exactly what a campaign sends, without sending anything.

    \b
    One person, as they will read it:
      notifier preview 2020-03-breach --volunteer someone@example.org
      notifier preview 2020-03-breach --volunteer HMR-0042 --format eml --out msg.eml
    Everyone in the campaign's audience, one .eml file each:
      notifier preview 2020-03-breach --all --out previews/

    The message is built by the same code as `notifier send`, so these are the bytes
    the mail server would receive (only the Date differs: it is the time of the preview).
    Someone outside the campaign's audience still gets a preview, with a warning.
    """
    if everyone == (volunteer_key is not None):
        raise click.UsageError("give either --volunteer VOLUNTEER_ID_OR_EMAIL or --all")
    # Outputs are checked (the folder made) before any message is composed.
    if everyone and out is not None:
        prepare_folder(out)
    elif out is not None:
        require_writable_file(out)
    with app.workspace() as ws:
        if everyone:
            if out is None:
                raise click.UsageError("--all needs --out DIR, the directory for the .eml files")
            if output_format not in (None, "eml"):
                raise click.UsageError("--all writes .eml files; leave out --format")
            _preview_all(ws, campaign_id, out)
        else:
            assert volunteer_key is not None
            _preview_one(ws, campaign_id, volunteer_key, output_format or "text", out)


def _preview_one(
    ws: Workspace, campaign_id: str, key: str, output_format: str, out: Path | None
) -> None:
    preview = ws.preview(campaign_id, key)
    for warning in preview.warnings:
        click.echo(f"warning: {visible(warning)}", err=True)
    composed = preview.message
    data = composed.data if output_format == "eml" else _readable(composed, output_format)
    if out is None:
        if output_format == "text":
            click.echo(data, nl=False)  # for reading: wrapped to the terminal
        else:
            echo_data(data)
        return
    write_private(out, data)
    click.echo(f"wrote {out}", err=True)


def _readable(composed: ComposedMessage, output_format: str) -> bytes:
    """The decoded text (under the headers a reader sees) or HTML part, as UTF-8."""
    # Bodies are 7-bit clean, so decoding first only matters for SMTPUTF8 addresses.
    message = email.message_from_string(composed.data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain",) if output_format == "text" else ("html",))
    assert part is not None, "compose always writes both parts"
    body = str(part.get_content()).replace("\r\n", "\n")
    if output_format == "html":
        return body.encode("utf-8")
    head = "".join(f"{name}: {message[name]}\n" for name in SHOWN_HEADERS if name in message)
    return f"{head}\n{body}".encode()


def _preview_all(ws: Workspace, campaign_id: str, directory: Path) -> None:
    run = ws.preview_all(campaign_id)
    for warning in run.warnings:
        click.echo(
            visible(warning)
            if "has not been sent yet" in warning
            else f"warning: {visible(warning)}",
            err=True,
        )
    written = 0
    columns = (
        TextColumn("[bold]previews"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns,
        console=err_console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        task = progress.add_task("preview", total=run.total)
        for volunteer, composed in run.messages:
            write_private(directory / f"{_file_name(volunteer.volunteer_id)}.eml", composed.data)
            written += 1
            progress.advance(task)
    click.echo(f"wrote {written} messages to {directory}")


def _file_name(volunteer_id: str) -> str:
    """The volunteer id as a file name; ids that could escape the directory are %-quoted."""
    if _SAFE_FILE_NAME.fullmatch(volunteer_id):
        return volunteer_id
    return quote(volunteer_id, safe="").replace(".", "%2E")
