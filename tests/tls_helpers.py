"""Throwaway keys for the TLS and DKIM tests, and SMTP servers that speak TLS.

Keys and certificates are made with the `openssl` command (no new Python dependency);
tests that need them are skipped, with the reason, where it is not installed.

- `TlsSink`: the notifier sink (aiosmtpd) offering STARTTLS with a test certificate;
- `ImplicitTlsSink`: the same, but TLS from the first byte (`smtps://`);
- `TlsRecordingHandler`: remembers, for each message, whether the connection it came
  over was encrypted and which user had authenticated on it.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import threading
from asyncio import sslproto
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from smtp_helpers import ScriptedHandler

from notifier.sink import Sink, SinkSMTP

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="the openssl command is needed to make test keys and certificates"
)


def openssl(*args: str, cwd: Path) -> bytes:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout


# --- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA)."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path, name: str = "server") -> SelfSignedCertificate:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-keyout", str(key), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    return SelfSignedCertificate(cert, key)


# --- DKIM keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimTestKey:
    private_file: Path  # PEM, as notifier.toml's [dkim] key_file names it
    public_b64: str  # the p= value of the selector's TXT record

    def txt_record(self) -> bytes:
        return f"v=DKIM1; k=rsa; p={self.public_b64}".encode("ascii")

    def dnsfunc(self, selector: str, domain: str) -> Any:
        """A resolver for dkim.verify that knows exactly one record: this key's."""
        wanted = f"{selector}._domainkey.{domain}."

        def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
            text = name.decode("ascii") if isinstance(name, bytes) else name
            return self.txt_record() if text.rstrip(".") + "." == wanted else None

        return lookup


def make_dkim_key(directory: Path, name: str = "dkim", bits: int = 2048) -> DkimTestKey:
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{name}.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}",
            "-out", str(private), cwd=directory)  # fmt: skip
    der = openssl("pkey", "-in", str(private), "-pubout", "-outform", "DER", cwd=directory)
    return DkimTestKey(private, base64.b64encode(der).decode("ascii"))


# --- servers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFacts:
    """What the server knew about the connection a message came over."""

    encrypted: bool  # the transport had a TLS object when the message arrived
    tls_version: str | None
    starttls: bool  # encrypted by STARTTLS (aiosmtpd fills session.ssl only then)
    user: str | None  # who authenticated on this connection, if anyone


class TlsRecordingHandler(ScriptedHandler):
    """A scripted sink that also records, per message, the connection's TLS and AUTH."""

    def __init__(self, *, password: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.password = password
        self.facts: list[SessionFacts] = []
        self.logins: list[tuple[str, bool]] = []  # (user, accepted)
        self._facts_lock = threading.Lock()

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """An aiosmtpd authenticator: any user, with the one password."""
        assert isinstance(data, LoginPassword)
        user = data.login.decode("utf-8")
        ok = self.password is not None and data.password.decode("utf-8") == self.password
        with self._facts_lock:
            self.logins.append((user, ok))
        # handled=False: aiosmtpd then answers 535 itself (True would mean "already answered").
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transport = server.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        facts = SessionFacts(
            encrypted=ssl_object is not None,
            tls_version=ssl_object.version() if ssl_object is not None else None,
            starttls=session.ssl is not None,
            user=session.auth_data if session.authenticated else None,
        )
        with self._facts_lock:
            self.facts.append(facts)
        return await super().handle_DATA(server, session, envelope)


class TlsSink(Sink):
    """The sink, offering STARTTLS (and, with `password`, AUTH only over TLS)."""

    def __init__(
        self,
        certificate: SelfSignedCertificate,
        *,
        password: str | None = None,
        require_starttls: bool = False,
        **kwargs: Any,
    ) -> None:
        handler = TlsRecordingHandler(password=password)
        options: dict[str, Any] = {
            "tls_context": certificate.server_context(),
            "require_starttls": require_starttls,
        }
        if password is not None:
            options |= {
                "authenticator": handler.authenticate,
                "auth_required": True,
                "auth_require_tls": True,
            }
        super().__init__(handler=handler, smtp_options=options, **kwargs)
        self.tls_handler = handler


class ImplicitTlsSink(Sink):
    """The sink behind TLS from the first byte, as a `smtps://` server (port 465) is."""

    def __init__(
        self, certificate: SelfSignedCertificate, *, password: str | None = None, **kwargs: Any
    ) -> None:
        handler = TlsRecordingHandler(password=password)
        options: dict[str, Any] = {}
        if password is not None:
            # aiosmtpd only knows of STARTTLS: it would not offer AUTH on a connection
            # that is encrypted from the start, so let it, and check encryption ourselves.
            options = {
                "authenticator": handler.authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        super().__init__(handler=handler, smtp_options=options, **kwargs)
        self.tls_handler = handler
        self._server_context = certificate.server_context()

    @property
    def url(self) -> str:
        return f"smtps://{self.host}:{self.port}"

    def _factory(self) -> Any:
        # What loop.create_server(ssl=...) does for each connection: put the SMTP protocol
        # behind a TLS layer. Sink creates its server without one, so wrap it here.
        app: SinkSMTP = super()._factory()
        return sslproto.SSLProtocol(
            # waiter=None is what asyncio itself passes for a server; typeshed wants a Future.
            asyncio.get_running_loop(),
            app,
            self._server_context,
            None,  # type: ignore[arg-type]
            server_side=True,
        )
