"""One SMTP connection that carries many messages: connect, EHLO, STARTTLS, AUTH, then
each message lock-step or pipelined.

aiosmtplib opens the connection; then `ReplyReader` (notifier.smtp.protocol) takes the
transport over. With PIPELINING (RFC 2920) a message costs one write and one wait: its
content goes out with the next message's RSET, MAIL, RCPT and DATA behind it; without,
every command waits for its reply.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from aiosmtplib import SMTPResponse

from notifier.config import PASSWORD_ENV, USER_ENV, Credentials
from notifier.errors import FatalDeliveryError
from notifier.message import OutgoingMessage
from notifier.smtp.outcome import describe_error
from notifier.smtp.protocol import (
    PIPELINED_VERBS,
    ReplyReader,
    check_envelope_reply,
    envelope_address,
    esmtp_parameters,
    wire_form,
    xtext,
)
from notifier.smtp.target import SmtpTarget, check_transport, readable_ca_file


def this_host() -> str:
    """This machine's name for EHLO (getfqdn can be slow: look it up once per run)."""
    name = socket.getfqdn()
    return name if name and name.isascii() else "localhost"


@dataclass(frozen=True)
class SessionOptions:
    """How a session connects: the delivery options that concern one connection."""

    timeout: float = 30.0  # seconds for connecting and for each SMTP reply
    require_tls: bool = False
    validate_certs: bool = True
    ca_file: Path | None = None  # PEM CAs trusted besides the system's ([smtp] ca_file)
    local_hostname: str = "localhost"  # the EHLO name


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
        options: SessionOptions,
        credentials: Credentials | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.credentials = credentials
        self.info: ServerInfo | None = None
        self._reader: ReplyReader | None = None
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
            cert_bundle=str(readable_ca_file(opts.ca_file)) if opts.ca_file else None,
            local_hostname=opts.local_hostname,
        )
        response = await smtp.connect()
        try:
            if smtp.is_ehlo_or_helo_needed:
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()  # an old server without ESMTP
            tls = self.target.implicit_tls or smtp.get_transport_info("sslcontext") is not None
            check_transport(
                self.target,
                tls=tls,
                require_tls=opts.require_tls,
                with_password=self.credentials is not None,
            )
            if self.credentials is not None:
                await self._login(smtp, self.credentials)
            transport = smtp.transport
            if not isinstance(transport, asyncio.Transport) or transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        except BaseException:
            smtp.close()
            raise
        # From here on the connection is ours: aiosmtplib's object is dropped unused.
        self._reader = ReplyReader(transport)
        transport.set_protocol(self._reader)
        self._used = False
        self.info = ServerInfo(
            greeting=response.message,
            extensions=frozenset(smtp.esmtp_extensions),
            tls=tls,
        )
        return self.info

    async def _login(self, smtp: aiosmtplib.SMTP, credentials: Credentials) -> None:
        try:
            await smtp.login(credentials.user, credentials.password)
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

    def _reader_or_fail(self) -> ReplyReader:
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
        mail_params: list[tuple[str, str | None]] = []
        rcpt_params: list[tuple[str, str | None]] = []
        encoding = "ascii"
        if message.smtputf8:
            mail_params.append(("SMTPUTF8", None))
            encoding = "utf-8"
        if info.eightbitmime and not message.data.isascii():
            mail_params.append(("BODY", "8BITMIME"))
        if info.dsn:
            mail_params += [("ENVID", xtext(message.envelope_id)), ("RET", "HDRS")]
            rcpt_params.append(("NOTIFY", "FAILURE,DELAY"))
            if message.recipient.isascii():
                rcpt_params.append(("ORCPT", f"rfc822;{xtext(message.recipient)}"))
        mail_options = esmtp_parameters(mail_params)
        rcpt_options = esmtp_parameters(rcpt_params)
        mail = envelope_address(message.envelope_from, encoding)
        rcpt = envelope_address(message.recipient, encoding)
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
                check_envelope_reply(command[:4], await reader.reply(timeout))
            return
        if not written:
            reader.write(b"".join(self.envelope_commands(message, rset=rset)))
        refusal: aiosmtplib.SMTPResponseException | None = None
        for verb in PIPELINED_VERBS[0 if rset else 1 :]:
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
                check_envelope_reply(verb, reply)
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
