"""SMTP on the wire: the reply reader (against a real TCP server on 127.0.0.1 that answers
in scripted packets), the DATA content, and the envelope parameters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiosmtplib
import pytest
from smtp_helpers import make_volunteers

from notifier.campaign import load_campaign
from notifier.compose import Composer
from notifier.compose_pool import ComposeJob, compose_jobs
from notifier.render import Renderer
from notifier.smtp.protocol import (
    ProtocolError,
    ReplyReader,
    check_envelope_reply,
    envelope_address,
    wire_form,
    xtext,
)

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


def talk(script: Script, check: Callable[[ReplyReader], Awaitable[None]]) -> None:
    """Connect to a server that runs `script` once the client says GO, hand the
    connection to a ReplyReader, and run `check` on it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await script(writer)

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            transport = writer.transport
            assert isinstance(transport, asyncio.Transport)
            replies = ReplyReader(transport)
            transport.set_protocol(replies)
            replies.write(b"GO\r\n")
            try:
                await check(replies)
            finally:
                replies.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def packets(*chunks: bytes, pause: float = 0.05, close: bool = False) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)

    return script


def test_protocol_reader_takes_many_replies_from_one_packet() -> None:
    async def check(replies: ReplyReader) -> None:
        got = [await replies.reply(2.0) for _ in range(3)]
        assert [(r.code, r.message) for r in got] == [
            (250, "first"),
            (250, "a\nb\nc"),  # a multiline reply is one reply
            (354, "go ahead"),
        ]

    talk(packets(b"250 first\r\n250-a\r\n250-b\r\n250 c\r\n354 go ahead\r\n"), check)


def test_protocol_reader_joins_a_reply_split_across_packets() -> None:
    async def check(replies: ReplyReader) -> None:
        reply = await replies.reply(2.0)
        assert (reply.code, reply.message) == (250, "2.0.0 Ok: queued as ABC")

    talk(packets(b"25", b"0 2.0.0 Ok: queu", b"ed as ABC\r\n"), check)


def test_protocol_reader_refuses_what_is_not_smtp() -> None:
    async def check(replies: ReplyReader) -> None:
        with pytest.raises(ProtocolError, match="not an SMTP reply"):
            await replies.reply(2.0)
        assert not replies.open

    talk(packets(b"HTTP/1.1 400 Bad Request\r\n"), check)


def test_protocol_reader_times_out_and_notices_a_closed_connection() -> None:
    async def silent(replies: ReplyReader) -> None:
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            await replies.reply(0.2)
        assert not replies.open
        with pytest.raises(aiosmtplib.SMTPException):
            replies.write(b"NOOP\r\n")  # nothing more goes out on a failed connection

    async def closed(replies: ReplyReader) -> None:
        assert (await replies.reply(2.0)).code == 221
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await replies.reply(2.0)

    talk(packets(), silent)
    talk(packets(b"221 bye\r\n", close=True), closed)


def test_protocol_envelope_replies_raise_the_matching_error() -> None:
    ok = aiosmtplib.SMTPResponse(250, "ok")
    check_envelope_reply(b"MAIL", ok)
    check_envelope_reply(b"RCPT", aiosmtplib.SMTPResponse(251, "will forward"))
    check_envelope_reply(b"DATA", aiosmtplib.SMTPResponse(354, "go ahead"))
    with pytest.raises(aiosmtplib.SMTPSenderRefused):
        check_envelope_reply(b"MAIL", aiosmtplib.SMTPResponse(553, "no"))
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        check_envelope_reply(b"RCPT", aiosmtplib.SMTPResponse(550, "no such user"))
    with pytest.raises(aiosmtplib.SMTPDataError):
        check_envelope_reply(b"DATA", aiosmtplib.SMTPResponse(554, "no"))


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b".a\r\n..b\r\nc.\r\n", b"..a\r\n...b\r\nc.\r\n"),  # leading dots doubled
        (b"a\nb\rc", b"a\r\nb\r\nc\r\n"),  # bare LF and CR, no final line break
        (b"a\n.b", b"a\r\n..b\r\n"),
        (b"", b"\r\n"),
    ],
)
def test_protocol_wire_form_line_endings_and_dots(data: bytes, wire: bytes) -> None:
    assert wire_form(data) == wire


def test_protocol_wire_form_of_composed_messages_needs_only_the_dots() -> None:
    """Composers hand wire_form(data, crlf=True) over: it must equal the full check for
    what build_message writes (quoted-printable puts dots at line starts)."""
    campaign = load_campaign("2020-03-breach")
    composer = Composer(campaign, Renderer(campaign))
    composed = compose_jobs(composer, [ComposeJob(v, False) for v in make_volunteers(24)])
    dotted = 0
    for item in composed:
        assert item.data is not None and item.wire is not None
        assert item.wire == wire_form(item.data) == wire_form(item.data, crlf=True)
        dotted += item.wire is not item.data
    assert dotted  # the dot case is really exercised


def test_protocol_xtext_encodes_plus_and_equals() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("bounces+abc@example.org") == "bounces+2Babc@example.org"
    assert xtext("plain") == "plain"


def test_protocol_envelope_address_keeps_the_command_in_one_piece() -> None:
    assert envelope_address("a@example.org", "ascii") == b"<a@example.org>"
    assert envelope_address("すずき@例え.jp", "utf-8") == "<すずき@例え.jp>".encode()
    for bad in ("a@example.org>\r\nRCPT TO:<b@example.org", "a b@example.org", "nobody"):
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            envelope_address(bad, "ascii")
        assert caught.value.code == 553
