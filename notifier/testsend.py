"""Test sends: a campaign's exact messages, sent to the operator's own address first.

`notifier send ID --test-to ADDRESS [--as VOLUNTEER ...]` renders each named volunteer's
message exactly as the real send would (same templates, headers and signature), with
`[TEST] ` before the subject, and hands it to the SMTP server for ADDRESS only. Without
`--as`, one message goes for each distinct shape of the campaign (locale x exposure x data
held, as on the proof sheet), each as the first volunteer of its audience with that shape.

A test send is its own event in the ledger (`test_sent`, or `test_refused` when the server
said no); it names the campaign, the address and whose message it was, and never touches
a message of the campaign: no volunteer's state and none of the campaign's counts change.
It needs no approval: it reaches only the person running it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
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
from notifier.message import OutgoingMessage
from notifier.render import RenderedMessage, Renderer
from notifier.roster import check_email
from notifier.smtp.outcome import describe_error
from notifier.smtp.session import SessionOptions, SmtpSession
from notifier.smtp.target import SmtpTarget, connection_hint
from notifier.volunteer import Volunteer

TEST_PREFIX = "[TEST] "
TEST_SENT = EventKind.TEST_SENT
TEST_REFUSED = EventKind.TEST_REFUSED


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


class _TestRenderer:
    """The campaign's renderer, with `[TEST] ` before every subject."""

    def __init__(self, campaign: Campaign) -> None:
        self.inner = Renderer(campaign)
        self.subjects: dict[str, str] = {}  # volunteer_id -> the subject as sent

    def render(self, volunteer: Volunteer, *, reached: bool | None = None) -> RenderedMessage:
        rendered = self.inner.render(volunteer, reached=reached)
        subject = self.subjects[volunteer.volunteer_id] = TEST_PREFIX + rendered.subject
        return dataclasses.replace(rendered, subject=subject)


def checked_test_address(address: str) -> str:
    """The --test-to address, normalised; one clean error when it is not an address."""
    checked = check_email(address)
    if isinstance(checked, str):
        raise CohortError(f"{address!r} is not an address: {checked}", field="--test-to")
    return checked[0]


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
    to: str,
    target: SmtpTarget,
    settings: Settings,
    *,
    dkim: DkimKey | None = None,
    options: SessionOptions | None = None,
) -> list[TestSendResult]:
    """Send each volunteer's message, marked as a test, to `to` only; record each."""
    renderer = _TestRenderer(campaign)
    composer = Composer(campaign, renderer, dkim=dkim)
    now = datetime.now(UTC)
    sender = parseaddr(campaign.sender)[1]
    reached = earlier_reached_of(ledger, campaign, [v.volunteer_id for v in volunteers])
    messages = []
    for volunteer in volunteers:
        # A follow-up as this person would get it: worded for whether its earlier notice
        # reached them.
        composed = composer.build(volunteer, date=now, reached=reached(volunteer.volunteer_id))
        messages.append(
            OutgoingMessage(
                message_id=composed.message_id,
                campaign_id=campaign.campaign_id,
                volunteer_id=volunteer.volunteer_id,
                # Bounces of a test go to the sender's own mailbox, never to a message.
                envelope_from=sender,
                envelope_id="",
                recipient=to,
                data=composed.data,
                smtputf8=not to.isascii(),
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
                to,
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
                    "to": to,
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
