"""SMTP on the wire: the reply reader that pipelining needs, and the bytes commands carry.

`ReplyReader` takes a connection over once aiosmtplib has opened it (EHLO, STARTTLS,
AUTH) and reads any number of replies per packet, which is where pipelined replies
(RFC 2920) come. `wire_form` is a message as it goes after DATA; `xtext` (RFC 3461) and
`envelope_address` write the MAIL and RCPT parameters.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib import SMTPResponse


class ProtocolError(aiosmtplib.SMTPException):
    """The server's answer is not SMTP (a reply line without a code, or no line end)."""


_MAX_REPLY_BUFFER = 64 * 1024  # a reply line is at most 512 bytes (RFC 5321 4.5.3.1.5)


class ReplyReader(asyncio.Protocol):
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
                self._fail(ProtocolError("a reply line without an end"))
                return
            self._buffer += data[cut:]
            data = data[:cut]
        for line in data.splitlines():
            if len(line) < 3 or not line[:3].isdigit():
                self._fail(ProtocolError(f"not an SMTP reply: {line[:80]!r}"))
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


# The envelope commands, in the order they go out; RSET only on a used connection.
PIPELINED_VERBS = (b"RSET", b"MAIL", b"RCPT", b"DATA")
_ENVELOPE_EXPECTED = {b"RSET": (250,), b"MAIL": (250,), b"RCPT": (250, 251), b"DATA": (354,)}


def check_envelope_reply(verb: bytes, reply: SMTPResponse) -> None:
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
    notifier.message.OutgoingMessage.wire).
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


def envelope_address(address: str, encoding: str) -> bytes:
    """`<address>` for MAIL FROM or RCPT TO; an address that could break the command is
    refused here (553), before anything is written."""
    if _ENVELOPE_UNSAFE.search(address) or address.count("@") < 1:
        raise aiosmtplib.SMTPRecipientRefused(
            553, f"not a valid envelope address: {address!r}", address
        )
    return f"<{address}>".encode(encoding)


def esmtp_parameters(params: Sequence[tuple[str, str | None]]) -> str:
    """MAIL or RCPT parameters as they follow the address: ` KEY=VALUE` each, ` KEY` for a
    keyword alone (None). A parameter whose value is empty is left out: RFC 5321 has no
    empty value (esmtp-value is 1*CHAR), and a strict server (Postfix) refuses the whole
    command for one (`501 5.5.4 Bad ENVID parameter syntax`)."""
    return "".join(
        f" {key}" if value is None else f" {key}={value}" for key, value in params if value != ""
    )


_XTEXT_SAFE = re.compile(r"[!-*,-<>-~]*")  # printable ASCII but "+" and "="
_ENVELOPE_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except `+` and `=`, the rest as +HH."""
    if _XTEXT_SAFE.fullmatch(value):
        return value
    return "".join(
        ch if 33 <= ord(ch) <= 126 and ch not in "+=" else f"+{ord(ch):02X}" for ch in value
    )
