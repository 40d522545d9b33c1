"""One sender at a time: an operating-system lock on the ledger that dies with its process.

Two `notifier send` runs against one ledger would each claim and send the same pending
messages, and every person would be told twice. So every command that claims messages
(send, resend, --resend-uncertain) first takes an exclusive `flock` on `LEDGER.lock`.
So do the commands that change what a send works from: `roster import` (who the people
are, and their addresses: an import also holds the ledger's write lock for as long as it
runs, which would stall a send's records) and `reconcile` (which messages are still to
go). Each of them, started while another holds the lock, is refused at once.

Why `flock` on a file of its own:
- the kernel releases it when the process dies, however it dies (a SIGKILLed sender never
  blocks the next run, and there is no stale lock to clear by hand);
- it is separate from SQLite's own locking, so reading commands (status, report, history,
  ledger verify, bounces ingest) never wait for it;
- the holder writes who it is (pid, host, since, campaign) into the file, so a refused
  sender and `status` can name the running process.

A reader asks "is a sender running?" by trying a shared lock without blocking: it fails
only while a sender holds the exclusive one. That probe holds the lock for microseconds,
so a sender starting at that instant retries a few times before it concludes that
another sender is running.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from notifier.errors import SendInProgress
from notifier.ledger.opening import read_only_error

# A reader's probe holds the lock for microseconds: this many tries, this far apart, tell
# a probe from a sender (a refused sender still answers well under a second).
_ACQUIRE_TRIES = 10
_ACQUIRE_PAUSE = 0.02


@dataclass(frozen=True)
class Sender:
    """Who holds the send lock: written into the lock file by the holder."""

    pid: int
    host: str
    since: str  # ISO 8601, UTC
    campaign_id: str
    command: str  # send, resend, ...

    def describe(self) -> str:
        return (
            f"{self.command} of {self.campaign_id} by process {self.pid} on {self.host},"
            f" running since {self.since}"
        )

    @property
    def is_sending(self) -> bool:
        """A send, resend or --resend-uncertain (not an import or a reconcile)."""
        return self.command.split(" ", 1)[0] in SENDING_COMMANDS


# The commands that claim and send messages, as Sender.command starts.
SENDING_COMMANDS = frozenset({"send", "resend"})


def lock_path(ledger_path: Path) -> Path:
    """The lock file that belongs to a ledger: `LEDGER.lock`, beside the real file (a
    ledger reached through a symlink or another relative path has the same lock)."""
    real = ledger_path.resolve()
    return real.with_name(real.name + ".lock")


class SendLock:
    """Held for the whole of a sending run; `with SendLock(path, campaign, command):`.

    Also by a roster import (`subject`: the file's name) and a reconcile: see above.
    """

    def __init__(self, ledger_path: Path, subject: str, command: str = "send") -> None:
        self._ledger_path = ledger_path
        self.path = lock_path(ledger_path)
        self.sender = Sender(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            campaign_id=subject,
            command=command,
        )
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise SendInProgress naming the sender that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                # Nothing can be sent from, or imported into, a ledger where this cannot
                # even be made: say so as the ledger does, in one line.
                raise read_only_error(self._ledger_path, f"run {self.sender.command}") from exc
            raise
        try:
            if not _try_lock(fd, fcntl.LOCK_EX):
                raise self._refused(_read_sender(fd))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(self.sender)).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing releases the lock if we took it
            raise
        self._fd = fd

    def _refused(self, holder: Sender | None) -> SendInProgress:
        doing = "sent" if self.sender.is_sending else "changed"
        if holder is None or holder.is_sending:
            what = "another send is running on this ledger"
            hint = "wait for it to finish (notifier status shows its progress)"
        else:
            what = f"a {holder.command} is running on this ledger"
            hint = "wait for it to finish, then run this again"
        return SendInProgress(
            what + (f": {holder.describe()}" if holder else ""),
            file=self.path,
            hint=f"{hint}; nothing was {doing} by this run",
        )

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale name for `status` to show
        finally:
            os.close(fd)  # and the kernel drops the lock

    def __enter__(self) -> SendLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def running_sender(ledger_path: Path) -> Sender | None:
    """The sender holding the ledger's lock right now, or None if no send is running."""
    path = lock_path(ledger_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # unreadable lock file (a read-only copy): nothing can be sending here
    try:
        if _try_lock(fd, fcntl.LOCK_SH, tries=1):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_sender(fd) or Sender(0, "?", "?", "?", "send")
    finally:
        os.close(fd)


def _try_lock(fd: int, mode: int, *, tries: int = _ACQUIRE_TRIES) -> bool:
    for attempt in range(tries):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(_ACQUIRE_PAUSE)
    return False


def _read_sender(fd: int) -> Sender | None:
    # The holder may be between truncating and writing: a partial file reads as unknown.
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Sender(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None
