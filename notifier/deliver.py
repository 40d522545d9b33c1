"""Delivery: hand composed messages to an SMTP server, throttled, with every outcome journaled.

The parts, in the order a message meets them:

- `parse_smtp_url` / `SmtpTarget`: where to send (`smtp://host:port`, `smtps://` for TLS
  from the first byte; STARTTLS is used whenever the server offers it).
- `Delivery._dispatch`: the overall token bucket (`rate`), the per-domain rate
  (`per_domain`), batches with pauses; then a small window of messages is claimed as
  `sending` in the journal, in one transaction, before any of their bytes go out.
- `Delivery._worker`: one per connection (`concurrency`); each carries many messages,
  with RSET between them, and reconnects after a failure.
- `classify_smtp_outcome`: the one place a server reply becomes sent / deferred /
  failed_permanent.
- `Delivery._retry`: deferred messages are tried again with exponential backoff
  (tenacity) up to `max_attempts`, then recorded as failed_temporary.

Crash safety rests on the journal (see `LedgerJournal`): outcomes are buffered and written
in batches, but a claim always writes the buffer first, and the number of messages
claimed and not yet settled is bounded, so a SIGKILL leaves at most that many messages in
`sending` -- the ones the next run reports as uncertain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from notifier.errors import DeliveryError
from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome
from notifier.throttle import DomainThrottle, TokenBucket

log = logging.getLogger(__name__)

USER_ENV = "NOTIFIER_SMTP_USER"
PASSWORD_ENV = "NOTIFIER_SMTP_PASSWORD"  # noqa: S105 (the variable's name, not a secret)


# --- target and options -------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTarget:
    scheme: str  # "smtp" or "smtps"
    host: str
    port: int

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://host[:port]` (default 25) or `smtps://host[:port]` (default 465)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise DeliveryError(
            f"not an SMTP URL: {url!r}",
            field="--smtp",
            hint="write smtp://host:port (STARTTLS when offered) or smtps://host:port",
        )
    if parts.username or parts.password:
        raise DeliveryError(
            "credentials do not belong in the SMTP URL",
            field="--smtp",
            hint=f"set {USER_ENV} and {PASSWORD_ENV} in the environment instead",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise DeliveryError(f"bad port in {url!r}", field="--smtp") from exc
    default = 465 if parts.scheme == "smtps" else 25
    return SmtpTarget(parts.scheme, parts.hostname, port or default)


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """SMTP AUTH credentials, from the environment only (never flags, files or the ledger)."""
    env = os.environ if env is None else env
    user = env.get(USER_ENV)
    if not user:
        return None
    return Credentials(user, env.get(PASSWORD_ENV, ""))


@dataclass(frozen=True)
class SendOptions:
    """How to send. Defaults suit a relay you control; throttle for the open internet."""

    rate: float = 0.0  # messages per second over all connections; 0 = no limit
    concurrency: int = 4  # SMTP connections
    batch_size: int = 0  # pause after this many messages; 0 = no batches
    batch_pause: float = 0.0  # seconds
    per_domain: float = 0.0  # messages per second to one recipient domain; 0 = no cap
    timeout: float = 30.0  # seconds for connecting and for each SMTP reply
    max_attempts: int = 5  # attempts per message in one run before failed_temporary
    backoff: float = 2.0  # seconds before the first retry; doubles each time
    backoff_max: float = 300.0
    require_tls: bool = False
    validate_certs: bool = True
    resend_uncertain: bool = False
    limit: int | None = None  # send at most this many messages in this run
    claim_window: int = 64  # messages claimed as `sending` per ledger transaction
    flush_interval: float = 0.25  # seconds between ledger writes of buffered outcomes
    local_hostname: str | None = None  # EHLO name; default: this machine's FQDN

    @property
    def max_unsettled(self) -> int:
        """Messages claimed but whose outcome is not yet written: the most a crash can
        leave uncertain."""
        return max(4 * self.claim_window, 2 * self.concurrency)


# --- outcome classification ---------------------------------------------------------

_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([A-Za-z0-9][A-Za-z0-9._-]*)", re.IGNORECASE),  # Postfix, aiosmtpd
    re.compile(r"\bid=([A-Za-z0-9][A-Za-z0-9._-]*)"),  # Exim
    re.compile(r"^\S+\s+Message accepted for delivery", re.IGNORECASE),  # sendmail: no id
)


def parse_queue_id(reply: str) -> str | None:
    """The server's queue id in a 2xx reply, e.g. `250 2.0.0 Ok: queued as 4F3A2B`."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply)
        if match and match.groups():
            return match.group(1)
    return None


def classify_smtp_outcome(code: int | None, reply: str = "") -> str:
    """The one rule that turns a server's answer into a message state.

    2xx at the end of DATA: sent. 5xx: failed_permanent (no retry). 4xx, no reply at all
    (refused, reset, timeout, dropped mid-DATA, code None) or anything unexpected:
    deferred, to be retried.
    """
    if code is None:
        return "deferred"
    if 200 <= code < 300:
        return "sent"
    if 500 <= code < 600:
        return "failed_permanent"
    return "deferred"


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a network-level failure."""
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text.replace("\n", " ")


# --- one SMTP connection ------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What the server said it can do, from its EHLO reply."""

    greeting: str
    extensions: frozenset[str]
    tls: bool

    @property
    def smtputf8(self) -> bool:
        return "smtputf8" in self.extensions

    @property
    def dsn(self) -> bool:
        return "dsn" in self.extensions

    @property
    def eightbitmime(self) -> bool:
        return "8bitmime" in self.extensions


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready for the wire, with its envelope."""

    message_id: str
    campaign_id: str
    volunteer_id: str
    envelope_from: str  # the VERP address
    envelope_id: str  # the VERP token: ENVID when the server offers DSN
    recipient: str  # the RCPT TO address (Unicode with SMTPUTF8, else A-label form)
    data: bytes
    smtputf8: bool = False  # the envelope or headers need SMTPUTF8

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()


_XTEXT_SAFE = re.compile(r"[!-*,-<>-~]*")  # printable ASCII but "+" and "="
_ENVELOPE_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except `+` and `=`, the rest as +HH."""
    if _XTEXT_SAFE.fullmatch(value):
        return value
    return "".join(
        ch if 33 <= ord(ch) <= 126 and ch not in "+=" else f"+{ord(ch):02X}" for ch in value
    )


class FatalDeliveryError(DeliveryError):
    """A problem no retry can fix (TLS required but absent, credentials refused)."""


class SmtpSession:
    """One SMTP connection that carries many messages, reopened after any failure."""

    def __init__(
        self,
        target: SmtpTarget,
        options: SendOptions,
        credentials: Credentials | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.credentials = credentials
        self.info: ServerInfo | None = None
        self._smtp: aiosmtplib.SMTP | None = None
        self._used = False  # a transaction ran on this connection: RSET before the next

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def open(self) -> ServerInfo:
        """Connect, EHLO, STARTTLS when offered, AUTH when credentials are set."""
        self.close()
        opts = self.options
        smtp = aiosmtplib.SMTP(
            hostname=self.target.host,
            port=self.target.port,
            use_tls=self.target.implicit_tls,
            # None: STARTTLS when the server offers it; False with implicit TLS.
            start_tls=False if self.target.implicit_tls else None,
            timeout=opts.timeout,
            validate_certs=opts.validate_certs,
            local_hostname=opts.local_hostname or _local_hostname(),
        )
        response = await smtp.connect()
        try:
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()  # an old server without ESMTP
            tls = self.target.implicit_tls or smtp.get_transport_info("sslcontext") is not None
            if opts.require_tls and not tls:
                raise FatalDeliveryError(
                    f"{self.target} does not offer STARTTLS and --require-tls is set",
                    field="--smtp",
                    hint="use smtps:// or a server with STARTTLS, or drop --require-tls",
                )
            if self.credentials is not None:
                try:
                    await smtp.login(self.credentials.user, self.credentials.password)
                except aiosmtplib.SMTPAuthenticationError as exc:
                    raise FatalDeliveryError(
                        f"{self.target} refused the credentials: {exc.code} {exc.message}",
                        hint=f"check {USER_ENV} and {PASSWORD_ENV}",
                    ) from exc
                except aiosmtplib.SMTPException as exc:
                    raise FatalDeliveryError(
                        f"cannot authenticate to {self.target}: {describe_error(exc)}",
                        hint="the server may not offer AUTH without TLS; try smtps://",
                    ) from exc
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        self._used = False
        self.info = ServerInfo(
            greeting=response.message,
            extensions=frozenset(smtp.esmtp_extensions),
            tls=tls,
        )
        return self.info

    async def transmit(self, message: OutgoingMessage) -> aiosmtplib.SMTPResponse:
        """MAIL, RCPT, DATA for one message; the final reply, or an aiosmtplib error."""
        if not self.connected:
            await self.open()
        smtp = self._smtp
        info = self.info
        assert smtp is not None and info is not None
        if self._used:
            await smtp.rset()
        self._used = True
        mail_options: list[str] = []
        rcpt_options: list[str] = []
        encoding = "ascii"
        if message.smtputf8:
            mail_options.append("SMTPUTF8")
            encoding = "utf-8"
        if info.eightbitmime and not message.data.isascii():
            mail_options.append("BODY=8BITMIME")
        if info.dsn:
            mail_options += [f"ENVID={xtext(message.envelope_id)}", "RET=HDRS"]
            rcpt_options.append("NOTIFY=FAILURE,DELAY")
            if message.recipient.isascii():
                rcpt_options.append(f"ORCPT=rfc822;{xtext(message.recipient)}")
        # MAIL and RCPT written here rather than with smtp.mail()/rcpt(): those parse each
        # address with the email package, a third of the time a message takes. Ours are
        # already valid (roster validation, VERP); this only keeps them in one piece.
        mail = await smtp.execute_command(
            b"MAIL",
            b"FROM:" + _envelope_address(message.envelope_from, encoding),
            *(o.encode("ascii") for o in mail_options),
        )
        if mail.code != 250:
            raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, message.envelope_from)
        rcpt = await smtp.execute_command(
            b"RCPT",
            b"TO:" + _envelope_address(message.recipient, encoding),
            *(o.encode("ascii") for o in rcpt_options),
        )
        if rcpt.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, message.recipient)
        return await self._data(smtp, message.data)

    async def _data(self, smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
        """DATA. smtp.data() rewrites line endings and dot-stuffs with two regular
        expressions over the whole message; composed messages already have CRLF endings
        and rarely a line starting with ".", so those go out as they are."""
        protocol = smtp.protocol
        if (
            protocol is None
            or data.startswith(b".")
            or b"\n." in data
            or data.count(b"\n") != data.count(b"\r\n")
            or data.count(b"\r") != data.count(b"\r\n")
        ):
            return await smtp.data(data)
        start = await smtp.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        end = b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"
        try:
            protocol.write(data + end)
            reply = await protocol.read_response(timeout=self.options.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            smtp.close()
            raise
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    async def quit(self) -> None:
        if self.connected:
            assert self._smtp is not None
            try:
                await self._smtp.quit(timeout=min(self.options.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError):
                pass  # leaving anyway; the server will time the connection out
        self.close()


def _envelope_address(address: str, encoding: str) -> bytes:
    if _ENVELOPE_UNSAFE.search(address) or address.count("@") < 1:
        raise aiosmtplib.SMTPRecipientRefused(
            553, f"not a valid envelope address: {address!r}", address
        )
    return f"<{address}>".encode(encoding)


_hostname: str | None = None


def _local_hostname() -> str:
    """This machine's name for EHLO, looked up once (getfqdn can be slow)."""
    global _hostname
    if _hostname is None:
        name = socket.getfqdn()
        _hostname = name if name and name.isascii() else "localhost"
    return _hostname


# --- the journal: where outcomes go -------------------------------------------------


class Journal(Protocol):
    """Where delivery writes its intent and its outcomes."""

    @property
    def written(self) -> int:
        """Outcomes written so far (buffered ones not counted)."""
        ...

    @property
    def buffered(self) -> int:
        """Outcomes waiting to be written."""
        ...

    def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        """Commit `sending` for these messages, after any buffered outcomes; their attempt
        numbers."""
        ...

    def record(self, outcome: DeliveryOutcome) -> None:
        """Buffer one outcome (written at the next flush or claim)."""
        ...

    def flush(self) -> int:
        """Write buffered outcomes; returns how many."""
        ...


class LedgerJournal:
    """Batches outcome events into few transactions; claims always write the batch first,
    so the ledger's order of events is the order things happened."""

    def __init__(self, ledger: Ledger, *, flush_size: int = 256) -> None:
        self.ledger = ledger
        self.flush_size = flush_size
        self._buffer: list[DeliveryOutcome] = []
        self._written = 0

    @property
    def written(self) -> int:
        return self._written

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        with self.ledger.transaction():
            self.flush()
            return self.ledger.claim_for_sending([m.message_id for m in messages])

    def record(self, outcome: DeliveryOutcome) -> None:
        self._buffer.append(outcome)
        if len(self._buffer) >= self.flush_size:
            self.flush()

    def flush(self) -> int:
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        written = self.ledger.record_outcomes(batch)
        self._written += written
        return written


# --- the engine ---------------------------------------------------------------------


@dataclass
class DeliveryStats:
    counts: dict[str, int] = field(default_factory=dict)  # final state -> messages
    attempts: int = 0  # transmissions tried, retries included
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    stopped: bool = False  # interrupted: some messages were left for a later run
    fatal: DeliveryError | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


@dataclass
class _Job:
    message: OutgoingMessage
    attempt: int
    # Set for retries: the retry task waits for the outcome instead of the worker deciding.
    future: asyncio.Future[DeliveryOutcome] | None = None


class _Stopped(Exception):
    """Raised out of a backoff wait when a stop was requested."""


ProgressCallback = Callable[[DeliveryOutcome], None]


class Delivery:
    """Sends a stream of messages over a pool of connections. One instance, one run."""

    def __init__(
        self,
        target: SmtpTarget,
        options: SendOptions,
        journal: Journal,
        *,
        credentials: Credentials | None = None,
        progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if options.concurrency < 1:
            raise DeliveryError("--concurrency must be at least 1", field="--concurrency")
        if options.max_attempts < 1:
            raise DeliveryError("--max-attempts must be at least 1", field="--max-attempts")
        self.target = target
        self.options = options
        self.journal = journal
        self.credentials = credentials
        self.progress = progress
        self.clock = clock
        self.stats = DeliveryStats()
        self.sessions = [
            SmtpSession(target, options, credentials) for _ in range(options.concurrency)
        ]
        self._bucket = TokenBucket(options.rate, now=clock())
        self._domains: DomainThrottle[OutgoingMessage] = DomainThrottle(options.per_domain)
        self._stop: asyncio.Event | None = None
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._claimed = 0  # claims made (first attempts and retries)
        self._flush_at = 0  # buffered outcomes that let a waiting claim go on (0: none waits)
        self._settled_event: asyncio.Event | None = None
        self._in_batch = 0

    # -- control

    def request_stop(self) -> None:
        """Stop taking new messages; finish those in flight. Safe from a signal handler."""
        self.stats.stopped = True
        if self._stop is not None:
            self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def probe(self) -> ServerInfo:
        """Open the first connection and learn what the server offers (SMTPUTF8, DSN).

        Fails with DeliveryError before anything is claimed if the server cannot be used.
        """
        try:
            return await self.sessions[0].open()
        except DeliveryError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"cannot use {self.target}: {describe_error(exc)}",
                field="--smtp",
                hint="is the server running? for a local test, start one with: notifier sink",
            ) from exc

    # -- the run

    async def run(self, source: AsyncIterator[Sequence[OutgoingMessage]]) -> DeliveryStats:
        """Send everything `source` yields (in chunks), until done or asked to stop."""
        self._stop = asyncio.Event()
        if self.stats.stopped:
            self._stop.set()
        self._settled_event = asyncio.Event()
        self._queue = asyncio.Queue()
        self.stats = DeliveryStats(stopped=self.stats.stopped)
        workers = [asyncio.create_task(self._worker(s)) for s in self.sessions]
        flusher = asyncio.create_task(self._flush_periodically())
        failure: Exception | None = None
        try:
            await self._dispatch(source)
        except Exception as exc:  # the source failed (a template error): stop cleanly
            failure = exc
            self.request_stop()
        # Everything claimed must be settled before the connections close.
        await self._queue.join()
        while self._retries:
            await asyncio.wait(set(self._retries))
            await self._queue.join()
        for _ in workers:
            self._queue.put_nowait(None)
        await asyncio.gather(*workers)
        flusher.cancel()
        self.journal.flush()
        self.stats.finished = self.clock()
        if failure is not None:
            raise failure
        if self.stats.fatal is not None:
            raise self.stats.fatal
        return self.stats

    async def _dispatch(self, source: AsyncIterator[Sequence[OutgoingMessage]]) -> None:
        window: list[OutgoingMessage] = []
        async for chunk in source:
            for message in chunk:
                if self.stopping:
                    return
                ready = self._domains.offer(message.domain, message, self.clock())
                if ready is not None:
                    await self._admit(ready, window)
                for released in self._domains.release(self.clock()):
                    await self._admit(released, window)
                # Bounded parking: beyond this, wait for the slow domains (memory stays flat).
                while self._domains.parked_count > 1000 and not self.stopping:
                    await self._drain_parked(window, until_below=1000)
            # The source may take a while for the next chunk: let the workers have these.
            await self._claim(window)
        await self._drain_parked(window, until_below=1)
        await self._claim(window)

    async def _drain_parked(self, window: list[OutgoingMessage], *, until_below: int) -> None:
        while self._domains.parked_count >= until_below and not self.stopping:
            due = self._domains.next_release()
            if due is None:
                return
            await self._claim(window)
            await self._sleep(due - self.clock())
            for released in self._domains.release(self.clock()):
                await self._admit(released, window)

    async def _admit(self, message: OutgoingMessage, window: list[OutgoingMessage]) -> None:
        """Take a rate token for the message and put it in the window to be claimed."""
        while not self._bucket.take(1, self.clock()):
            await self._claim(window)  # what we hold can go while we wait
            await self._sleep(self._bucket.wait_time(self.clock()))
            if self.stopping:
                return
        window.append(message)
        if len(window) >= self.options.claim_window:
            await self._claim(window)
        self._in_batch += 1
        if self.options.batch_size and self._in_batch >= self.options.batch_size:
            self._in_batch = 0
            await self._claim(window)
            await self._wait_settled(0)
            log.info("batch done; pausing %.1f s", self.options.batch_pause)
            await self._sleep(self.options.batch_pause)

    async def _claim(self, window: list[OutgoingMessage]) -> None:
        """Commit `sending` for the window, then hand it to the workers."""
        if not window:
            return
        await self._wait_settled(self.options.max_unsettled - len(window))
        # Bound memory when a server defers everything: wait for retries to finish.
        while len(self._retries) > 1000 and not self.stopping:
            await asyncio.wait(set(self._retries), return_when=asyncio.FIRST_COMPLETED)
        attempts = self.journal.claim(window)
        self._claimed += len(window)
        assert self._queue is not None
        for message in window:
            self._queue.put_nowait(_Job(message, attempts[message.message_id]))
        window.clear()

    async def _wait_settled(self, most: int) -> None:
        """Wait until at most `most` claimed messages are still without a written outcome."""
        assert self._settled_event is not None
        most = max(most, 0)
        while self._claimed - self.journal.written > most:
            needed = self._claimed - self.journal.written - most
            if self.journal.buffered >= needed:
                self.journal.flush()
                continue
            # Wake when enough outcomes are in to free the room in one write, not at
            # every outcome: one transaction per outcome would be the bottleneck.
            self._flush_at = needed
            self._settled_event.clear()
            await self._settled_event.wait()
        self._flush_at = 0

    def _record(self, outcome: DeliveryOutcome) -> None:
        self.journal.record(outcome)
        self.stats.attempts += 1
        if self._flush_at and self.journal.buffered >= self._flush_at:
            assert self._settled_event is not None
            self._settled_event.set()  # the waiting claim can flush and go on
        self.count_outcome(outcome)

    def count_outcome(self, outcome: DeliveryOutcome) -> None:
        """Count an outcome in the stats and show it; the caller records outcomes that
        were decided without sending (an address this server cannot carry)."""
        if outcome.state != "deferred":
            self.stats.counts[outcome.state] = self.stats.counts.get(outcome.state, 0) + 1
        if self.progress is not None:
            self.progress(outcome)

    async def _flush_periodically(self) -> None:
        # Outcomes reach the ledger within flush_interval, so `notifier status` is current
        # and a crash leaves few messages uncertain even when sending is slow.
        while True:
            await asyncio.sleep(self.options.flush_interval)
            if self.journal.flush() and self._settled_event is not None:
                self._settled_event.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a stop is requested."""
        if seconds <= 0 or self._stop is None:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _backoff_sleep(self, seconds: float) -> None:
        await self._sleep(seconds)
        if self.stopping:
            raise _Stopped

    # -- workers

    async def _worker(self, session: SmtpSession) -> None:
        assert self._queue is not None
        failures = 0
        while True:
            job = await self._queue.get()
            try:
                if job is None:
                    break
                outcome, connection_failed = await self._attempt(session, job)
                if job.future is not None:
                    job.future.set_result(outcome)
                else:
                    self._first_attempt_done(job.message, outcome)
            finally:
                self._queue.task_done()
            # A connection that cannot be opened: wait before the next try, so a server
            # that is down is not hammered and messages are not used up in a burst.
            failures = failures + 1 if connection_failed else 0
            if failures and not self.stopping:
                await self._sleep(min(self.options.backoff * 2 ** (failures - 1), 30.0))
        await session.quit()

    async def _attempt(self, session: SmtpSession, job: _Job) -> tuple[DeliveryOutcome, bool]:
        """Send one message; the outcome, and whether the connection could not be opened."""
        message = job.message
        code: int | None
        connection_failed = False
        try:
            if not session.connected:
                connection_failed = True
                await session.open()
                connection_failed = False
            response = await session.transmit(message)
            code, reply = response.code, response.message
        except FatalDeliveryError as exc:
            self.stats.fatal = exc
            self.request_stop()
            code, reply = None, f"not sent: {exc.message}"
        except aiosmtplib.SMTPResponseException as exc:
            code, reply = exc.code, exc.message
            if connection_failed or code == 421:
                session.close()  # 421: the server is closing this connection
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            session.close()
            code, reply = None, describe_error(exc)
        state = classify_smtp_outcome(code, reply)
        if connection_failed and state == "failed_permanent":
            # A 5xx greeting refuses us, not this recipient: try again later.
            state = "deferred"
        outcome = DeliveryOutcome(
            message_id=message.message_id,
            campaign_id=message.campaign_id,
            volunteer_id=message.volunteer_id,
            state=state,
            attempt=job.attempt,
            code=code,
            reply=reply,
            queue_id=parse_queue_id(reply) if state == "sent" else None,
        )
        if state != "sent":
            log.info("%s to %s: %s %s", state, message.recipient, code, reply)
        return outcome, connection_failed

    def _first_attempt_done(self, message: OutgoingMessage, outcome: DeliveryOutcome) -> None:
        if outcome.state != "deferred":
            self._record(outcome)
        elif self.options.max_attempts <= 1:
            self._record(_gave_up(outcome))
        elif self.stopping:
            self._record(outcome)  # stays deferred: the next run takes it up
        else:
            task = asyncio.create_task(self._retry(message, outcome))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry(self, message: OutgoingMessage, first: DeliveryOutcome) -> None:
        """Retry a deferred message with exponential backoff until sent, refused for good,
        or out of attempts. Each attempt is claimed (`sending`) before it goes out."""
        known = [first]

        async def attempt() -> DeliveryOutcome:
            if known:  # the worker already made the first attempt
                return known.pop()
            attempts = self.journal.claim([message])
            self._claimed += 1
            future: asyncio.Future[DeliveryOutcome] = asyncio.get_running_loop().create_future()
            assert self._queue is not None
            self._queue.put_nowait(_Job(message, attempts[message.message_id], future))
            return await future

        def record_deferred(state: RetryCallState) -> None:
            assert state.outcome is not None
            self._record(state.outcome.result())

        def last_outcome(state: RetryCallState) -> DeliveryOutcome:
            assert state.outcome is not None
            result: DeliveryOutcome = state.outcome.result()
            return result

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.max_attempts),
            wait=wait_exponential(multiplier=self.options.backoff, max=self.options.backoff_max)
            + wait_random(0, self.options.backoff / 4),
            retry=retry_if_result(lambda o: o.state == "deferred"),
            before_sleep=record_deferred,
            retry_error_callback=last_outcome,
            sleep=self._backoff_sleep,
        )
        try:
            final: DeliveryOutcome = await retrying(attempt)
        except _Stopped:
            return  # its last outcome (deferred) is recorded; the next run retries it
        self._record(_gave_up(final) if final.state == "deferred" else final)


def _gave_up(outcome: DeliveryOutcome) -> DeliveryOutcome:
    return replace(
        outcome,
        state="failed_temporary",
        reason=f"still deferred after attempt {outcome.attempt}",
    )
