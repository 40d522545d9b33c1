"""A throwaway Dovecot IMAP server on 127.0.0.1, for the `bounces ingest --imap` test.

Everything lives in a private temporary directory: its own dovecot.conf, a self-signed
certificate (tls_helpers), a passwd-file with one user, the user's Maildir, the logs
(no syslog) and Dovecot's runtime and state directories. It listens only on 127.0.0.1:
`.port` speaks IMAP and offers STARTTLS, `.imaps_port` speaks TLS from the first byte.
Plain-text logins are refused until TLS is up (`ssl = required`).

Dovecot needs root (it switches to its own users and to the mailbox owner), so
`DovecotInstance` skips, saying why, when Dovecot or openssl is missing or we are not root.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import secrets
import shutil
import signal
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
from mta import ThrowawayServer, free_port
from tls_helpers import OPENSSL, SelfSignedCertificate, make_certificate

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SBIN = "/usr/sbin:/usr/local/sbin"  # where Debian puts dovecot; not always on a user's PATH

# Dovecot runs its login and auth processes as these users (Debian's package creates them).
DOVECOT_USERS = ("dovecot", "dovenull")
MAIL_USER = "nobody"  # owns the Maildir and runs imap(8): a user that owns nothing else

DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain
# A wrong password is answered at once, not after the default 2 s.
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/etc/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/etc/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path=SBIN)


def skip_reason() -> str | None:
    """Why a private Dovecot cannot run here, or None if it can."""
    if dovecot_binary() is None:
        return "Dovecot is not installed (Debian: apt-get install dovecot-imapd; .ci/run does it)"
    if OPENSSL is None:
        return "the openssl command is needed to make the IMAP server's test certificate"
    if os.geteuid() != 0:
        return "a private Dovecot instance needs root (it switches to its own users)"
    for name in (*DOVECOT_USERS, MAIL_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"the {name} user is missing (is Dovecot installed fully?)"
    return None


class DovecotInstance(ThrowawayServer):
    """A private Dovecot whose one user's INBOX holds `messages` (raw RFC 5322 bytes).

    Use as a context manager. `.url(scheme)` is the `--imap` URL for the user,
    `.password` their password, `.ca_file` the certificate a client must trust.
    """

    def __init__(self, messages: Sequence[bytes], *, user: str = "bounces") -> None:
        self.messages = list(messages)
        self.user = user
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.imaps_port = 0
        self.root = Path()
        self.certificate: SelfSignedCertificate | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None

    # -- layout

    @property
    def config_file(self) -> Path:
        return self.root / "etc" / "dovecot.conf"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / self.user / "Maildir"

    @property
    def ca_file(self) -> Path:
        assert self.certificate is not None, "the server is not running"
        return self.certificate.cert_file

    def url(self, scheme: str = "imaps", folder: str = "INBOX") -> str:
        port = self.imaps_port if scheme == "imaps" else self.port
        return f"{scheme}://{self.user}@127.0.0.1:{port}/{folder}"

    # -- lifecycle

    prefix = "notifier-dovecot-"

    def skip_reason(self) -> str | None:
        return skip_reason()

    def _layout(self) -> None:
        mail = pwd.getpwnam(MAIL_USER)
        for name in ("etc", "run", "state", "log"):
            (self.root / name).mkdir(mode=0o755)
        self.certificate = make_certificate(self.root / "etc")
        home = self.root / "mail" / self.user
        passwd = self.root / "etc" / "passwd"
        passwd.write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{mail.pw_uid}:{mail.pw_gid}::{home}\n",
            encoding="utf-8",
        )
        passwd.chmod(0o640)  # readable by Dovecot's auth process only
        os.chown(passwd, 0, pwd.getpwnam("dovecot").pw_gid)
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        # Maildir names are unique; Dovecot picks messages in new/ up as unseen mail.
        for number, data in enumerate(self.messages, start=1):
            (self.maildir / "new" / f"1585600000.M{number}P1.notifier-test").write_bytes(data)
        for path in [self.root / "mail", *(self.root / "mail").rglob("*")]:
            os.chown(path, mail.pw_uid, mail.pw_gid)

    def _configure(self) -> None:
        assert self.certificate is not None
        mail = pwd.getpwnam(MAIL_USER)
        self.config_file.write_text(
            DOVECOT_CONF.format(
                root=self.root,
                cert=self.certificate.cert_file,
                key=self.certificate.key_file,
                uid=mail.pw_uid,
                gid=mail.pw_gid,
                port=self.port,
                imaps_port=self.imaps_port,
            ),
            encoding="utf-8",
        )

    def _start_with_retries(self, attempts: int = 3) -> None:
        # A free port can be taken between our probe and Dovecot's bind; try others.
        binary = dovecot_binary()
        assert binary is not None
        for attempt in range(1, attempts + 1):
            self.port, self.imaps_port = free_port(), free_port()
            self._configure()
            self._stderr = (self.root / "log" / "foreground.err").open("ab")
            self.proc = subprocess.Popen(
                [binary, "-c", str(self.config_file), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,  # its own process group, to stop it as one
            )
            # Dovecot binds both listeners before the IMAP port greets.
            if self._wait_for_greeting(b"* OK", b"a LOGOUT\r\n", START_TIMEOUT):
                return
            self._stop()
            if attempt == attempts or "Address already in use" not in self.log_tail():
                pytest.fail(f"Dovecot did not start:\n{self.log_tail()}")

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # the master stops its children, then exits
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT)
            # Anything of the group left behind (a child the master could not reap).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- looking inside

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for name in ("dovecot.log", "foreground.err"):
            path = self.root / "log" / name
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def logins(self) -> list[str]:
        """Dovecot's log line for each successful login, in order.

        Each ends in `TLS` when the session was encrypted, or `secured` when Dovecot let a
        plain-text login through because it came from this host; so a test can tell.
        """
        path = self.root / "log" / "dovecot.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if "imap-login: Info: Login:" in line]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=self.ca_file)
        return context

    def flags(self, folder: str = "INBOX") -> list[set[str]]:
        """Each message's flags, looked at read-only (EXAMINE; FETCH FLAGS sets none)."""
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.imaps_port, ssl_context=self.client_context(), timeout=10
        )
        try:
            client.login(self.user, self.password)
            status, _ = client.select(f'"{folder}"', readonly=True)
            assert status == "OK", self.log_tail()
            status, data = client.fetch("1:*", "(FLAGS)")
            assert status == "OK", self.log_tail()
            return [
                {flag.decode() for flag in imaplib.ParseFlags(item)}
                for item in data
                if isinstance(item, bytes)
            ]
        finally:
            client.logout()
