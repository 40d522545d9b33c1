"""Test sends: a campaign's exact messages, sent to the operator's own address first.

`notifier send ID --test-to ADDRESS [--as VOLUNTEER ...]` renders each named volunteer's
message as the real send would (same templates, headers and signature), and hands it to
the SMTP server for ADDRESS only. Three things differ, so that nobody mistakes a test for
the real thing or answers it to a volunteer: the subject starts `[TEST HMR-0001] `, naming
the volunteer it stands for; the body starts with a line saying so (in the message's
language); and `To:` is ADDRESS, so a reviewer's reply-all goes nowhere else. Without
`--as`, one message goes for each distinct version of the notice (locale x exposure x
data held, as on the proof sheet), each as the first volunteer of its audience with it.

A test send is its own event in the ledger (`test_sent`, or `test_refused` when the server
said no); it names the campaign, the address and whose message it was, and never touches
a message of the campaign: no volunteer's state and none of the campaign's counts change.
It needs no approval: it reaches only the person running it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr

import aiosmtplib

from notifier.audience import earlier_reached_of, history_applies, select_audience
from notifier.campaign import Campaign
from notifier.compose import Composer, DkimKey
from notifier.config import Settings, credentials_from_env
from notifier.errors import CohortError, DeliveryError
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger
from notifier.locales import locale_spec
from notifier.message import OutgoingMessage
from notifier.render import RenderedMessage, Renderer
from notifier.roster import check_email
from notifier.smtp.outcome import describe_error
from notifier.smtp.session import SessionOptions, SmtpSession
from notifier.smtp.target import SmtpTarget, connection_hint
from notifier.volunteer import Volunteer

TEST_PREFIX = "[TEST "  # every test subject starts so: `[TEST HMR-0001] Important: ...`
TEST_SENT = EventKind.TEST_SENT
TEST_REFUSED = EventKind.TEST_REFUSED
# Domains reserved for private use or documentation (RFC 2606, 6761, 6762, 7686): never
# on the public internet, but an office's own server may well deliver them.
RESERVED_NAMES = ("test", "local", "localhost", "invalid", "onion", "arpa", "example")


@dataclass(frozen=True)
class TestSendResult:
    """One test message: whose message it was, where it went, what the server said."""

    __test__ = False  # not a pytest test class, whatever its name

    volunteer_id: str
    locale: str
    exposure: str
    data_held: tuple[str, ...]
    subject: str
    to: str
    accepted: bool
    reply: str


@dataclass(frozen=True)
class TestSends:
    """A test send: each message's result, the address, the server, and any note."""

    __test__ = False

    results: list[TestSendResult]
    to: str
    target: str  # the SMTP server, as shown (never with credentials)
    note: str | None = None  # about the address (a reserved name)


@dataclass(frozen=True)
class TestAddress:
    """The --test-to address, normalised, and a note when its domain is a reserved name."""

    __test__ = False

    address: str
    ascii_form: str  # the A-label form, for the envelope of a server without SMTPUTF8
    note: str | None = None


def test_subject(volunteer_id: str, subject: str) -> str:
    """The subject of a test of `volunteer_id`'s message."""
    return f"{TEST_PREFIX}{volunteer_id}] {subject}"


def test_banner(volunteer: Volunteer) -> str:
    """The first line of a test message's body: whose message it is, in its language."""
    return locale_spec(volunteer.locale).test_banner.format(
        volunteer_id=volunteer.volunteer_id,
        name=volunteer.display_name or volunteer.volunteer_id,
        address=volunteer.email,
    )


_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BANNER_STYLE = "border: 2px solid #b00020; padding: 0.5em; font-weight: bold;"


def _with_banner(rendered: RenderedMessage, banner: str) -> RenderedMessage:
    """`rendered` with `banner` as the first line of both parts."""
    paragraph = f'<p style="{_BANNER_STYLE}">{html.escape(banner)}</p>'
    body = _BODY_TAG.search(rendered.html)
    at = body.end() if body is not None else 0
    return dataclasses.replace(
        rendered,
        text=f"{banner}\n\n{rendered.text}",
        html=f"{rendered.html[:at]}\n{paragraph}{rendered.html[at:]}",
    )


class _TestRenderer:
    """The campaign's renderer for test messages: each rendered for the volunteer it
    stands for (the composer is handed a stand-in carrying the test address), with the
    test subject and first line."""

    def __init__(self, campaign: Campaign, volunteers: Sequence[Volunteer]) -> None:
        self.inner = Renderer(campaign)
        self.real = {v.volunteer_id: v for v in volunteers}
        self.subjects: dict[str, str] = {}  # volunteer_id -> the subject as sent

    def render(self, volunteer: Volunteer, *, reached: bool | None = None) -> RenderedMessage:
        real = self.real.get(volunteer.volunteer_id, volunteer)
        rendered = _with_banner(self.inner.render(real, reached=reached), test_banner(real))
        subject = test_subject(real.volunteer_id, rendered.subject)
        self.subjects[real.volunteer_id] = subject
        return dataclasses.replace(rendered, subject=subject)


def _addressed_to(volunteer: Volunteer, to: TestAddress) -> Volunteer:
    """A stand-in for `volunteer` that the composer writes `To: ADDRESS` for (no name)."""
    return dataclasses.replace(
        volunteer, email=to.address, email_ascii=to.ascii_form, family_name="", given_name=""
    )


def checked_test_address(address: str) -> TestAddress:
    """The --test-to address, normalised; one clean error when it is not an address.

    Any syntactically valid address will do, a reserved name (`.test`, `.local`) too: an
    office on an internal domain tests to itself. Such a name gets a note, not a refusal.
    """
    checked = check_email(address)
    if not isinstance(checked, str):
        return TestAddress(*checked)
    local, at, domain = address.rpartition("@")
    reserved = _reserved_name(domain)
    if at and reserved is not None:
        # Checked as if its domain were public: everything else must hold as for anyone.
        stand_in = check_email(f"{local}@{domain}.{_STAND_IN}")
        if not isinstance(stand_in, str):
            normalised, ascii_form = (a.removesuffix(f".{_STAND_IN}") for a in stand_in)
            return TestAddress(
                normalised,
                ascii_form,
                note=f"{normalised.rpartition('@')[2]} is a reserved name (.{reserved}): only "
                "a mail server of your own delivers it",
            )
    raise CohortError(f"{address!r} is not an address: {checked}", field="--test-to")


_STAND_IN = "reserved-name.org"


def _reserved_name(domain: str) -> str | None:
    labels = domain.rstrip(".").lower().split(".")
    return labels[-1] if labels and labels[-1] in RESERVED_NAMES else None


def volunteers_for_test(
    ledger: Ledger, campaign: Campaign, as_volunteers: Sequence[str]
) -> list[Volunteer]:
    """Whose messages a test sends: the named volunteers (ids or addresses), or else the
    first volunteer of each distinct shape in the campaign's audience."""
    if as_volunteers:
        return [ledger.get_volunteer(key) for key in as_volunteers]
    shapes: dict[tuple[str, str, tuple[str, ...]], Volunteer] = {}
    for volunteer in select_audience(ledger, campaign, history_applies(ledger, campaign)):
        key = (volunteer.locale, volunteer.exposure, volunteer.data_held)
        shapes.setdefault(key, volunteer)
    if not shapes:
        raise CohortError(
            f"{campaign.campaign_id} has nobody in its audience to take a message from",
            hint="import the roster first (notifier roster import FILE), or name one with --as",
        )
    return list(shapes.values())


def send_tests(
    ledger: Ledger,
    campaign: Campaign,
    volunteers: Sequence[Volunteer],
    to: TestAddress,
    target: SmtpTarget,
    settings: Settings,
    *,
    dkim: DkimKey | None = None,
    options: SessionOptions | None = None,
) -> list[TestSendResult]:
    """Send each volunteer's message, marked as a test, to `to` only; record each."""
    renderer = _TestRenderer(campaign, volunteers)
    composer = Composer(campaign, renderer, dkim=dkim)
    now = datetime.now(UTC)
    sender = parseaddr(campaign.sender)[1]
    reached = earlier_reached_of(ledger, campaign, [v.volunteer_id for v in volunteers])
    # The A-label form where it is all the address needs; SMTPUTF8 only for a local part
    # that is not ASCII.
    recipient = to.ascii_form if to.ascii_form.isascii() else to.address
    messages = []
    for volunteer in volunteers:
        # A follow-up as this person would get it: worded for whether its earlier notice
        # reached them.
        composed = composer.build(
            _addressed_to(volunteer, to),
            date=now,
            reached=reached(volunteer.volunteer_id),
        )
        messages.append(
            OutgoingMessage(
                message_id=composed.message_id,
                campaign_id=campaign.campaign_id,
                volunteer_id=volunteer.volunteer_id,
                # Bounces of a test go to the sender's own mailbox, never to a message.
                envelope_from=sender,
                envelope_id="",  # no DSN envelope id: ENVID is left out, never sent empty
                recipient=recipient,
                data=composed.data,
                smtputf8=not recipient.isascii(),
            )
        )
    replies = asyncio.run(_deliver(target, options or _options(settings), messages))
    results = []
    drafts = []
    for volunteer, message, (accepted, reply) in zip(volunteers, messages, replies, strict=True):
        subject = renderer.subjects[volunteer.volunteer_id]
        results.append(
            TestSendResult(
                volunteer.volunteer_id,
                volunteer.locale,
                volunteer.exposure,
                volunteer.data_held,
                subject,
                to.address,
                accepted,
                reply,
            )
        )
        drafts.append(
            EventDraft(
                TEST_SENT if accepted else TEST_REFUSED,
                campaign_id=campaign.campaign_id,
                # Not the volunteer's event: their message and history are untouched.
                data={
                    "to": to.address,
                    "as": volunteer.volunteer_id,
                    "subject": subject,
                    "reply": reply,
                    "sha256": hashlib.sha256(message.data).hexdigest(),
                },
            )
        )
    ledger.record(drafts)
    return results


def _options(settings: Settings) -> SessionOptions:
    return SessionOptions(ca_file=settings.smtp_ca_file)


async def _deliver(
    target: SmtpTarget, options: SessionOptions, messages: Sequence[OutgoingMessage]
) -> list[tuple[bool, str]]:
    """Each message over one connection: (accepted, the server's reply)."""
    session = SmtpSession(target, options, credentials_from_env())
    try:
        await session.open()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(
            f"cannot use {target}: {describe_error(exc)}",
            field="--smtp",
            hint=connection_hint(exc),
        ) from exc
    replies = []
    try:
        for message in messages:
            try:
                await session.envelope(message)
                reply = await session.content(message)
                replies.append((True, f"{reply.code} {reply.message}"))
            except aiosmtplib.SMTPResponseException as exc:
                replies.append((False, f"{exc.code} {exc.message}"))
                session.close()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                replies.append((False, describe_error(exc)))
                session.close()
    finally:
        await session.quit()
    return replies
