"""A TLS failure names the setting that fixes it: a self-signed server on 127.0.0.1 that
the client does not trust says `[smtp] ca_file` / NOTIFIER_SMTP_CA_FILE (a test send),
or `[imap] ca_file` / NOTIFIER_IMAP_CA_FILE (bounces from IMAP); and with that setting
the same server is trusted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import Result
from conftest import REPO, Notifier, write_org_config
from tls_helpers import ImplicitTlsSink, SelfSignedCertificate, make_certificate, needs_openssl

pytestmark = needs_openssl

CAMPAIGN = "2020-03-breach"
ME = "me@office.test"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCertificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def imported(notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    for var in ("NOTIFIER_SMTP_CA_FILE", "NOTIFIER_IMAP_CA_FILE", "NOTIFIER_SMTP_USER"):
        monkeypatch.delenv(var, raising=False)
    write_org_config(notifier.cwd)
    assert notifier("roster", "import", str(REPO / "examples" / "volunteers.csv")).exit_code == 0
    return notifier


@pytest.fixture
def server(certificate: SelfSignedCertificate) -> Iterator[ImplicitTlsSink]:
    sink = ImplicitTlsSink(certificate)
    with sink:
        yield sink


def assert_names_the_setting(result: Result, section: str, variable: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ")
    assert "certificate verify failed" in result.stderr
    hint = result.stderr.split("\nhint: ", 1)[1]
    assert f"[{section}] ca_file" in hint and variable in hint
    assert "Traceback" not in result.output


def test_a_test_send_to_an_untrusted_server_names_the_smtp_ca_setting(
    imported: Notifier,
    server: ImplicitTlsSink,
    certificate: SelfSignedCertificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ("send", CAMPAIGN, "--test-to", ME, "--as", "HMR-0001", "--smtp", server.url)
    refused = imported(*args, "--timeout", "5")
    assert_names_the_setting(refused, "smtp", "NOTIFIER_SMTP_CA_FILE")
    assert server.messages == []
    # The setting it names is the one that fixes it.
    monkeypatch.setenv("NOTIFIER_SMTP_CA_FILE", str(certificate.cert_file))
    trusted = imported(*args)
    assert trusted.exit_code == 0, trusted.output
    assert len(server.messages) == 1


def test_an_untrusted_imap_server_names_the_imap_ca_setting(
    imported: Notifier, server: ImplicitTlsSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS from the first byte (imaps://): the handshake fails before IMAP is spoken, so
    any TLS server with a certificate the client does not trust will do."""
    monkeypatch.setenv("NOTIFIER_IMAP_PASSWORD", "pw")
    url = f"imaps://bounces@127.0.0.1:{server.port}/INBOX"
    result = imported("bounces", "ingest", "--imap", url)
    assert_names_the_setting(result, "imap", "NOTIFIER_IMAP_CA_FILE")
    assert "cannot log in to IMAP" in result.stderr
