"""A throwaway Postfix and a scripted "remote" SMTP server, for the end-to-end bounce test.

The test sends through a real Postfix bound to 127.0.0.1. Postfix relays every message to
`ScriptedRemote` (aiosmtpd), which answers 550, 552 or 450 for chosen recipients and 250
for the rest; Postfix then writes real delivery status notifications to the VERP return
path on the sender's domain, which it delivers itself (virtual(8)) into a Maildir.

Postfix needs root (it switches to its `postfix` user and to the mailbox owner), so
`PostfixInstance` skips, saying why, when Postfix is missing or we are not root.
Everything lives in a private temporary directory: configuration, queue, data, Maildir.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

POSTFIX = "postfix"
POSTCONF = "postconf"
POSTQUEUE = "postqueue"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 20.0
POLL_INTERVAL = 0.1

# The sender's domain of the tests' organisation (tests/fixtures/organisation.toml):
# bounces to bounces+TOKEN@hmr.test land in the Maildir. Every other domain is relayed to
# the scripted remote.
LOCAL_DOMAIN = "hmr.test"
MAILDIR_NAME = "bounces"
REMOTE_HOSTNAME = "remote.example.com"  # must differ from Postfix's, or it sees a loop
POSTFIX_HOSTNAME = "mta.example.org"


# --- the scripted remote ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the remote answers for one recipient, and when (at RCPT or at end of DATA)."""

    code: int
    text: str
    at: str = "rcpt"  # "rcpt" or "data"

    @property
    def status(self) -> str:
        """The enhanced status code the reply starts with, e.g. 5.1.1."""
        return self.text.split()[0]


USER_UNKNOWN = Reply(550, "5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
# Mailbox full comes at the end of DATA, where delivering servers find out, so the test
# also covers a refusal of the message itself rather than of its recipient.
MAILBOX_FULL = Reply(552, "5.2.2 <{rcpt}>: Mailbox full", at="data")
TRY_LATER = Reply(450, "4.2.0 <{rcpt}>: Mailbox temporarily unavailable, try later")


@dataclass
class RemoteRecord:
    """What the remote saw: every RCPT with its answer, and the messages it accepted."""

    rcpt: list[tuple[str, int]] = field(default_factory=list)
    accepted: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)


class _RemoteHandler:
    def __init__(self, script: Mapping[str, Reply], record: RemoteRecord) -> None:
        self.script = {k.casefold(): v for k, v in script.items()}
        self.record = record
        self.lock = threading.Lock()

    def _reply(self, address: str) -> Reply | None:
        return self.script.get(address.casefold())

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._reply(address)
        code = reply.code if reply is not None and reply.at == "rcpt" else 250
        with self.lock:
            self.record.rcpt.append((address, code))
        if reply is not None and reply.at == "rcpt":
            return f"{reply.code} {reply.text.format(rcpt=address)}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for address in envelope.rcpt_tos:
            reply = self._reply(address)
            if reply is not None and reply.at == "data":
                return f"{reply.code} {reply.text.format(rcpt=address)}"
        content = envelope.original_content or b""
        with self.lock:
            self.record.accepted.append((tuple(envelope.rcpt_tos), content))
        return "250 2.0.0 Ok: queued as REMOTE"


class ScriptedRemote:
    """aiosmtpd on 127.0.0.1, port 0, in its own thread: `with ScriptedRemote(script) as r`."""

    def __init__(self, script: Mapping[str, Reply]) -> None:
        self.record = RemoteRecord()
        self.handler = _RemoteHandler(script, self.record)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _factory(self) -> SMTP:
        return SMTP(
            self.handler,
            hostname=REMOTE_HOSTNAME,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="scripted remote",
        )

    def __enter__(self) -> ScriptedRemote:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._factory, "127.0.0.1", 0), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# --- the Postfix instance --------------------------------------------------------------

# Our own master.cf: the services a relay-and-deliver Postfix needs, no chroot (the
# queue lives in a temporary directory, not under /var/spool/postfix).
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def skip_reason() -> str | None:
    """Why a private Postfix cannot run here, or None if it can."""
    if shutil.which(POSTFIX) is None or shutil.which(POSTCONF) is None:
        return "Postfix is not installed (Debian: apt-get install postfix; .ci/run does it)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (it switches to its own users)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or postdrop group is missing (is Postfix installed fully?)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    """Poll `condition` until true, or fail after `timeout` seconds saying what was seen.

    Postfix gives no event we can wait on from outside (it writes files and a log), so
    this polls, briefly and with a deadline.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s: {describe()}")
        time.sleep(POLL_INTERVAL)


def _mailbox_owner() -> tuple[int, int]:
    """Who owns the Maildir: `nobody`, a user that owns nothing else (else `postfix`)."""
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        user = pwd.getpwnam("postfix")
    return user.pw_uid, user.pw_gid


class ThrowawayServer:
    """A real server run as root from a private temporary folder, for one test.

    Subclasses say why they cannot run (`skip_reason`), lay out their files (`_layout`),
    start (`_start_with_retries`) and stop (`_stop`); this class skips, creates and always
    removes the folder, whatever fails on the way.
    """

    prefix = "notifier-server-"
    port: int
    proc: subprocess.Popen[bytes] | None

    def skip_reason(self) -> str | None:
        raise NotImplementedError

    def _layout(self) -> None:
        raise NotImplementedError

    def _start_with_retries(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _wait_for_greeting(
        self, greeting: bytes, goodbye: bytes, timeout: float = START_TIMEOUT
    ) -> bool:
        """True once `self.port` answers with `greeting`; False if the server died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(512).startswith(greeting):
                        sock.sendall(goodbye)
                        return True
            except OSError:
                pass
            time.sleep(POLL_INTERVAL)
        return False

    def __enter__(self) -> Self:
        reason = self.skip_reason()
        if reason:
            pytest.skip(reason)
        self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        try:
            # The server's own daemons run as other users and must reach files through here.
            self.root.chmod(0o755)
            self._layout()
            self._start_with_retries()
        except BaseException:
            self._stop()
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PostfixInstance(ThrowawayServer):
    """A private Postfix on 127.0.0.1 relaying to `remote_port`, delivering hmr.test locally.

    `settings` override main.cf parameters (e.g. `maximal_queue_lifetime`,
    `delay_warning_time`). Use as a context manager; `.port` is the SMTP listener,
    `.maildir` the Maildir that receives every mail to hmr.test (the DSNs).
    """

    def __init__(self, remote_port: int, settings: Mapping[str, str] | None = None) -> None:
        self.remote_port = remote_port
        self.overrides = dict(settings or {})
        self.port = 0
        self.root = Path()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None

    # -- layout

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def maillog(self) -> Path:
        return self.root / "log" / "maillog"

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / MAILDIR_NAME

    def main_cf(self) -> dict[str, str]:
        uid, gid = _mailbox_owner()
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.root / "spool"),
            "data_directory": str(self.root / "lib"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "myhostname": POSTFIX_HOSTNAME,
            "mydomain": "example.net",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "",
            "smtputf8_enable": "yes",
            "recipient_delimiter": "+",
            # Everything not for hmr.test goes to the scripted remote, without DNS.
            "default_transport": f"smtp:[127.0.0.1]:{self.remote_port}",
            "relayhost": "",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # Mail to the sender's domain (the DSNs) is delivered into one Maildir.
            "virtual_mailbox_domains": LOCAL_DOMAIN,
            "virtual_mailbox_base": str(self.root / "mail"),
            "virtual_mailbox_maps": f"static:{MAILDIR_NAME}/",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "1",
            # Short everything: retries every second, and by default one try only, so a
            # 450 comes back at once as a failure (Action: failed, status 4.x.x).
            "maximal_queue_lifetime": "0",
            "bounce_queue_lifetime": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0h",
            "in_flow_delay": "0",
            "smtp_connect_timeout": "5s",
            "notify_classes": "",
            "biff": "no",
            "readme_directory": "no",
        }
        settings.update(self.overrides)
        return settings

    # -- lifecycle

    prefix = "notifier-postfix-"

    def skip_reason(self) -> str | None:
        return skip_reason()

    def _layout(self) -> None:
        postfix = pwd.getpwnam("postfix")
        uid, gid = _mailbox_owner()
        for name in ("etc", "spool", "lib", "log", "mail"):
            (self.root / name).mkdir(mode=0o755)
        os.chown(self.root / "lib", postfix.pw_uid, postfix.pw_gid)
        os.chown(self.root / "mail", uid, gid)
        # `postconf -c DIR` refuses a directory without a main.cf.
        (self.config_dir / "main.cf").write_text("", encoding="ascii")

    def _configure(self) -> None:
        listen = f"127.0.0.1:{self.port}"
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=listen), encoding="ascii"
        )
        lines = [f"{key} = {value}" for key, value in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n", encoding="ascii")
        # Let postconf read it back: a typo in a parameter name fails here, not later.
        self._run(POSTCONF, "-c", str(self.config_dir), "-n")

    def _run(self, *argv: str) -> str:
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}"
                f"\n{self.log_tail()}"
            )
        return done.stdout

    def _start_with_retries(self, attempts: int = 3) -> None:
        # A free port can be taken between our probe and Postfix's bind; try another.
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self._configure()
            self._run(POSTFIX, "-c", str(self.config_dir), "check")
            self._stderr = (self.root / "log" / "start-fg.err").open("ab")
            self.proc = subprocess.Popen(
                [POSTFIX, "-c", str(self.config_dir), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env={**os.environ, "MAIL_CONFIG": str(self.config_dir)},
                start_new_session=True,  # its own process group, to stop it as one
            )
            if self._wait_for_greeting(b"220", b"QUIT\r\n"):
                return
            self._stop()
            if attempt == attempts or "Address already in use" not in self.log_tail():
                pytest.fail(f"Postfix did not start:\n{self.log_tail()}")

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._run(POSTFIX, "-c", str(self.config_dir), "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass  # the process group is killed below if it did not stop
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- looking inside

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.maillog, self.root / "log" / "start-fg.err"):
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def maildir_files(self) -> list[Path]:
        return sorted(
            p
            for sub in ("new", "cur")
            if (self.maildir / sub).is_dir()
            for p in (self.maildir / sub).iterdir()
            if p.is_file()
        )

    def queue(self) -> list[dict[str, Any]]:
        """The messages still in Postfix's queue (`postqueue -j`), one dict each."""
        out = self._run(POSTQUEUE, "-c", str(self.config_dir), "-j")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for_maildir(self, count: int, timeout: float) -> list[Path]:
        """Wait until the Maildir holds at least `count` messages; return them all."""
        wait_until(
            lambda: len(self.maildir_files()) >= count,
            timeout,
            lambda: (
                f"{len(self.maildir_files())} of {count} messages in the Maildir; "
                f"Postfix log:\n{self.log_tail()}"
            ),
        )
        return self.maildir_files()

    def wait_for_empty_queue(self, timeout: float) -> None:
        wait_until(
            lambda: not self.queue(),
            timeout,
            lambda: f"still queued: {self.queue()}\n{self.log_tail()}",
        )
