"""One sender at a time, held by the ledger itself: a lease row inside the database.

Two runs that claim and send messages from one ledger would each pick up the same
pending messages. So every run that claims messages (send, resend, --resend-uncertain),
and every command that changes what a send works from (`roster import`: who the people
are and their addresses; `reconcile`: which messages are still to go), first takes the
ledger's lease, in a write transaction: it is refused at once while another live holder
has it.

Why a row in the database, not a lock file beside it: a lock file can be deleted, never
made, or reached under another name (a symlink, a hard link, another relative path), and
each of those admitted a second sender. The lease lives in the one file every sender must
write, whatever name it is reached by (a ledger with more than one hard link is refused
when it is opened: SQLite would keep a journal per name).

A lease is live while its holder is: on this machine (same host and boot), while its
process runs (the pid, and that process's start time, so a reused pid is not mistaken for
it); elsewhere, while its heartbeat is fresh. A holder killed by SIGKILL or a power cut
therefore never blocks the next run, and there is nothing to clear by hand.

The lease is the first guard, not the only one: a claim is conditional on the message
still being claimable (notifier.ledger.messages.claim), so even two senders that got past
it cannot send one message twice.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache

from notifier.ledger.schema import read_meta, write_meta
from notifier.times import shown_time

_KEY = "lease"
# A holder on another machine is believed for this long after its last heartbeat.
LEASE_TTL = timedelta(seconds=120)
# How often a long run refreshes its heartbeat.
HEARTBEAT_EVERY = 15.0

# The commands that claim and send messages, as Holder.command starts.
SENDING_COMMANDS = frozenset({"send", "resend"})

# The holdings this process has now (their tokens).
_HELD: set[str] = set()


@dataclass(frozen=True)
class Holder:
    """Who holds the lease: written into the ledger by the holder."""

    pid: int
    host: str
    boot_id: str  # this boot of the machine ("" where the system does not say)
    started: str  # the process's start time since boot ("" where the system does not say)
    since: str  # ISO 8601, UTC
    heartbeat: str  # ISO 8601, UTC: refreshed while the run goes on
    command: str  # send, resend, send --resend-uncertain, roster import, reconcile
    subject: str  # the campaign, or the roster file
    token: str  # this holding, so a second holder in the same process is still refused
    run: int | None = None  # a send's `send_started` event

    def describe(self, zone: str = "UTC") -> str:
        """The holder for people; its start shown in `zone` (notifier.times)."""
        return (
            f"{self.command} of {self.subject} by process {self.pid} on {self.host},"
            f" running since {shown_time(self.since, zone)}"
        )

    @property
    def is_sending(self) -> bool:
        """A send, resend or --resend-uncertain (not an import or a reconcile)."""
        return self.command.split(" ", 1)[0] in SENDING_COMMANDS

    def is_live(self, now: datetime | None = None) -> bool:
        if self.host == socket.gethostname() and self.boot_id == boot_id():
            if self.pid == os.getpid():
                # This process knows what it holds: a holding it gave up is over even if
                # the ledger could not be told (a full disk), and never blocks it again.
                return self.token in _HELD
            return _process_runs(self.pid, self.started)
        beat = _parse_time(self.heartbeat)
        return beat is not None and (now or datetime.now(UTC)) - beat < LEASE_TTL


def new_holder(command: str, subject: str) -> Holder:
    """A holder for this process, as of now."""
    now = _now()
    return Holder(
        pid=os.getpid(),
        host=socket.gethostname(),
        boot_id=boot_id(),
        started=process_start(os.getpid()),
        since=now,
        heartbeat=now,
        command=command,
        subject=subject,
        token=secrets.token_hex(8),
    )


def current(conn: sqlite3.Connection) -> Holder | None:
    """The recorded holder, live or not (None when there is none, or it is unreadable)."""
    value = read_meta(conn, _KEY)
    if not value:
        return None
    try:
        data = json.loads(value)
        return Holder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def live_holder(conn: sqlite3.Connection) -> Holder | None:
    """The holder of the lease if it is live now, else None."""
    holder = current(conn)
    return holder if holder is not None and holder.is_live() else None


def take(conn: sqlite3.Connection, holder: Holder) -> Holder | None:
    """Take the lease for `holder`, within a write transaction; the live holder that has
    it instead (then nothing is written), or None when it is now `holder`'s."""
    other = live_holder(conn)
    if other is not None and other.token != holder.token:
        return other
    write_meta(conn, _KEY, json.dumps(asdict(holder), sort_keys=True))
    _HELD.add(holder.token)
    return None


def refresh(conn: sqlite3.Connection, holder: Holder, **changes: object) -> Holder | None:
    """Write `holder` with a new heartbeat (and `changes`), within a write transaction,
    if it still holds the lease; the refreshed holder, or None if it lost it."""
    recorded = current(conn)
    if recorded is None or recorded.token != holder.token:
        return None
    refreshed = replace(holder, heartbeat=_now(), **changes)  # type: ignore[arg-type]
    write_meta(conn, _KEY, json.dumps(asdict(refreshed), sort_keys=True))
    return refreshed


def forget(holder: Holder) -> None:
    """This process no longer has `holder`'s holding (taking it failed)."""
    _HELD.discard(holder.token)


def give_up(conn: sqlite3.Connection, holder: Holder) -> None:
    """Release the lease if `holder` has it, within a write transaction. The holding is
    over for this process at once, even if the write then fails."""
    _HELD.discard(holder.token)
    recorded = current(conn)
    if recorded is not None and recorded.token == holder.token:
        conn.execute("DELETE FROM meta WHERE key = ?", (_KEY,))


# --- this machine ---------------------------------------------------------------------


@cache
def boot_id() -> str:
    """This boot of this machine (Linux), so a pid from before a reboot is not believed."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot (Linux); "" if unknown."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields from the third on (state first); [] if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses: read after its end.
    return stat[stat.rfind(")") + 2 :].split()


def _process_runs(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        # A process that has ended but whose parent has not collected it yet (a zombie)
        # still answers kill(0) under its pid and start time: it holds nothing.
        return False
    # A process with this pid runs; it is the holder unless it started at another time.
    return not started or (fields[19] if len(fields) > 19 else "") in ("", started)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
