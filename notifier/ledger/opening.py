"""Opening the ledger file: refuse what is not a ledger, read what cannot be written.

- A SQLite file of another application is refused before anything is written to it
  (not even the switch to WAL, which rewrites the file's header): notifier's tables in
  someone else's database would be damage, not help.
- A ledger that cannot be written (a read-only mount, `chattr +i`, a copy kept for a
  regulator) is opened read-only, so it can still be verified and reported on; a command
  that would write says so in one line instead of failing half-way.
- A write that fails (disk full, I/O error, the file made read-only underneath us) is one
  clean LedgerError: the transaction is rolled back, so the ledger still verifies.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from notifier.errors import LedgerError

_NOT_A_LEDGER_HINT = "check the path; a ledger is the SQLite file notifier created"


def connect(
    path: Path, factory: type[sqlite3.Connection] = sqlite3.Connection
) -> tuple[sqlite3.Connection, bool]:
    """An open connection (of class `factory`) to the ledger at `path`, and whether it is
    read-only."""
    read_only = not _writable(path)
    try:
        conn = _open(path, read_only, factory)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(
            f"cannot open the ledger ({exc})", file=path, hint=_NOT_A_LEDGER_HINT
        ) from exc
    try:
        _refuse_foreign(conn, path)
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise LedgerError(
            f"not a notifier ledger ({exc})", file=path, hint=_NOT_A_LEDGER_HINT
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn, read_only


def refuse_hard_links(path: Path) -> None:
    """Refuse a ledger file with more than one name (hard link): SQLite keeps a write-ahead
    log and a lock index per name, so two names are two ledgers that overwrite each other,
    and no lock held under one name is seen under the other."""
    try:
        links = os.stat(path).st_nlink
    except OSError:
        return  # opening it says what is wrong
    if links > 1:
        raise LedgerError(
            f"the ledger file has {links} names (hard links): SQLite would keep a separate"
            " journal and locks for each, losing writes and letting two senders run;"
            " nothing was read or written",
            file=path,
            hint=f"keep one name: find the others with `find / -xdev -samefile {path}` and"
            " remove them (to keep a copy, copy the file and its key instead)",
        )


def read_only_error(path: Path, doing: str = "record anything") -> LedgerError:
    return LedgerError(
        f"the ledger is read-only (a read-only mount, or an immutable file): cannot {doing}",
        file=path,
        hint="reading commands (ledger verify, report, status, history) work on it; "
        "to change it, copy it and its key to a writable place and use --ledger",
    )


def disk_full_error(exc: Exception, path: Path) -> LedgerError:
    """The disk holding the ledger is full (SQLite's own write, or an import's spool
    beside it): nothing of the transaction was kept."""
    return LedgerError(
        f"the disk holding the ledger is full ({exc})",
        file=path,
        hint="free some space there, then run the command again: what this command was "
        "writing was rolled back, and the ledger still verifies",
    )


def write_error(exc: sqlite3.Error, path: Path) -> LedgerError:
    """One clean line for a write SQLite could not make; nothing of it was kept."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "full" in str(exc):
        return disk_full_error(exc, path)
    if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return read_only_error(path)
    elif name.startswith("SQLITE_BUSY") or "locked" in str(exc):
        what, hint = (
            "the ledger stayed locked by another process",
            "wait for the other notifier command to finish, then run this one again",
        )
    else:
        what, hint = (
            "the ledger could not be written",
            "check the disk and the file's permissions; what this command was writing "
            "was rolled back",
        )
    return LedgerError(f"{what} ({exc})", file=path, hint=hint)


def _writable(path: Path) -> bool:
    # os.access, not the mode bits: it also answers for root, a read-only mount (EROFS)
    # and an immutable file. The folder matters too: WAL needs its -wal and -shm files.
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _open(path: Path, read_only: bool, factory: type[sqlite3.Connection]) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, nothing implicit.
    if not read_only:
        return sqlite3.connect(path, isolation_level=None, timeout=30.0, factory=factory)
    wal = path.with_name(path.name + "-wal")
    # Nobody can write a file we cannot: immutable=1 lets SQLite read a WAL-mode file
    # without creating its -shm. Unless a -wal is left with writes not yet in the file:
    # then it must be read, through the -shm that is there with it.
    pending = wal.exists() and wal.stat().st_size > 0
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if pending else "&immutable=1")
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0, factory=factory)


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Raise unless the file is empty (a new ledger) or holds notifier's `meta` table."""
    tables = [
        str(row[0])
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    ]
    if not tables:
        return
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            return
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise LedgerError(
        f"not a notifier ledger: another application's SQLite database (tables: {shown});"
        " nothing was written to it",
        file=path,
        hint="point --ledger (or NOTIFIER_LEDGER) at the ledger notifier created",
    )
