"""`notifier preview`: exactly what a person will receive, built by the code that sends it."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from notifier.audience import count_audience, history_applies, membership_of, select_audience
from notifier.campaign import Campaign, apply_overrides, load_campaign
from notifier.cli.app import AppContext, cli, err_console, pass_app, write_private
from notifier.compose import ComposedMessage, Composer, DkimKey, load_dkim_key
from notifier.errors import NotifierError
from notifier.ledger import Ledger
from notifier.outputs import visible
from notifier.pipeline import MessageIds
from notifier.render import Renderer
from notifier.volunteer import Volunteer

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
    campaign = apply_overrides(load_campaign(campaign_id), app.settings)
    dkim = load_dkim_key(app.settings)
    with app.open_ledger() as led:
        if everyone:
            if out is None:
                raise click.UsageError("--all needs --out DIR, the directory for the .eml files")
            if output_format not in (None, "eml"):
                raise click.UsageError("--all writes .eml files; leave out --format")
            _preview_all(led, campaign, out, dkim)
        else:
            assert volunteer_key is not None
            _preview_one(led, campaign, volunteer_key, output_format or "text", out, dkim)


def _preview_one(
    led: Ledger,
    campaign: Campaign,
    key: str,
    output_format: str,
    out: Path | None,
    dkim: DkimKey | None,
) -> None:
    volunteer = led.get_volunteer(key)
    _warn_without_contact(campaign)
    if not membership_of(led, campaign, volunteer, history=history_applies(led, campaign)).included:
        click.echo(
            f"warning: {volunteer.volunteer_id} is not in the audience of "
            f"{campaign.campaign_id}; this is what they would receive if they were",
            err=True,
        )
    ids = _message_ids(led, campaign)
    composer = Composer(campaign, Renderer(campaign), dkim=dkim)
    composed = _build(composer, volunteer, datetime.now(UTC), ids)
    data = composed.data if output_format == "eml" else _readable(composed, output_format)
    if out is None:
        click.echo(data, nl=False)
        return
    write_private(out, data)
    click.echo(f"wrote {out}", err=True)


def _warn_without_contact(campaign: Campaign) -> None:
    if not campaign.contact:
        click.echo(
            "warning: no [contact] in notifier.toml, so this notice gives no contact point "
            "beyond its reply address; `notifier check` refuses it until one is configured",
            err=True,
        )


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


def _preview_all(led: Ledger, campaign: Campaign, directory: Path, dkim: DkimKey | None) -> None:
    history = history_applies(led, campaign)
    if campaign.follows and not history:
        click.echo(
            f"{campaign.follows} has not been sent yet, so it is not yet known who it "
            f"reached: previewing {campaign.campaign_id} for everyone it could go to",
            err=True,
        )
    _warn_without_contact(campaign)
    total = sum(count_audience(led, campaign, history).values())
    directory.mkdir(parents=True, exist_ok=True)
    composer = Composer(campaign, Renderer(campaign), dkim=dkim)  # one for every message
    ids = _message_ids(led, campaign)
    when = datetime.now(UTC)
    written = 0
    columns = (
        TextColumn("[bold]previews"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("preview", total=total)
        for volunteer in select_audience(led, campaign, history):
            composed = _build(composer, volunteer, when, ids)
            write_private(directory / f"{_file_name(volunteer.volunteer_id)}.eml", composed.data)
            written += 1
            progress.advance(task)
    click.echo(f"wrote {written} messages to {directory}")


def _message_ids(led: Ledger, campaign: Campaign) -> MessageIds | None:
    """The Message-IDs a send would use (those the ledger issued, keyed new ones, and a
    follow-up's In-Reply-To), so a preview is the bytes that would go out; None, with a
    warning, without the ledger's key: a preview never makes or needs one."""
    if led.key_file.exists():
        try:
            return MessageIds.of(led, campaign)
        except NotifierError as exc:  # a foreign key, a ledger that names none
            reason = exc.message
    else:
        reason = f"no key file at {led.key_file}"
    click.echo(
        f"warning: {visible(reason)}: the Message-ID (and the MIME boundary made from it) "
        "is a preview's, not the one a send would use; the text is the same",
        err=True,
    )
    return None


def _build(
    composer: Composer, volunteer: Volunteer, when: datetime, ids: MessageIds | None
) -> ComposedMessage:
    campaign = composer.campaign
    vid = volunteer.volunteer_id
    try:
        if ids is None:
            return composer.build(volunteer, date=when)
        return composer.build(
            volunteer, date=when, message_id=ids.message_id(vid), in_reply_to=ids.in_reply_to(vid)
        )
    except NotifierError as exc:
        # Name the person: the error itself knows the field, not whose message failed.
        exc.message = f"{volunteer.volunteer_id}: {exc.message}"
        exc.hint = exc.hint or f"run `notifier check {campaign.campaign_id}` to see every problem"
        raise


def _file_name(volunteer_id: str) -> str:
    """The volunteer id as a file name; ids that could escape the directory are %-quoted."""
    if _SAFE_FILE_NAME.fullmatch(volunteer_id):
        return volunteer_id
    return quote(volunteer_id, safe="").replace(".", "%2E")
