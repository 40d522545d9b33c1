"""The running sender, as recorded in the ledger for `status` and for the record.

The authority on whether a send is running is the operating-system lock
(`notifier.sendlock`): it dies with its process. This row says who took it and when, so
that `status` in another terminal can name the sender; a row left behind by a killed
sender is harmless, because it is only believed while the lock is held.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from notifier.ledger.schema import read_meta, write_meta

_KEY = "running_sender"


def record_sender(conn: sqlite3.Connection, sender: dict[str, Any]) -> None:
    write_meta(conn, _KEY, json.dumps(sender, sort_keys=True))


def clear_sender(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM meta WHERE key = ?", (_KEY,))


def recorded_sender(conn: sqlite3.Connection) -> dict[str, Any] | None:
    value = read_meta(conn, _KEY)
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
