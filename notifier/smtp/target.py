"""Where to send, and how safely: the SMTP URL, TLS and the CA file, the rule for passwords.

`smtp://host:port` speaks STARTTLS whenever the server offers it; `smtps://host:port`
speaks TLS from the first byte. A password never crosses a network unencrypted: without
TLS it goes only to a server on this machine (`is_loopback`).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from notifier.config import PASSWORD_ENV, USER_ENV
from notifier.errors import DeliveryError, FatalDeliveryError
from notifier.outputs import url_without_credentials


@dataclass(frozen=True)
class SmtpTarget:
    scheme: str  # "smtp" or "smtps"
    host: str
    port: int

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


# Where the URL of a send comes from when no --smtp is given, as an error names it.
SETTINGS_FIELD = "NOTIFIER_SMTP_URL or [smtp] url"


def parse_smtp_url(url: str, *, field: str = "--smtp") -> SmtpTarget:
    """`smtp://host[:port]` (default 25) or `smtps://host[:port]` (default 465).

    No error quotes `url` as given: a mistyped URL may hold a password anywhere in it
    (`smtp:/bob:pw@host`, `bob:pw@host`, `smtp://bob:pw/x@host`), so errors say what is
    wrong in words, and show the URL only without what precedes its `@`. `field` names
    where the URL came from (the option, or the setting).
    """
    if "@" in url:
        # Credentials in some form: an SMTP URL has no other use for an `@`.
        raise DeliveryError(
            f"credentials do not belong in the SMTP URL: {url_without_credentials(url)}",
            field=field,
            hint=f"set {USER_ENV} and {PASSWORD_ENV} in the environment instead, and "
            "write smtp://host:port",
        )
    try:
        parts = urlsplit(url.strip())
        hostname = parts.hostname  # an unclosed [IPv6] bracket fails here or above
    except ValueError as exc:
        raise DeliveryError(
            f"not an SMTP URL ({exc})",
            field=field,
            hint="write smtp://host:port, an IPv6 address in brackets: smtp://[::1]:25",
        ) from exc
    if parts.scheme not in ("smtp", "smtps") or not parts.netloc.strip():
        raise DeliveryError(
            "not an SMTP URL: it must start smtp:// or smtps:// and name a host",
            field=field,
            hint="write smtp://host:port (STARTTLS when offered) or smtps://host:port",
        )
    if not hostname:
        raise DeliveryError(
            "not an SMTP URL: no host after " + parts.scheme + "://",
            field=field,
            hint="write smtp://host:port (STARTTLS when offered) or smtps://host:port",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise DeliveryError(
            "the port of the SMTP URL is not a number from 0 to 65535", field=field
        ) from exc
    default = 465 if parts.scheme == "smtps" else 25
    return SmtpTarget(parts.scheme, hostname, port or default)


def target_for(smtp_url: str | None, settings_url: str) -> SmtpTarget:
    """The target of a send: `--smtp` when given, else the settings' URL, each named as
    itself in an error."""
    if smtp_url:
        return parse_smtp_url(smtp_url)
    return parse_smtp_url(settings_url, field=SETTINGS_FIELD)


def is_loopback(host: str) -> bool:
    """A server on this machine: a password sent to it never crosses a network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(
    target: SmtpTarget, *, tls: bool, require_tls: bool, with_password: bool
) -> None:
    """Refuse a connection that is not safe enough, before anything is sent on it:
    no TLS where it is required, or a password that would go over a network in the clear."""
    if require_tls and not tls:
        raise FatalDeliveryError(
            f"{target} does not offer STARTTLS and --require-tls is set",
            field="--smtp",
            hint="use smtps:// or a server with STARTTLS, or drop --require-tls",
        )
    if with_password and not tls and not is_loopback(target.host):
        # aiosmtplib would send the password in the clear: refuse instead.
        raise FatalDeliveryError(
            f"{target} offers no TLS, and the password would cross the network unencrypted",
            field="--smtp",
            hint="use smtps:// or a server with STARTTLS",
        )


def readable_ca_file(path: Path) -> Path:
    """The CA file to trust, checked here: a missing file would otherwise surface as a
    connection error."""
    if not path.is_file():
        raise FatalDeliveryError(
            "the CA file to trust for the SMTP server's certificate is not there",
            file=path,
            field="smtp.ca_file",
            hint="set [smtp] ca_file (or NOTIFIER_SMTP_CA_FILE) to a PEM file of CA certificates",
        )
    return path


def is_certificate_error(exc: BaseException) -> bool:
    """The connection failed because the server's certificate is not trusted."""
    seen: BaseException | None = exc
    for _ in range(5):  # the TLS error may be wrapped by aiosmtplib; the chain is short
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def connection_hint(exc: BaseException) -> str:
    """What to do when the first connection to the server fails with `exc`."""
    if is_certificate_error(exc):
        return (
            "the server's certificate is not trusted: if it comes from your own "
            "authority, name its certificate in [smtp] ca_file (or NOTIFIER_SMTP_CA_FILE)"
        )
    return "is the server running? for a local test, start one with: notifier sink"
