"""The SMTP sink: what it advertises, keeps, defers and rejects; and `notifier sink`."""

from __future__ import annotations

import mailbox
import os
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.sink import Sink

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nHello.\r\n"


def test_sink_keeps_messages_with_envelope_and_dsn_parameters(tmp_path: Path) -> None:
    with Sink(maildir=tmp_path / "mail") as sink, smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        assert client.has_extn("dsn")
        assert client.has_extn("smtputf8")
        client.sendmail(
            "bounces+tok@example.org",
            ["b@example.com"],
            MESSAGE,
            mail_options=["ENVID=tok", "RET=HDRS"],
            rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;b@example.com"],
        )
        assert sink.handler.wait_for(1, timeout=5)
        received = sink.messages
    assert len(received) == 1
    message = received[0]
    assert message.mail_from == "bounces+tok@example.org"
    assert message.rcpt_tos == ("b@example.com",)
    assert message.data == MESSAGE
    assert {"ENVID=tok", "RET=HDRS"} <= set(message.mail_options)  # smtplib adds SIZE=
    assert message.rcpt_options == ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;b@example.com")
    assert message.received_at.tzinfo is not None
    stored = list(mailbox.Maildir(tmp_path / "mail", create=False))
    assert len(stored) == 1
    assert stored[0]["Return-Path"] == "<bounces+tok@example.org>"
    assert stored[0]["Subject"] == "hello"


def test_sink_defers_and_rejects_chosen_addresses() -> None:
    with (
        Sink(defer=["Later@example.com"], reject=["gone@example.com"]) as sink,
        smtplib.SMTP("127.0.0.1", sink.port) as client,
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@example.org", ["later@example.com", "gone@example.com"], MESSAGE)
        codes = {addr: code for addr, (code, _text) in refused.value.recipients.items()}
        assert codes == {"later@example.com": 451, "gone@example.com": 550}
        client.rset()
        client.sendmail("a@example.org", ["ok@example.com"], MESSAGE)
        assert sink.handler.wait_for(1, timeout=5)
        assert [m.rcpt_tos for m in sink.messages] == [("ok@example.com",)]


def test_sink_without_dsn_refuses_dsn_parameters() -> None:
    with Sink(dsn=False) as sink, smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        assert not client.has_extn("dsn")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE, mail_options=["RET=HDRS"])
        assert refused.value.smtp_code == 555


def test_sink_accepts_smtputf8() -> None:
    data = "From: a@example.org\r\nTo: すずき@例え.jp\r\n\r\nこんにちは\r\n".encode()
    with Sink() as sink, smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail("a@example.org", ["すずき@例え.jp"], data, mail_options=["SMTPUTF8"])
        assert sink.handler.wait_for(1, timeout=5)
        message = sink.messages[0]
    assert message.rcpt_tos == ("すずき@例え.jp",)
    assert message.smtputf8
    assert message.data == data


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-empty-folder"])
def test_sink_command_runs_until_ctrl_c(tmp_path: Path, existing: bool) -> None:
    """An existing empty folder is made a Maildir: it stores, never answers 500."""
    if existing:
        (tmp_path / "m").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifier", "sink", "--port", "0", "--maildir", str(tmp_path / "m")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the sink says where it listens
        match = re.search(r"smtp://127\.0\.0\.1:(\d+)", first)
        assert match, first
        with smtplib.SMTP("127.0.0.1", int(match.group(1))) as client:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "1 message received" in out
    assert len(list(mailbox.Maildir(tmp_path / "m", create=False))) == 1
