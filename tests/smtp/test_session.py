"""One SMTP session against a real server (aiosmtpd on 127.0.0.1, port 0): what it learns
from EHLO, messages lock-step and pipelined on one connection, refusals, TLS rules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiosmtplib
import pytest
from smtp_helpers import ScriptedHandler

from notifier.errors import FatalDeliveryError
from notifier.message import OutgoingMessage
from notifier.sink import Sink
from notifier.smtp.session import ServerInfo, SessionOptions, SmtpSession
from notifier.smtp.target import parse_smtp_url

OPTIONS = SessionOptions(timeout=5.0, local_hostname="client.localhost")


@pytest.fixture(params=["lockstep", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[Sink]:
    handler = ScriptedHandler(pipelining=request.param == "pipelining")
    with Sink(handler=handler) as sink:
        yield sink


def handler_of(sink: Sink) -> ScriptedHandler:
    assert isinstance(sink.handler, ScriptedHandler)
    return sink.handler


def message(n: int, recipient: str | None = None, data: bytes | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=f"<m{n}@example.org>",
        campaign_id="c",
        volunteer_id=f"V{n}",
        envelope_from=f"bounces+t{n}@example.org",
        envelope_id=f"t{n}",
        recipient=recipient or f"person{n}@example.com",
        data=data or f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
    )


def test_session_open_learns_what_the_server_offers(server: Sink) -> None:
    async def run() -> ServerInfo:
        session = SmtpSession(parse_smtp_url(server.url), OPTIONS)
        info = await session.open()
        assert session.connected
        await session.quit()
        assert not bool(session.connected)  # bool(): mypy kept the narrowing above
        return info

    info = asyncio.run(run())
    assert info.dsn and info.smtputf8 and not info.tls
    assert info.pipelining == handler_of(server).pipelining
    assert "sink.localhost" in info.greeting


def test_session_carries_many_messages_on_one_connection(server: Sink) -> None:
    """Each message: envelope, then content; pipelined, the next envelope goes out in the
    same write as this content, and the server sees RCPT before it answers MAIL."""
    messages = [message(n) for n in range(4)]
    messages[2] = message(2, data=b"Subject: dots\r\n\r\n.leading dot\r\n")

    async def run() -> list[str]:
        session = SmtpSession(parse_smtp_url(server.url), OPTIONS)
        await session.open()
        replies = []
        written = False
        for i, outgoing in enumerate(messages):
            await session.envelope(outgoing, written=written)
            following = b""
            if session.pipelining and i + 1 < len(messages):
                following = session.envelope_bytes(messages[i + 1])
            reply = await session.content(outgoing, following)
            replies.append(reply.message)
            written = bool(following)
        await session.quit()
        return replies

    replies = asyncio.run(run())
    handler = handler_of(server)
    received = server.messages
    assert [m.rcpt_tos for m in received] == [(m.recipient,) for m in messages]
    assert [m.data for m in received] == [m.data for m in messages]  # dots unstuffed again
    assert all("queued as" in reply for reply in replies)
    assert handler.rsets == 3  # RSET between messages, not before the first
    assert handler.rcpt_before_mail_reply == [handler.pipelining] * 4
    assert all(f"ENVID=t{n}" in m.mail_options for n, m in enumerate(received))


def test_session_refused_recipient_raises_and_the_connection_goes_on(server: Sink) -> None:
    refused = message(1, recipient="nobody@example.com")
    script = handler_of(server).script
    script["nobody@example.com"] = ["550"]

    async def run() -> None:
        session = SmtpSession(parse_smtp_url(server.url), OPTIONS)
        await session.open()
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
            await session.envelope(refused)
        assert caught.value.code == 550  # the RCPT's reply, not what DATA got after it
        assert session.connected
        await session.envelope(message(2))
        assert (await session.content(message(2))).code == 250
        await session.quit()

    asyncio.run(run())
    assert [m.rcpt_tos for m in server.messages] == [("person2@example.com",)]


def test_session_require_tls_refuses_a_server_without_starttls() -> None:
    with Sink() as server:

        async def run() -> None:
            options = SessionOptions(timeout=5.0, require_tls=True)
            session = SmtpSession(parse_smtp_url(server.url), options)
            with pytest.raises(FatalDeliveryError, match="STARTTLS"):
                await session.open()
            assert not session.connected

        asyncio.run(run())
        assert server.messages == []


def test_session_address_that_cannot_be_written_is_refused_before_sending(server: Sink) -> None:
    async def run() -> None:
        session = SmtpSession(parse_smtp_url(server.url), OPTIONS)
        await session.open()
        bad = message(1, recipient="a@example.org>\r\nRSET")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            session.envelope_bytes(bad)
        await session.quit()

    asyncio.run(run())
