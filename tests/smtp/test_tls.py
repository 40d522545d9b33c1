"""Delivery over TLS, against real servers: STARTTLS when offered, `smtps://` from the first
byte, `--require-tls`, and AUTH with credentials from the environment.

The servers are aiosmtpd (the notifier sink) on 127.0.0.1, port 0, with a self-signed
certificate made for the test; the client trusts it through `[smtp] ca_file` (the
`ca_file` send option). Each server records, per message, whether the connection was
encrypted and who had authenticated on it, so the tests check the session itself, not
only that mail arrived. The password is checked to appear in no file the run wrote and
in no output or log line.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path

import pytest
from conftest import ORG_SETTINGS, Notifier
from smtp_helpers import add_volunteers, approve_shipped, make_volunteers, recipients, send
from tls_helpers import (
    ImplicitTlsSink,
    SelfSignedCertificate,
    TlsRecordingHandler,
    TlsSink,
    make_certificate,
    needs_openssl,
)

from notifier.campaign import Campaign, load_campaign
from notifier.config import PASSWORD_ENV, USER_ENV, credentials_from_env, load_settings
from notifier.errors import ConfigError, DeliveryError
from notifier.ledger import Ledger
from notifier.sink import Sink
from notifier.volunteer import Volunteer

pytestmark = [
    needs_openssl,
    # aiosmtpd only knows STARTTLS; the smtps:// server lets AUTH through on its own TLS.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

CAMPAIGN = "2020-03-breach"
USER = "notifier-relay"
CA_ENV = "NOTIFIER_SMTP_CA_FILE"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCertificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(CAMPAIGN)


@pytest.fixture
def people(ledger: Ledger) -> list[Volunteer]:
    volunteers = make_volunteers(8)
    add_volunteers(ledger, volunteers)
    approve_shipped(ledger, CAMPAIGN)
    return volunteers


@pytest.fixture
def password() -> str:
    # Distinctive, so finding it anywhere cannot be a coincidence.
    return f"pw-{secrets.token_hex(12)}"


@pytest.fixture
def no_smtp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (USER_ENV, PASSWORD_ENV, CA_ENV):
        monkeypatch.delenv(var, raising=False)


def secret_forms(password: str) -> list[bytes]:
    """The password as it could leak: plain, and inside AUTH PLAIN / LOGIN payloads."""
    plain = password.encode("utf-8")
    return [
        plain,
        base64.b64encode(plain),
        base64.b64encode(b"\0" + USER.encode("ascii") + b"\0" + plain),
    ]


def files_containing(directory: Path, needles: list[bytes]) -> list[Path]:
    """Files under `directory` (the ledger, its WAL, the VERP key ...) holding any needle."""
    return [
        path
        for path in directory.rglob("*")
        if path.is_file() and any(n in path.read_bytes() for n in needles)
    ]


def assert_all_encrypted(server: Sink, *, starttls: bool, user: str | None = None) -> None:
    facts = server.tls_handler.facts  # type: ignore[attr-defined]
    assert facts, "the server received nothing"
    assert all(f.encrypted for f in facts), facts
    assert all(f.tls_version in ("TLSv1.2", "TLSv1.3") for f in facts), facts
    assert all(f.starttls is starttls for f in facts), facts
    assert all(f.user == user for f in facts), facts


# --- STARTTLS ----------------------------------------------------------------------------


def test_tls_starttls_is_used_when_the_server_offers_it(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    no_smtp_env: None,
) -> None:
    # require_starttls: the server refuses MAIL on a plain connection, so a message can
    # only arrive if the client upgraded first.
    with TlsSink(certificate, require_starttls=True) as server:
        summary = send(
            ledger, campaign, people, server.url, concurrency=2, ca_file=certificate.cert_file
        )
        messages = server.messages
        assert_all_encrypted(server, starttls=True)

    assert summary.counts == {"sent": 8}
    assert summary.server is not None and summary.server.tls
    assert recipients(messages) == {v.email: 1 for v in people}
    assert ledger.state_counts(CAMPAIGN) == {"sent": 8}


@pytest.mark.parametrize("kind", ["starttls", "smtps"])
def test_tls_require_tls_succeeds_over_tls(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    no_smtp_env: None,
    kind: str,
) -> None:
    server: Sink = TlsSink(certificate) if kind == "starttls" else ImplicitTlsSink(certificate)
    with server:
        summary = send(
            ledger, campaign, people, server.url, require_tls=True, ca_file=certificate.cert_file
        )
        assert_all_encrypted(server, starttls=kind == "starttls")
    assert summary.counts == {"sent": 8}
    assert summary.target.startswith("smtps://" if kind == "smtps" else "smtp://")


# --- implicit TLS ------------------------------------------------------------------------


def test_tls_smtps_url_speaks_tls_from_the_first_byte(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    no_smtp_env: None,
) -> None:
    with ImplicitTlsSink(certificate) as server:
        assert server.url.startswith("smtps://")
        summary = send(
            ledger, campaign, people, server.url, concurrency=3, ca_file=certificate.cert_file
        )
        messages = server.messages
        assert_all_encrypted(server, starttls=False)
    assert summary.counts == {"sent": 8}
    assert recipients(messages) == {v.email: 1 for v in people}
    sent = list(ledger.events(campaign_id=CAMPAIGN, kinds=["sent"]))
    assert {e.data["queue_id"] for e in sent} == {m.queue_id for m in messages}


# --- certificates ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["starttls", "smtps"])
def test_tls_untrusted_certificate_stops_the_send_before_any_claim(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    no_smtp_env: None,
    kind: str,
) -> None:
    """Without the CA file the self-signed certificate is refused, and the client does not
    fall back to a plain connection."""
    server: Sink = TlsSink(certificate) if kind == "starttls" else ImplicitTlsSink(certificate)
    with server, pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        send(ledger, campaign, people, server.url)
    assert server.messages == []
    assert ledger.state_counts(CAMPAIGN) == {"pending": 8}  # nothing claimed


def test_tls_missing_ca_file_is_a_clean_error(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    tmp_path: Path,
    no_smtp_env: None,
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with ImplicitTlsSink(certificate) as server, pytest.raises(DeliveryError) as raised:
        send(ledger, campaign, people, server.url, ca_file=missing)
    assert raised.value.field == "smtp.ca_file"
    assert raised.value.file == str(missing)
    assert server.messages == []
    assert ledger.state_counts(CAMPAIGN) == {"pending": 8}


def test_tls_ca_file_comes_from_the_config_file_or_the_environment(
    tmp_path: Path,
) -> None:
    config = tmp_path / "notifier.toml"
    config.write_text('[smtp]\nurl = "smtps://mail.example.org"\nca_file = "relay-ca.pem"\n')
    # A path in the settings is relative to the settings file's folder, wherever the
    # command runs; one from the environment is as given.
    assert load_settings(config, env={}).smtp_ca_file == tmp_path / "relay-ca.pem"
    from_env = load_settings(config, env={CA_ENV: "/etc/ssl/other.pem"})
    assert from_env.smtp_ca_file == Path("/etc/ssl/other.pem")
    config.write_text('[smtp]\nurl = "smtps://mail.example.org"\n')
    assert load_settings(config, env={}).smtp_ca_file is None
    config.write_text("[smtp]\nca_file = [1, 2]\n")
    with pytest.raises(ConfigError):
        load_settings(config, env={})


# --- AUTH over TLS -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["starttls", "smtps"])
def test_tls_authenticates_over_tls_with_credentials_from_the_environment(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    password: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, password)
    monkeypatch.delenv(CA_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    server: Sink
    if kind == "starttls":
        # auth_require_tls: AUTH is neither offered nor accepted before STARTTLS.
        server = TlsSink(certificate, password=password)
    else:
        server = ImplicitTlsSink(certificate, password=password)
    with server:
        summary = send(
            ledger, campaign, people, server.url, concurrency=2, ca_file=certificate.cert_file
        )
        handler = server.tls_handler
        assert_all_encrypted(server, starttls=kind == "starttls", user=USER)
        # one login per connection, each with the right user and password
        assert 1 <= len(handler.logins) <= 2
        assert set(handler.logins) == {(USER, True)}

    assert summary.counts == {"sent": 8}
    assert files_containing(tmp_path, secret_forms(password)) == []
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.")]
    assert not [line for line in ours if password in line]
    assert password not in repr(credentials_from_env())


def test_tls_refused_credentials_stop_the_send_and_the_password_stays_out(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    certificate: SelfSignedCertificate,
    password: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    monkeypatch.delenv(CA_ENV, raising=False)
    with (
        TlsSink(certificate, password=password) as server,
        pytest.raises(DeliveryError, match="refused the credentials") as raised,
    ):
        send(ledger, campaign, people, server.url, ca_file=certificate.cert_file)
    logins = server.tls_handler.logins  # type: ignore[attr-defined]
    assert logins and set(logins) == {(USER, False)}  # PLAIN, then LOGIN: both refused
    assert server.messages == []
    assert ledger.state_counts(CAMPAIGN) == {"pending": 8}
    assert wrong not in str(raised.value)
    assert files_containing(tmp_path, secret_forms(wrong)) == []


def test_tls_require_tls_never_sends_credentials_in_the_clear(
    ledger: Ledger,
    people: list[Volunteer],
    campaign: Campaign,
    password: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server without STARTTLS that would take AUTH in the clear: with --require-tls the
    send stops before AUTH, so the password never crosses the wire unencrypted."""
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, password)
    monkeypatch.delenv(CA_ENV, raising=False)
    handler = TlsRecordingHandler(password=password)
    options = {
        "authenticator": handler.authenticate,
        "auth_required": True,
        "auth_require_tls": False,
    }
    with (
        Sink(handler=handler, smtp_options=options) as server,
        pytest.raises(DeliveryError, match="STARTTLS"),
    ):
        send(ledger, campaign, people, server.url, require_tls=True)
    assert handler.logins == []
    assert server.messages == []
    assert ledger.state_counts(CAMPAIGN) == {"pending": 8}


# --- the command, end to end -------------------------------------------------------------


def test_tls_cli_sends_over_smtps_with_config_and_environment(
    notifier: Notifier,
    ledger: Ledger,
    people: list[Volunteer],
    certificate: SelfSignedCertificate,
    password: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`notifier send --yes --require-tls` with the target and CA in notifier.toml and the
    credentials in the environment: the way an operator runs it against a real relay."""
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, password)
    monkeypatch.delenv(CA_ENV, raising=False)
    with ImplicitTlsSink(certificate, password=password) as server:
        (tmp_path / "notifier.toml").write_text(
            ORG_SETTINGS.read_text(encoding="utf-8")
            + f'[smtp]\nurl = "{server.url}"\nca_file = "{certificate.cert_file.as_posix()}"\n',
            encoding="utf-8",
        )
        dry = notifier("send", CAMPAIGN)
        result = notifier("send", CAMPAIGN, "--yes", "--require-tls", "--timeout", "5")
        assert_all_encrypted(server, starttls=False, user=USER)
        messages = server.messages
    status = notifier("status", CAMPAIGN, "--format", "json")

    assert dry.exit_code == 0, dry.output
    assert server.url in dry.stdout
    assert result.exit_code == 0, result.output
    assert recipients(messages) == {v.email: 1 for v in people}
    assert json.loads(status.stdout)["counts"] == {"sent": 8}
    for output in (dry.stdout, dry.stderr, result.stdout, result.stderr, status.stdout):
        assert password not in output
    assert files_containing(tmp_path, secret_forms(password)) == []


def test_tls_cli_require_tls_over_starttls_with_ca_from_the_environment(
    notifier: Notifier,
    people: list[Volunteer],
    certificate: SelfSignedCertificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv(CA_ENV, str(certificate.cert_file))
    with TlsSink(certificate, require_starttls=True) as server:
        result = notifier(
            "send", CAMPAIGN, "--yes", "--require-tls", "--smtp", server.url, "--timeout", "5"
        )
        assert_all_encrypted(server, starttls=True)
        messages = server.messages
    assert result.exit_code == 0, result.output
    assert recipients(messages) == {v.email: 1 for v in people}


def test_tls_cli_untrusted_certificate_is_one_clean_error(
    notifier: Notifier,
    ledger: Ledger,
    people: list[Volunteer],
    certificate: SelfSignedCertificate,
    no_smtp_env: None,
) -> None:
    with ImplicitTlsSink(certificate) as server:
        result = notifier("send", CAMPAIGN, "--yes", "--smtp", server.url, "--timeout", "5")
        messages = server.messages
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert "certificate verify failed" in result.stderr
    assert "ca_file" in result.stderr  # the hint says how to trust your own authority
    assert "Traceback" not in result.output
    assert messages == []
    assert ledger.state_counts(CAMPAIGN) == {"pending": 8}
