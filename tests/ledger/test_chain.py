"""The hash chain: one way to hash an event, appending, reading back, and tamper detection.

The tamper tests edit the file with plain sqlite3 on purpose: that is what they are about.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Notifier, fact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.errors import LedgerError
from notifier.event import RECORD_KINDS, EventKind
from notifier.ledger import GENESIS_HASH, EventDraft, Ledger, canonical_json, event_hash
from notifier.ledger.chain import mac_for_key
from notifier.secret import Purpose

# Any text: quotes, backslashes, control characters, line separators, non-BMP.
TEXT = st.text(max_size=20)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
# What anyone may append (notifier.event.RECORD_KINDS): any ids, any data, but never a
# message, whose events only the transition function writes. So a sound ledger stays
# sound whatever is appended: the property below holds every time, not by chance.
DRAFT = st.builds(
    EventDraft,
    kind=st.sampled_from(sorted(RECORD_KINDS)),
    campaign_id=st.none() | TEXT,
    volunteer_id=st.none() | TEXT,
    message_id=st.none(),
    data=st.dictionaries(TEXT, JSON_VALUE, max_size=4),
)


@dataclass(frozen=True)
class Raw:
    """An event's fields as hashed, of any kind (kinds of old ledgers included)."""

    kind: str
    campaign_id: str | None = None
    volunteer_id: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def reference_hash(
    prev_hash: str, seq: int, at: str, draft: EventDraft | Raw, key: bytes | None = None
) -> str:
    """The definition event_hash() writes out by hand: canonical JSON of the whole event,
    HMAC-SHA256 under the chain key (plain SHA-256 in ledgers written before keys)."""
    content = json.dumps(
        {
            "seq": seq,
            "at": at,
            "kind": draft.kind,
            "campaign_id": draft.campaign_id,
            "volunteer_id": draft.volunteer_id,
            "message_id": draft.message_id,
            "data": draft.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    payload = f"{prev_hash}\n{content}".encode()
    if key is not None:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def write_events(path: Path, count: int = 5) -> None:
    with Ledger(path) as led:
        led.record(
            EventDraft(
                EventKind.TEST_SENT, volunteer_id=f"v{i}", data={"i": i, "name": "鈴木 一郎"}
            )
            for i in range(1, count + 1)
        )


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file behind notifier's back, as someone with sqlite3 would."""
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


# --- hashing --------------------------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drafts=st.lists(DRAFT, min_size=1, max_size=5))
def test_appended_events_hash_to_the_reference_and_verify(
    tmp_path: Path, drafts: list[EventDraft]
) -> None:
    path = tmp_path / "append.db"
    path.unlink(missing_ok=True)
    path.with_name("append.db.key").unlink(missing_ok=True)
    with Ledger(path) as ledger:
        events = ledger.record(drafts)
        assert ledger.verify().ok
        assert list(ledger.events()) == events  # read back as written
        key = ledger.secret().derive(Purpose.CHAIN)
    prev = GENESIS_HASH
    for seq, (event, draft) in enumerate(zip(events, drafts, strict=True), start=1):
        assert (event.seq, event.prev_hash) == (seq, prev)
        assert event.hash == reference_hash(prev, event.seq, event.at, draft, key)
        prev = event.hash


def test_event_hash_is_the_reference_for_one_event() -> None:
    draft = Raw("sent", "c", None, "<m@x>", {"reply": '250 "ok"\u2028', "n": [1, None]})
    at = "2020-04-01T10:00:00.000000+00:00"
    fields: dict[str, Any] = {
        "kind": draft.kind,
        "campaign_id": draft.campaign_id,
        "volunteer_id": draft.volunteer_id,
        "message_id": draft.message_id,
    }
    assert event_hash(
        GENESIS_HASH, 7, at, **fields, data_json=canonical_json(draft.data)
    ) == reference_hash(GENESIS_HASH, 7, at, draft)
    key = b"k" * 32
    assert event_hash(
        GENESIS_HASH, 7, at, **fields, data_json=canonical_json(draft.data), mac=mac_for_key(key)
    ) == reference_hash(GENESIS_HASH, 7, at, draft, key)


def test_a_pure_python_hmac_hashes_as_openssls_does() -> None:
    """event_hash copies OpenSSL's HMAC object when the standard library made one; an
    HMAC built without it (a digest constructor OpenSSL does not know) gives the same."""
    draft = Raw("volunteer_added", None, "v-1", None, {"email": "鈴木@例え.jp"})
    at = "2020-04-01T10:00:00.000000+00:00"
    key = b"k" * 32
    pure = hmac.new(key, digestmod=lambda: hashlib.sha256())
    assert getattr(pure, "_hmac", None) is None  # really the pure-Python path
    args = (GENESIS_HASH, 3, at, draft.kind, None, "v-1", None, canonical_json(draft.data))
    expected = reference_hash(GENESIS_HASH, 3, at, draft, key)
    assert event_hash(*args, mac=pure) == expected
    assert event_hash(*args, mac=mac_for_key(key)) == expected


# Written by notifier before the ledger became a package (unkeyed): ledgers in use hold
# such hashes, so these must never change (they are verified, then upgraded).
GOLDEN = [
    (
        Raw(
            "roster_imported",
            data={"import_id": 1, "file": "名簿.csv", "strict": False, "ratio": 0.5},
        ),
        "c53e7dcc3b5c10a4dd2a6144876158731612dc93f283f3f40bbf40444972af55",
    ),
    (
        Raw("volunteer_added", volunteer_id="HMR-1", data={"email": "鈴木@例え.jp", "row": 2}),
        "c9c18bfe43d7b373b838905aa81a6b5bfea4abec38b2e12d5b51c5167d6d889d",
    ),
    (
        Raw("queued", campaign_id="2020-03-breach", volunteer_id="HMR-1", message_id="<a@b>"),
        "7c9f5561d399c886ba3213e58227f52386d8108d610415929b69d80526e42753",
    ),
    (
        Raw(
            "sent",
            campaign_id="c",
            volunteer_id="v",
            message_id="<m>",
            data={
                "reply": 'quote " back\\ \u2028 \x00 \U0001f600',
                "code": 250,
                "nested": {"b": [1, None, True], "a": {}},
            },
        ),
        "740f4d6de69e48293e494c72b8a7570c573a8763b87c21db74564067f970cb17",
    ),
    (Raw("test"), "ed5292fd55b5831271a72d879cb5fb727af4c72cc979ba10b2ec459432938e14"),
]


def test_hashes_are_those_existing_ledgers_hold() -> None:
    at = "2020-04-01T10:00:00.000000+00:00"
    prev = GENESIS_HASH
    for seq, (d, expected) in enumerate(GOLDEN, start=1):
        data_json = canonical_json(d.data)
        prev = event_hash(
            prev, seq, at, d.kind, d.campaign_id, d.volunteer_id, d.message_id, data_json
        )
        assert prev == expected


# --- appending and reading back ---------------------------------------------------------


def test_events_chain_and_read_back_in_order(ledger_path: Path) -> None:
    write_events(ledger_path, 4)
    with Ledger(ledger_path) as led:
        events = list(led.events())
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert [e.data["i"] for e in events] == [1, 2, 3, 4]
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert [e.seq for e in led.events(volunteer_id="v3")] == [3]
        assert [e.seq for e in led.events(kinds=["test_sent"], volunteer_id="v2")] == [2]
        assert list(led.events(kinds=["other"])) == []
        result = led.verify()
    assert result.ok and result.events == 4 and result.head == events[-1].hash


def test_events_appended_together_share_one_time(ledger: Ledger) -> None:
    first, second = ledger.record([fact("a"), fact("b")])
    assert first.at == second.at
    (third,) = ledger.record([fact("c")], at="2020-04-01T10:00:00.000000+00:00")
    assert third.at == "2020-04-01T10:00:00.000000+00:00" and third.seq == 3


def test_failed_transaction_appends_nothing(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.record([fact("test")])
        raise RuntimeError("crash in the middle")
    assert ledger.count("events") == 0
    assert ledger.verify().ok
    assert ledger.record([fact("test")])[0].seq == 1


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(sorted(set(EventKind) - RECORD_KINDS)),
    message_id=st.none() | TEXT,
)
def test_no_public_append_of_a_kind_that_builds_a_table(
    tmp_path_factory: pytest.TempPathFactory, kind: EventKind, message_id: str | None
) -> None:
    """A row_rejected, a volunteer_added, a message's state...: each is written by the
    ledger with the row it vouches for, never appended alone (it would make a sound
    ledger fail verification, the table row "missing")."""
    path = tmp_path_factory.mktemp("refuse") / "notifier.db"
    with Ledger(path) as ledger:
        with pytest.raises(LedgerError, match="not appended alone"):
            ledger.record([fact("before"), EventDraft(kind, message_id=message_id)])
        assert ledger.count("events") == 0  # nothing of the batch was written
        assert ledger.verify().ok


def test_no_public_append_names_a_message(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="never about a message"):
        ledger.record([EventDraft(EventKind.TEST_SENT, message_id="<m@x>")])
    assert ledger.count("events") == 0


# --- tampering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "params", "bad_seq", "words"),
    [
        ("UPDATE events SET data = ? WHERE seq = 3", ('{"i":99}',), 3, "edited"),
        ("UPDATE events SET data = ? WHERE seq = 3", ("{not json",), 3, "unreadable"),
        ("UPDATE events SET kind = 'sent' WHERE seq = 2", (), 2, "edited"),
        ("UPDATE events SET at = '2020-01-01T00:00:00+00:00' WHERE seq = 4", (), 4, "edited"),
        ("DELETE FROM events WHERE seq = 2", (), 2, "missing"),
        ("DELETE FROM events WHERE seq = 5", (), 5, "deleted"),
        (
            "INSERT INTO events(seq, at, kind, data, prev_hash, hash)"
            " VALUES (6, '2026-01-01T00:00:00+00:00', 'sent', '{}', 'x', 'y')",
            (),
            6,
            "link",
        ),
    ],
    ids=[
        "edit-data",
        "garble-data",
        "edit-kind",
        "edit-time",
        "delete-middle",
        "delete-last",
        "insert",
    ],
)
def test_verify_names_the_first_bad_event(
    ledger_path: Path, sql: str, params: tuple[object, ...], bad_seq: int, words: str
) -> None:
    write_events(ledger_path, 5)
    tamper(ledger_path, sql, params)
    with Ledger(ledger_path) as led:
        result = led.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.reason


def test_verify_catches_swapped_events(ledger_path: Path) -> None:
    write_events(ledger_path, 3)
    conn = sqlite3.connect(ledger_path)
    conn.execute("UPDATE events SET seq = 100 WHERE seq = 1")
    conn.execute("UPDATE events SET seq = 1 WHERE seq = 2")
    conn.execute("UPDATE events SET seq = 2 WHERE seq = 100")
    conn.commit()
    conn.close()
    with Ledger(ledger_path) as led:
        result = led.verify()
    assert not result.ok and result.first_bad_seq == 1


def test_cli_verify_reports_intact_and_tampered(notifier: Notifier, ledger_path: Path) -> None:
    write_events(ledger_path, 3)
    ok = notifier("ledger", "verify")
    assert ok.exit_code == 0
    assert "3 events, chain intact" in ok.stdout
    tamper(ledger_path, "UPDATE events SET data = '{}' WHERE seq = 2")
    bad = notifier("ledger", "verify")
    assert bad.exit_code == 1
    assert "event 2" in bad.stderr and "edited" in bad.stderr


def test_cli_verify_without_ledger_is_one_clean_line(notifier: Notifier) -> None:
    result = notifier("ledger", "verify")
    assert result.exit_code == 2
    assert "no ledger here" in result.stderr
    assert "Traceback" not in result.stderr


@given(JSON_VALUE)
def test_canonical_json_is_the_plain_encoders_text(value: Any) -> None:
    # canonical_json() reuses the encoder's C core for speed: the hashes must not notice.
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == encoder.encode(value)
