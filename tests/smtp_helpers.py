"""Shared by the delivery tests: volunteers in a real ledger, and SMTP servers that misbehave.

The servers are the real aiosmtpd (through notifier.sink) on 127.0.0.1, port 0; the
misbehaviour is scripted per recipient address. aiosmtpd does not advertise PIPELINING
(RFC 2920) but reads commands line by line, so it serves pipelined clients; a
ScriptedHandler(pipelining=True) advertises it, to test the client's pipelined path.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import write_org_config

from notifier.campaign import Campaign
from notifier.config import Settings, load_settings
from notifier.delivery import SendOptions
from notifier.ledger import Ledger, suppressions
from notifier.pipeline import SendRequest, SendScope, SendSummary, send_campaign
from notifier.roster import AcceptedRow, RosterResult
from notifier.service import Workspace
from notifier.sink import ReceivedMessage, SinkHandler
from notifier.volunteer import LATIN_FAMILY_NAME, Volunteer

EXPOSURES = ("published", "screened", "database_only")

# Addresses that need SMTPUTF8 (a non-ASCII local part) or only an IDN domain.
INTERNATIONAL = [
    Volunteer(
        volunteer_id="HMR-UTF8-1",
        email="すずき@例え.jp",
        email_ascii="すずき@xn--r8jz45g.jp",
        family_name="鈴木",
        given_name="花子",
        locale="ja",
        exposure="screened",
    ),
    Volunteer(
        volunteer_id="HMR-UTF8-2",
        email="jane@bücher.example",
        email_ascii="jane@xn--bcher-kva.example",
        family_name="Doe",
        given_name="Jane",
        locale="en",
        exposure="published",
    ),
]


def make_volunteers(count: int, *, start: int = 0) -> list[Volunteer]:
    people = []
    for i in range(start, start + count):
        ja = i % 2 == 1
        exposure = EXPOSURES[i % 3]
        # Published people's surnames begin with D, G, I or J, as the 2020 notice says of
        # the published records (伊藤 is Ito in their passport's letters).
        family, latin = ("伊藤", "Ito") if exposure == "published" else ("鈴木", "Suzuki")
        people.append(
            Volunteer(
                volunteer_id=f"HMR-{i:05d}",
                email=f"person{i}@example.{'jp' if ja else 'com'}",
                email_ascii=f"person{i}@example.{'jp' if ja else 'com'}",
                family_name=family if ja else "Doe",
                given_name="一郎" if ja else "Jane",
                locale="ja" if ja else "en",
                exposure=exposure,
                # Never screened, no screening records: a consistent roster.
                data_held=() if exposure == "database_only" else ("id_documents", "photo"),
                extra={LATIN_FAMILY_NAME: latin} if ja else {},
            )
        )
    return people


def add_volunteers(ledger: Ledger, volunteers: Iterable[Volunteer]) -> None:
    """Put volunteers in the ledger as an import does (rows and their chained events), so
    the ledger verifies and a send starts from it."""
    people = list(volunteers)
    digest = hashlib.sha256("".join(v.volunteer_id for v in people).encode()).hexdigest()
    result = RosterResult(
        file=Path("seeded.csv"),
        sha256=digest,
        encoding="utf-8",
        rows_total=len(people),
        accepted=tuple(AcceptedRow(i, v) for i, v in enumerate(people, start=2)),
        problems=(),
    )
    ledger.record_import(result)


def suppress(
    ledger: Ledger, email: str, reason: str, *, event_seq: int | None = None
) -> suppressions.Suppression:
    """Put an address on the suppression list with its chained event, as a recorded hard
    bounce does (notifier.ledger.Ledger.record_report), without the bounce."""
    with ledger.transaction():
        return suppressions.add(ledger.conn, email, reason, event_seq=event_seq)


def send(
    ledger: Ledger,
    campaign: Campaign,
    volunteers: Sequence[Volunteer],
    url: str,
    *,
    scope: SendScope | None = None,
    compose_workers: int | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> SendSummary:
    """The sending engine as a send runs it, with short waits (retries, timeouts): under
    the ledger's lease, from an intact ledger, to `volunteers` (a subset of the audience).

    The service's own rules before it (approval, a clean check, the cohort) are tested
    through the service (tests/service/); this drives the machinery they guard.
    """
    opts: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05, "timeout": 5.0, **options}
    scope = scope or SendScope()
    request = SendRequest(
        campaign,
        tuple(volunteers),
        options=SendOptions(**opts),
        scope=scope,
        compose_workers=compose_workers,
    )
    settings = settings or Settings(ledger=ledger.path, smtp_url=url)
    with ledger.lease(scope.command, campaign.campaign_id) as holder:
        ledger.require_intact()
        return send_campaign(ledger, request, settings, holder=holder, handle_signals=False)


def recipients(messages: Iterable[ReceivedMessage]) -> Counter[str]:
    """How many copies each address received."""
    return Counter(r for m in messages for r in m.rcpt_tos)


class ScriptedHandler(SinkHandler):
    """A sink whose answers are scripted per recipient.

    `script[address]` is a list of actions, one used per delivery attempt to that address
    (the last one repeats): "ok", "421", "451", "550" (at RCPT), "drop" (close the
    connection in the middle of DATA), "stall" (answer DATA only after the client has
    given up), "data451" / "data554" (refuse at the end of DATA), "hold" (store the
    message, then wait for `release` before answering).
    """

    def __init__(
        self,
        script: dict[str, list[str]] | None = None,
        *,
        pipelining: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pipelining = pipelining
        # Per MAIL command: had the client already sent the RCPT behind it, without
        # waiting for the reply to MAIL? (It is then in the server's read buffer.)
        self.rcpt_before_mail_reply: list[bool] = []
        self.script = {k.casefold(): v for k, v in (script or {}).items()}
        self.tries: Counter[str] = Counter()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.stall_seconds = 5.0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        buffered = bytes(server._reader._buffer)  # type: ignore[attr-defined]
        self.rcpt_before_mail_reply.append(b"RCPT TO:" in buffered)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def action(self, address: str, *, advance: bool) -> str:
        steps = self.script.get(address.casefold())
        if not steps:
            return "ok"
        n = self.tries[address.casefold()]
        if advance:
            self.tries[address.casefold()] += 1
        return steps[min(n, len(steps) - 1)]

    def rcpt_reply(self, address: str) -> str | None:
        act = self.action(address, advance=False)
        if act in ("421", "451", "550"):
            self.tries[address.casefold()] += 1
            return {
                "421": "421 4.3.2 Service shutting down, try later",
                "451": f"451 4.7.1 <{address}>: greylisted, try again later",
                "550": f"550 5.1.1 <{address}>: no such user",
            }[act]
        return super().rcpt_reply(address)

    async def data_reply(self, server: SMTP, envelope: Envelope) -> str | None:
        address = envelope.rcpt_tos[0]
        act = self.action(address, advance=True)
        if act == "drop":
            assert server.transport is not None
            server.transport.close()
            return "451 never seen"
        if act == "stall":
            await asyncio.sleep(self.stall_seconds)
            return "451 4.4.2 too late"
        if act == "data451":
            return "451 4.3.0 temporary failure, try again"
        if act == "data554":
            return "554 5.7.1 message refused"
        if act == "hold":
            message = ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content or b"",
                received_at=datetime.now(UTC),
                queue_id="HELD",
            )
            self.store(message)
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
            return "250 2.0.0 Ok: queued as HELD"
        return None


def approve_shipped(ledger: Ledger, *campaign_ids: str, settings: Settings | None = None) -> None:
    """Sign off shipped campaigns as `notifier approve` does (the whole campaign's check
    passes first), for `send --yes` to run.

    `settings` must be those the sending command sees; by default, the tests'
    organisation's, written beside the ledger (where a command finds them).
    """
    if settings is None:
        config = ledger.path.parent / "notifier.toml"
        if not config.exists():
            write_org_config(ledger.path.parent)
        settings = load_settings(env={}, ledger=ledger.path)
    with Workspace(settings) as ws:
        for campaign_id in campaign_ids:
            ws.approve(campaign_id, "Test approver")
