"""An SMTP sink: a local server that keeps what it receives, for demos and tests.

`notifier sink` runs one on 127.0.0.1:8025 so a whole campaign can be sent end to end on
a fresh machine with nothing else installed. It advertises SMTPUTF8 and (unless told not
to) DSN, accepting the DSN parameters notifier sends (ENVID, RET, NOTIFY, ORCPT) and
keeping them with each message. Chosen addresses can be deferred (451) or rejected (550)
to see how a campaign records those outcomes.

It runs its own event loop in a background thread, so it serves a `notifier send` in the
same process (tests) as well as one in another process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mailbox
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from notifier.files import prepare_maildir

log = logging.getLogger(__name__)

# Parameters of the DSN extension (RFC 3461), which aiosmtpd does not implement itself.
_DSN_MAIL_PARAMS = ("ENVID", "RET")
_DSN_RCPT_PARAMS = ("NOTIFY", "ORCPT")


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: datetime
    queue_id: str
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[str, ...] = ()
    smtputf8: bool = False


def _split_params(arg: str, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """`arg` without the named ESMTP parameters, and those parameters."""
    head, sep, rest = arg.partition(">")
    if not sep:
        return arg, []
    kept: list[str] = []
    taken: list[str] = []
    for word in rest.split():
        name = word.partition("=")[0].upper()
        (taken if name in names else kept).append(word)
    return " ".join([head + sep, *kept]), taken


class SinkSMTP(SMTP):
    """aiosmtpd's server, taught to accept (and record) the DSN parameters."""

    def __init__(self, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink_handler = handler

    async def smtp_MAIL(self, arg: str | None) -> None:
        taken: list[str] = []
        if arg and self.sink_handler.dsn:
            arg, taken = _split_params(arg, _DSN_MAIL_PARAMS)
        if await self._refused_empty(taken):
            return
        await super().smtp_MAIL(arg)
        if taken and self.envelope is not None and self.envelope.mail_from:
            self.envelope.mail_options.extend(taken)

    async def smtp_RCPT(self, arg: str | None) -> None:
        taken: list[str] = []
        if arg and self.sink_handler.dsn:
            arg, taken = _split_params(arg, _DSN_RCPT_PARAMS)
        if await self._refused_empty(taken):
            return
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        if taken and self.envelope is not None and len(self.envelope.rcpt_tos) > before:
            self.envelope.rcpt_options.extend(taken)

    async def _refused_empty(self, params: list[str]) -> bool:
        """Refuse a parameter with an empty value as Postfix does (RFC 5321: a value has
        at least one character), so that a client sending one fails here, not first
        against a real server."""
        for param in params:
            name, equals, value = param.partition("=")
            if equals and not value:
                await self.push(f"501 5.5.4 Bad {name.upper()} parameter syntax")
                return True
        return False


class SinkHandler:
    """Stores every message; defers or rejects chosen recipients.

    Subclass and override `rcpt_reply` or `data_reply` for servers that misbehave on
    purpose (tests do: 421, dropped connections, stalls).
    """

    def __init__(
        self,
        *,
        maildir: Path | None = None,
        defer: Iterable[str] = (),
        reject: Iterable[str] = (),
        dsn: bool = True,
        keep: bool = True,
        listener: Callable[[ReceivedMessage], None] | None = None,
    ) -> None:
        # An existing empty folder is made a Maildir; an unusable path is one OutputError.
        self.maildir = mailbox.Maildir(prepare_maildir(maildir), create=False) if maildir else None
        self.maildir_path = maildir
        self.keep = keep  # keep messages in memory (tests); a long-running sink does not
        self.listener = listener
        self.count = 0
        self.defer = {a.casefold() for a in defer}
        self.reject = {a.casefold() for a in reject}
        self.dsn = dsn
        self.messages: list[ReceivedMessage] = []
        self.refused: list[tuple[str, str]] = []  # (address, reply)
        self.rsets = 0
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(2).upper()

    # -- hooks aiosmtpd calls

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        return responses

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.rsets += 1
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_reply(address)
        if reply is not None:
            with self._lock:
                self.refused.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await self.data_reply(server, envelope)
        if reply is not None:
            return reply
        queue_id = f"{self._prefix}{next(self._ids):06X}"
        data = envelope.original_content or b""
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            received_at=datetime.now(UTC),
            queue_id=queue_id,
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(envelope.rcpt_options),
            smtputf8=bool(envelope.smtp_utf8),
        )
        try:
            self.store(message)
        except OSError as exc:
            # A full disk or a Maildir removed under us: a temporary failure, said in one
            # line, so the sender retries later rather than recording a permanent one.
            log.warning("cannot store a message in the Maildir %s: %s", self.maildir_path, exc)
            return "451 4.3.0 cannot store the message now; try again later"
        return f"250 2.0.0 Ok: queued as {queue_id}"

    # -- policy, for subclasses

    def rcpt_reply(self, address: str) -> str | None:
        """The reply to RCPT TO for this address, or None to accept it."""
        key = address.casefold()
        if key in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if key in self.defer:
            return f"451 4.7.1 <{address}>: Recipient address deferred: try again later"
        return None

    async def data_reply(self, server: SMTP, envelope: Envelope) -> str | None:
        """The reply at the end of DATA, or None to store the message and accept it."""
        return None

    # -- storage

    def store(self, message: ReceivedMessage) -> None:
        if self.maildir is not None:
            # What a delivering MTA adds: where bounces go, and who it was for.
            trace = (
                f"Return-Path: <{message.mail_from}>\r\n"
                + "".join(f"Delivered-To: {r}\r\n" for r in message.rcpt_tos)
            ).encode("utf-8")
            self.maildir.add(trace + message.data)
        with self._lock:
            self.count += 1
            if self.keep:
                self.messages.append(message)
            self._lock.notify_all()
        if self.listener is not None:
            self.listener(message)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least `count` messages arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self.count >= count, timeout)

    def received(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self.messages)


# The sinks running in this process, by (host, port). What is sent to one stays on this
# machine (in memory, or its Maildir): the only place a message carrying the shipped
# example's stand-ins may go (notifier.service).
_RUNNING: set[tuple[str, int]] = set()
_RUNNING_LOCK = threading.Lock()


def is_running_sink(host: str, port: int) -> bool:
    """Whether a Sink of this process listens at host:port now."""
    with _RUNNING_LOCK:
        return (host, port) in _RUNNING


class Sink:
    """A running SMTP sink. `with Sink() as sink: ... sink.port ...`; port 0 picks one."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        handler: SinkHandler | None = None,
        maildir: Path | None = None,
        defer: Iterable[str] = (),
        reject: Iterable[str] = (),
        dsn: bool = True,
        smtputf8: bool = True,
        timeout: float = 300.0,
        smtp_options: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.smtp_options = smtp_options or {}  # more aiosmtpd SMTP arguments (AUTH, TLS)
        self.requested_port = port
        self.handler = handler or SinkHandler(maildir=maildir, defer=defer, reject=reject, dsn=dsn)
        self.smtputf8 = smtputf8
        self.timeout = timeout
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self.handler.received()

    def _factory(self) -> SinkSMTP:
        return SinkSMTP(
            self.handler,
            enable_SMTPUTF8=self.smtputf8,
            hostname="sink.localhost",
            ident="notifier sink",
            timeout=self.timeout,
            **self.smtp_options,
        )

    def start(self) -> Sink:
        self._thread = threading.Thread(target=self._run, name="smtp-sink", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if not self.port:
            raise RuntimeError("the SMTP sink did not start within 10 s")
        with _RUNNING_LOCK:
            _RUNNING.add((self.host, self.port))
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                loop.create_server(self._factory, self.host, self.requested_port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            # Connections still open (a stalled test client) are dropped with the loop.
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self) -> None:
        with _RUNNING_LOCK:
            _RUNNING.discard((self.host, self.port))
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
