"""Where to send and how safely: SMTP URLs, the password rule, the CA file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from notifier.errors import DeliveryError, FatalDeliveryError
from notifier.smtp.target import (
    SmtpTarget,
    check_transport,
    connection_hint,
    is_certificate_error,
    is_loopback,
    parse_smtp_url,
    readable_ca_file,
)


def test_target_parse_smtp_url() -> None:
    assert str(parse_smtp_url("smtp://127.0.0.1:8025")) == "smtp://127.0.0.1:8025"
    target = parse_smtp_url("smtps://mail.example.org")
    assert (target.port, target.implicit_tls) == (465, True)
    assert parse_smtp_url("smtp://mail.example.org").port == 25
    assert str(parse_smtp_url("smtp://[::1]:2525")) == "smtp://[::1]:2525"
    for bad in ("http://x", "smtp://", "smtp://mail.example.org:port"):
        with pytest.raises(DeliveryError):
            parse_smtp_url(bad)


def test_target_credentials_do_not_belong_in_the_url() -> None:
    with pytest.raises(DeliveryError, match="credentials") as caught:
        parse_smtp_url("smtp://user:secret@mail.example.org")
    assert "secret" not in str(caught.value)
    assert "NOTIFIER_SMTP_PASSWORD" in str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("[::1]", True),
        ("::1", True),
        ("192.0.2.10", False),
        ("mail.example.org", False),
    ],
)
def test_target_password_is_sent_without_tls_only_to_this_machine(
    host: str, loopback: bool
) -> None:
    assert is_loopback(host) is loopback
    target = SmtpTarget("smtp", host.strip("[]"), 25)
    if loopback:
        check_transport(target, tls=False, require_tls=False, with_password=True)
    else:
        with pytest.raises(FatalDeliveryError, match="unencrypted"):
            check_transport(target, tls=False, require_tls=False, with_password=True)
    check_transport(target, tls=True, require_tls=True, with_password=True)


def test_target_require_tls_refuses_a_connection_without_it() -> None:
    target = SmtpTarget("smtp", "127.0.0.1", 25)
    with pytest.raises(FatalDeliveryError, match="STARTTLS"):
        check_transport(target, tls=False, require_tls=True, with_password=False)
    check_transport(target, tls=False, require_tls=False, with_password=False)


def test_target_ca_file_must_be_there(tmp_path: Path) -> None:
    present = tmp_path / "ca.pem"
    present.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    assert readable_ca_file(present) == present
    with pytest.raises(FatalDeliveryError, match="CA file") as caught:
        readable_ca_file(tmp_path / "absent.pem")
    assert caught.value.field == "smtp.ca_file"


def test_target_certificate_errors_are_told_apart_even_when_wrapped() -> None:
    verify = ssl.SSLCertVerificationError("certificate verify failed")
    wrapped = ConnectionError("cannot connect")
    wrapped.__cause__ = verify
    assert is_certificate_error(verify)
    assert is_certificate_error(wrapped)
    assert is_certificate_error(OSError("[SSL: CERTIFICATE_VERIFY_FAILED] oops"))
    assert not is_certificate_error(ConnectionRefusedError("refused"))
    assert "ca_file" in connection_hint(wrapped)
    assert "notifier sink" in connection_hint(ConnectionRefusedError("refused"))
