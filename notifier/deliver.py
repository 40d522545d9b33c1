"""Delivery: hand composed messages to an SMTP server, throttled, with every outcome journaled.

The parts, in the order a message meets them:

- `parse_smtp_url` / `SmtpTarget`: where to send (`smtp://host:port`, `smtps://` for TLS
  from the first byte; STARTTLS is used whenever the server offers it).
- `Delivery._dispatch`: the overall token bucket (`rate`), the per-domain rate
  (`per_domain`), batches with pauses; then a small window of messages is claimed as
  `sending` in the journal, in one transaction, before any of their bytes go out.
- `Delivery._worker`: one per connection (`concurrency`); each carries many messages,
  with RSET between them, and reconnects after a failure. `SmtpSession` speaks SMTP:
  aiosmtplib opens the connection (EHLO, STARTTLS, AUTH), then `_ReplyReader` takes it
  over. With PIPELINING (RFC 2920) a message costs one write and one wait: its content
  goes out with the next message's RSET, MAIL, RCPT and DATA behind it; without, every
  command waits for its reply.
- `classify_smtp_outcome`: the one place a server reply becomes sent / deferred /
  failed_permanent.
- `Delivery._retry`: deferred messages are tried again with exponential backoff
  (tenacity) up to `max_attempts`, then recorded as failed_temporary.

Crash safety rests on the journal (see `LedgerJournal`, and `ThreadedLedgerJournal`,
which writes on a thread of its own): outcomes are buffered and written in batches, but
a claim always writes the buffer first and returns only once committed, and the number
of messages claimed and not yet settled is bounded, so a SIGKILL leaves at most that
many messages in `sending` -- the ones the next run reports as uncertain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
from aiosmtplib import SMTPResponse
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from notifier.config import PASSWORD_ENV, USER_ENV, Credentials
from notifier.errors import DeliveryError, FatalDeliveryError
from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome
from notifier.throttle import DomainThrottle, TokenBucket

log = logging.getLogger(__name__)



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


def _is_loopback(host: str) -> bool:
    """A server on this machine: a password sent to it never crosses a network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # the TLS error may be wrapped by aiosmtplib; the chain is short
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


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
    ca_file: Path | None = None  # PEM CAs trusted besides the system's ([smtp] ca_file)
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

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions


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
    # `data` as it goes after DATA (see wire_form), made where the message was composed,
    # off the sending process; None: made when sending. Often `data` itself.
    wire: bytes | None = None

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


def _readable_ca_file(path: Path) -> Path:
    # Checked here: a missing file would otherwise surface as a connection error.
    if not path.is_file():
        raise FatalDeliveryError(
            "the CA file to trust for the SMTP server's certificate is not there",
            file=path,
            field="smtp.ca_file",
            hint="set [smtp] ca_file (or NOTIFIER_SMTP_CA_FILE) to a PEM file of CA certificates",
        )
    return path


class _ProtocolError(aiosmtplib.SMTPException):
    """The server's answer is not SMTP (a reply line without a code, or no line end)."""


_MAX_REPLY_BUFFER = 64 * 1024  # a reply line is at most 512 bytes (RFC 5321 4.5.3.1.5)


class _ReplyReader(asyncio.Protocol):
    """Reads the server's replies once a connection is open, any number per packet.

    aiosmtplib opens the connection (EHLO, STARTTLS, AUTH); then this protocol takes the
    transport over for the messages. aiosmtplib's own reader keeps one reply per command
    and drops what else arrived in the same packet, which is where pipelined replies come.
    Waiting is one future per packet, with its own timer: cheaper than wait_for per reply.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the first lines of a multiline reply
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: aiosmtplib.SMTPException | None = None

    @property
    def open(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    # -- protocol callbacks

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a line still on its way
            if len(data) - cut > _MAX_REPLY_BUFFER:
                self._fail(_ProtocolError("a reply line without an end"))
                return
            self._buffer += data[cut:]
            data = data[:cut]
        for line in data.splitlines():
            if len(line) < 3 or not line[:3].isdigit():
                self._fail(_ProtocolError(f"not an SMTP reply: {line[:80]!r}"))
                return
            if line[3:4] == b"-":
                self._lines.append(line[4:])
                continue
            text = line[4:]
            if self._lines:
                text = b"\n".join([*self._lines, text])
                self._lines.clear()
            self._replies.append(
                SMTPResponse(int(line[:3]), text.decode("utf-8", "surrogateescape"))
            )
        if self._replies:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
            lost.__cause__ = exc
            self._lost = lost
        self._wake()

    # -- for the session

    def write(self, data: bytes) -> None:
        if not self.open:
            raise self._lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply: at once when it already arrived (pipelined), else waits."""
        if not self._replies:
            if self._lost is not None:
                raise self._lost
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._replies:
                raise self._lost or aiosmtplib.SMTPServerDisconnected("Connection lost")
        return self._replies.popleft()

    def close(self) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection closed"))

    def _fail(self, exc: aiosmtplib.SMTPException) -> None:
        if self._lost is None:
            self._lost = exc
        if not self.transport.is_closing():
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            timeout = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            self._fail(timeout)


class SmtpSession:
    """One SMTP connection that carries many messages, reopened after any failure.

    A message goes in two steps: `envelope` ([RSET,] MAIL, RCPT, DATA, up to the 354) and
    `content` (the message and its final dot). When the server offers PIPELINING (RFC
    2920) each step is one write and one wait, and the next message's envelope can go out
    in the same write as this message's content (`envelope_bytes`), so a busy connection
    costs one round trip a message; without PIPELINING every command waits for its reply.
    """

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
        self._reader: _ReplyReader | None = None
        self._used = False  # a transaction ran on this connection: RSET before the next

    @property
    def connected(self) -> bool:
        return self._reader is not None and self._reader.open

    @property
    def pipelining(self) -> bool:
        return self.info is not None and self.info.pipelining

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
            cert_bundle=str(_readable_ca_file(opts.ca_file)) if opts.ca_file else None,
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
            if self.credentials is not None and not tls and not _is_loopback(self.target.host):
                # aiosmtplib would send the password in the clear: refuse instead.
                raise FatalDeliveryError(
                    f"{self.target} offers no TLS, and the password would cross the network "
                    "unencrypted",
                    field="--smtp",
                    hint="use smtps:// or a server with STARTTLS",
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
            transport = smtp.transport
            if not isinstance(transport, asyncio.Transport) or transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        except BaseException:
            smtp.close()
            raise
        # From here on the connection is ours: aiosmtplib's object is dropped unused.
        self._reader = _ReplyReader(transport)
        transport.set_protocol(self._reader)
        self._used = False
        self.info = ServerInfo(
            greeting=response.message,
            extensions=frozenset(smtp.esmtp_extensions),
            tls=tls,
        )
        return self.info

    def _reader_or_fail(self) -> _ReplyReader:
        if self._reader is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        return self._reader

    def envelope_commands(self, message: OutgoingMessage, *, rset: bool) -> list[bytes]:
        """[RSET,] MAIL, RCPT, DATA for the message, each a CRLF-terminated line.

        Written by hand rather than with smtp.mail()/rcpt(): those parse each address with
        the email package, a third of the time a message took. Ours are already valid
        (roster validation, VERP); this only keeps them in one piece.
        """
        info = self.info
        assert info is not None
        mail_options = ""
        rcpt_options = ""
        encoding = "ascii"
        if message.smtputf8:
            mail_options += " SMTPUTF8"
            encoding = "utf-8"
        if info.eightbitmime and not message.data.isascii():
            mail_options += " BODY=8BITMIME"
        if info.dsn:
            mail_options += f" ENVID={xtext(message.envelope_id)} RET=HDRS"
            rcpt_options += " NOTIFY=FAILURE,DELAY"
            if message.recipient.isascii():
                rcpt_options += f" ORCPT=rfc822;{xtext(message.recipient)}"
        mail = _envelope_address(message.envelope_from, encoding)
        rcpt = _envelope_address(message.recipient, encoding)
        commands = [b"RSET\r\n"] if rset else []
        commands += [
            b"MAIL FROM:" + mail + mail_options.encode("ascii") + b"\r\n",
            b"RCPT TO:" + rcpt + rcpt_options.encode("ascii") + b"\r\n",
            b"DATA\r\n",
        ]
        return commands

    def envelope_bytes(self, message: OutgoingMessage) -> bytes:
        """The next message's envelope, to go out behind this message's content (pipelined
        only). An address that cannot be written raises here, before anything is sent."""
        return b"".join(self.envelope_commands(message, rset=True))

    async def envelope(self, message: OutgoingMessage, *, written: bool = False) -> None:
        """[RSET,] MAIL, RCPT, DATA, up to the server's 354 for the content.

        `written`: the commands already went out behind the previous message's content.
        A refusal raises SMTPResponseException with the first refusing reply (a 550 on RCPT
        is that, not the 503/554 a pipelining server then answers to DATA).
        """
        if not self.connected:
            await self.open()
            written = False
        reader = self._reader_or_fail()
        timeout = self.options.timeout
        rset = self._used or written
        self._used = True
        if not self.pipelining:
            for command in self.envelope_commands(message, rset=rset):
                reader.write(command)
                _check_envelope_reply(command[:4], await reader.reply(timeout))
            return
        if not written:
            reader.write(b"".join(self.envelope_commands(message, rset=rset)))
        refusal: aiosmtplib.SMTPResponseException | None = None
        for verb in _PIPELINED_VERBS[0 if rset else 1 :]:
            reply = await reader.reply(timeout)
            if reply.code == 421:  # the server is closing: no more replies will come
                raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
            if refusal is not None:
                if verb == b"DATA" and reply.code == 354:
                    # DATA accepted without a recipient: end it with nothing in it.
                    reader.write(b".\r\n")
                    await reader.reply(timeout)
                continue
            try:
                _check_envelope_reply(verb, reply)
            except aiosmtplib.SMTPResponseException as exc:
                refusal = exc
        if refusal is not None:
            raise refusal

    async def content(self, message: OutgoingMessage, following: bytes = b"") -> SMTPResponse:
        """The message and its final dot, after `envelope`; then the final reply.

        `following` (the next message's envelope, pipelined) goes out in the same write.
        """
        reader = self._reader_or_fail()
        wire = message.wire if message.wire is not None else wire_form(message.data)
        reader.write(b"".join((wire, b".\r\n", following)))
        reply = await reader.reply(self.options.timeout)
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    async def transmit(self, message: OutgoingMessage) -> SMTPResponse:
        """One message, envelope and content; the final reply, or an aiosmtplib error."""
        await self.envelope(message)
        return await self.content(message)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    async def quit(self) -> None:
        if self.connected:
            reader = self._reader_or_fail()
            try:
                reader.write(b"QUIT\r\n")
                await reader.reply(min(self.options.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError):
                pass  # leaving anyway; the server will time the connection out
        self.close()


# The envelope commands, in the order they go out; RSET only on a used connection.
_PIPELINED_VERBS = (b"RSET", b"MAIL", b"RCPT", b"DATA")
_ENVELOPE_EXPECTED = {b"RSET": (250,), b"MAIL": (250,), b"RCPT": (250, 251), b"DATA": (354,)}


def _check_envelope_reply(verb: bytes, reply: SMTPResponse) -> None:
    """Raise the aiosmtplib error for a refusing reply to an envelope command."""
    if reply.code in _ENVELOPE_EXPECTED[verb]:
        return
    if verb == b"MAIL":
        raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, "")
    if verb == b"RCPT":
        raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, "")
    if verb == b"DATA":
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    raise aiosmtplib.SMTPResponseException(reply.code, reply.message)


_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")


def wire_form(data: bytes, *, crlf: bool = False) -> bytes:
    """The message as it goes after DATA, but for the final dot: CRLF line endings, a CRLF
    at the end, leading dots doubled. `data` itself when it already is.

    `crlf`: the caller vouches that every line of `data` ends in CRLF, as build_message
    writes them (tests/test_compose checks it), so only the dots are looked at. Quoted-
    printable soft line breaks start a line with "." in about one message in four. Each
    scan costs some 10 µs for 10 KB, so this runs where messages are composed (see
    OutgoingMessage.wire).
    """
    if not crlf:
        ends = data.count(b"\r\n")
        if not data.endswith(b"\r\n") or ends != data.count(b"\n") or ends != data.count(b"\r"):
            data = _LINE_ENDING.sub(b"\r\n", data)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
    # bytes.replace returns `data` itself when there is nothing to replace.
    data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data


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
    """Where delivery writes its intent and its outcomes, in the order they happen."""

    @property
    def written(self) -> int:
        """Outcomes written so far."""
        ...

    @property
    def unwritten(self) -> int:
        """Outcomes recorded and not yet written (buffered, or being written)."""
        ...

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        """Commit `sending` for these messages, after the outcomes recorded so far; their
        attempt numbers. Returns once committed: only then may their bytes go out."""
        ...

    def record(self, outcome: DeliveryOutcome) -> None:
        """Record one outcome (written at the next flush or claim)."""
        ...

    def flush(self) -> None:
        """Start writing the recorded outcomes (a journal may return before they are)."""
        ...

    async def settle(self) -> None:
        """Write every outcome recorded so far, and wait until they are written."""
        ...


class LedgerJournal:
    """Batches outcome events into few transactions, written in the calling thread;
    claims always write the batch first, so the ledger's order of events is the order
    things happened."""

    def __init__(self, ledger: Ledger, *, flush_size: int = 256) -> None:
        self.ledger = ledger
        self.flush_size = flush_size
        self._buffer: list[DeliveryOutcome] = []
        self._written = 0

    @property
    def written(self) -> int:
        return self._written

    @property
    def unwritten(self) -> int:
        return len(self._buffer)

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        batch, self._buffer = self._buffer, []
        attempts = _write_journal(self.ledger, batch, [m.message_id for m in messages])
        self._written += len(batch)
        return attempts

    def record(self, outcome: DeliveryOutcome) -> None:
        self._buffer.append(outcome)
        if len(self._buffer) >= self.flush_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._written += self.ledger.record_outcomes(batch)

    async def settle(self) -> None:
        self.flush()


class ThreadedLedgerJournal:
    """LedgerJournal's writes, on a thread of their own with their own connection to the
    ledger file (`open` it first, `close` it after).

    SQLite does most of a message's ledger work (the inserts, COMMIT, checkpoints)
    without holding the GIL, so on a thread it runs beside the event loop, on another
    core, instead of stopping it. Writes go one at a time in the order they were asked
    for, so events keep the order things happened; a claim still returns only once it is
    committed. A failed write is raised by the next claim, `written` or `settle`.
    """

    def __init__(self, path: Path, *, flush_size: int = 256) -> None:
        self.path = path
        self.flush_size = flush_size
        self._buffer: list[DeliveryOutcome] = []
        self._written = 0
        # Writes handed to the thread and not yet seen done: (future, outcomes in it).
        self._pending: deque[tuple[concurrent.futures.Future[dict[str, int]], int]] = deque()
        self._pending_outcomes = 0
        self._raised: concurrent.futures.Future[dict[str, int]] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._ledger: Ledger | None = None  # used on the writer thread only

    async def open(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")
        await asyncio.wrap_future(self._executor.submit(self._connect))

    async def close(self) -> None:
        """Write what is left and close the connection (also after a failed write)."""
        if self._executor is None:
            return
        try:
            await self.settle()
        finally:
            self._executor.submit(self._disconnect)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _connect(self) -> None:
        self._ledger = Ledger(self.path, create=False)

    def _disconnect(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    @property
    def written(self) -> int:
        pending = self._pending
        while pending and pending[0][0].done():
            future, count = pending.popleft()
            self._pending_outcomes -= count
            failure = future.exception()
            if failure is None:
                self._written += count
            elif future is not self._raised:
                raise failure  # its outcomes were not written: they stay `sending`
        return self._written

    @property
    def unwritten(self) -> int:
        return len(self._buffer) + self._pending_outcomes

    def _submit(self, claim: list[str]) -> concurrent.futures.Future[dict[str, int]]:
        if self._executor is None:
            raise RuntimeError("the journal is not open")
        batch, self._buffer = self._buffer, []
        future = self._executor.submit(self._write, batch, claim)
        self._pending.append((future, len(batch)))
        self._pending_outcomes += len(batch)
        return future

    def _write(self, outcomes: list[DeliveryOutcome], claim: list[str]) -> dict[str, int]:
        assert self._ledger is not None
        return _write_journal(self._ledger, outcomes, claim)

    async def claim(self, messages: Sequence[OutgoingMessage]) -> dict[str, int]:
        future = self._submit([m.message_id for m in messages])
        try:
            # Shielded: a cancelled wait must not cancel the write (the thread does it).
            attempts = await asyncio.shield(asyncio.wrap_future(future))
        except Exception:
            self._raised = future  # raised here: `written` need not raise it again
            raise
        self.written  # noqa: B018 (collects the finished writes, raising a failed one)
        return attempts

    def record(self, outcome: DeliveryOutcome) -> None:
        self._buffer.append(outcome)
        if len(self._buffer) >= self.flush_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._submit([])

    async def settle(self) -> None:
        self.flush()
        if self._pending:
            # One writer thread, in order: the last write done means all are.
            last = asyncio.wrap_future(self._pending[-1][0])
            await asyncio.wait([last])  # its failure, if any, is raised by `written`
        self.written  # noqa: B018 (collects the finished writes, raising a failed one)


def _write_journal(
    ledger: Ledger, outcomes: Sequence[DeliveryOutcome], claim: Sequence[str]
) -> dict[str, int]:
    """Outcomes, then claims, in one transaction."""
    with ledger.transaction():
        if outcomes:
            ledger.record_outcomes(outcomes)
        return ledger.claim_for_sending(claim) if claim else {}


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
            if _is_certificate_error(exc):
                hint = (
                    "the server's certificate is not trusted: if it comes from your own "
                    "authority, name its certificate in [smtp] ca_file (or "
                    "NOTIFIER_SMTP_CA_FILE)"
                )
            else:
                hint = "is the server running? for a local test, start one with: notifier sink"
            raise DeliveryError(
                f"cannot use {self.target}: {describe_error(exc)}", field="--smtp", hint=hint
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
        finished = asyncio.Event()
        flusher = asyncio.create_task(self._flush_periodically(finished))
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
        finished.set()
        await flusher
        await self.journal.settle()
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
        attempts = await self.journal.claim(window)
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
            if self.journal.unwritten >= needed:
                await self.journal.settle()
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
        if self._flush_at and self.journal.unwritten >= self._flush_at:
            assert self._settled_event is not None
            self._settled_event.set()  # the waiting claim can flush and go on
        self.count_outcome(outcome)

    def record_unsent(self, outcome: DeliveryOutcome) -> None:
        """Record and count an outcome decided without sending (an address this server
        cannot carry, a message that cannot be composed), in order with the others."""
        self._claimed += 1  # never in flight: balances its written outcome
        self.journal.record(outcome)
        self.count_outcome(outcome)

    def count_outcome(self, outcome: DeliveryOutcome) -> None:
        """Count an outcome in the stats and show it."""
        if outcome.state != "deferred":
            self.stats.counts[outcome.state] = self.stats.counts.get(outcome.state, 0) + 1
        if self.progress is not None:
            self.progress(outcome)

    async def _flush_periodically(self, finished: asyncio.Event) -> None:
        # Outcomes reach the ledger within flush_interval, so `notifier status` is current
        # and a crash leaves few messages uncertain even when sending is slow. Not
        # cancelled but told to finish: a write it waits for must not be dropped.
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.options.flush_interval)
            except TimeoutError:
                pass
            if self.journal.unwritten:
                await self.journal.settle()
                if self._settled_event is not None:
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
        queue = self._queue
        assert queue is not None
        failures = 0
        job: _Job | None = None
        written = False  # job's envelope went out behind the previous message (pipelined)
        while True:
            if job is None:
                job = await queue.get()
                written = False
                if job is None:
                    queue.task_done()
                    break
            try:
                outcome, following, connection_failed = await self._attempt(session, job, written)
                if job.future is not None:
                    job.future.set_result(outcome)
                else:
                    self._first_attempt_done(job.message, outcome)
            finally:
                queue.task_done()
            job, written = following
            # A connection that cannot be opened: wait before the next try, so a server
            # that is down is not hammered and messages are not used up in a burst.
            failures = failures + 1 if connection_failed else 0
            if failures and not self.stopping:
                await self._sleep(min(self.options.backoff * 2 ** (failures - 1), 30.0))
        await session.quit()

    def _take_following(self) -> _Job | None:
        """The next queued job if one is waiting now (its envelope can share this write)."""
        assert self._queue is not None
        try:
            job = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if job is None:  # the end: leave it for the worker loop
            self._queue.put_nowait(None)
            self._queue.task_done()
        return job

    async def _attempt(
        self, session: SmtpSession, job: _Job, written: bool
    ) -> tuple[DeliveryOutcome, tuple[_Job | None, bool], bool]:
        """Send one message. Returns its outcome; the job taken from the queue to follow
        it on this connection, if any, and whether that one's envelope already went out
        (pipelined behind this message's content); and whether the connection could not
        be opened.

        The following job was claimed like any other. Only its envelope can have gone out
        with this message, so if the connection dies it is sent afresh on the next one:
        that is not an attempt, and no outcome is recorded for it here."""
        message = job.message
        code: int | None
        connection_failed = False
        following: _Job | None = None
        tail = b""
        try:
            if not session.connected:
                connection_failed = True
                await session.open()
                connection_failed = False
                written = False
            await session.envelope(message, written=written)
            if session.pipelining:
                following = self._take_following()
                if following is not None:
                    try:
                        tail = session.envelope_bytes(following.message)
                    except aiosmtplib.SMTPException:
                        pass  # an address that cannot be written: refused on its own turn
            response = await session.content(message, tail)
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
        return outcome, (following, bool(tail) and session.connected), connection_failed

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
            attempts = await self.journal.claim([message])
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
