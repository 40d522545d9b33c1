"""Proof of notification: history, the campaign report and its renderers, unreachable people.

The ledgers here are built through the public Ledger API only (rows, then hash-chained
events with fixed times), so the figures asserted below are exact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notifier import report as report_module
from notifier.errors import CampaignError, VolunteerNotFound
from notifier.ledger import EventDraft, Ledger, volunteer_to_row
from notifier.report import (
    REPORT_CSV_COLUMNS,
    UNREACHABLE_CSV_COLUMNS,
    campaign_report,
    report_as_csv,
    report_as_dict,
    report_as_html,
    report_as_json,
    unreachable,
    unreachable_as_csv,
    unreachable_as_json,
    volunteer_history,
)
from notifier.volunteer import Volunteer

C1 = "2020-03-breach"
C2 = "2020-04-update"
TEMPLATES_SHA = "ab" * 32
EVIL_NAME = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Person:
    vid: str
    family: str
    given: str
    email: str
    locale: str
    exposure: str
    postal: str = ""


PEOPLE = (
    Person("v01", "Dane", "Alice", "alice@example.org", "en", "published"),
    Person("v02", "鈴木", "一郎", "suzuki@example.jp", "ja", "screened", "東京都千代田区1-1"),
    Person("v03", EVIL_NAME, "Mallory", "mallory@example.com", "en", "screened", "1 Evil Way"),
    Person("v04", "Gray", "Bob", "bob@example.org", "en", "database_only"),
    Person("v05", "田中", "花子", "tanaka@example.jp", "ja", "database_only", "大阪府大阪市2-2"),
    Person("v06", "Irwin", "Carol", "carol@example.org", "en", "published", "6 High St, London"),
    Person("v07", "Jones", "Dan", "dan@example.org", "en", "screened"),
    Person("v08", "佐藤", "健", "sato@example.jp", "ja", "published"),
    Person("v09", "Green", "Eve", "eve@example.org", "en", "database_only"),
    Person("v10", "山本", "愛", "yamamoto@example.jp", "ja", "screened", "京都府京都市3-3"),
)


def mid(campaign: str, vid: str) -> str:
    return f"<{campaign}.{vid}@example.org>"


def at(hhmm: str, day: str = "2020-04-01") -> str:
    return f"{day}T{hhmm}:00.000000+00:00"


class Builder:
    """Writes one scenario into a ledger: rows first, then events at fixed times."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def volunteers(self) -> None:
        rows = [
            volunteer_to_row(
                Volunteer(
                    volunteer_id=p.vid,
                    email=p.email,
                    email_ascii=p.email,
                    family_name=p.family,
                    given_name=p.given,
                    locale=p.locale,
                    exposure=p.exposure,
                    data_held=("id_documents",),
                    postal_address=p.postal,
                )
            )
            for p in PEOPLE
        ]
        self.ledger.db.table("volunteers").insert_all(rows)

    def campaign(self, campaign_id: str, vids: list[str], templates_sha: str | None) -> None:
        self.ledger.db.table("campaigns").insert(
            {
                "campaign_id": campaign_id,
                "title": f"Notice {campaign_id}",
                "follows": C1 if campaign_id == C2 else None,
                "definition": "{}",
                "templates_sha256": templates_sha,
                "registered_at": at("09:55"),
            }
        )
        self.ledger.db.table("messages").insert_all(
            {
                "message_id": mid(campaign_id, vid),
                "campaign_id": campaign_id,
                "volunteer_id": vid,
                "verp_token": f"tok-{campaign_id}-{vid}",
                "state": "pending",
                "attempts": 0,
            }
            for vid in vids
        )

    def event(
        self,
        when: str,
        kind: str,
        vid: str,
        campaign: str = C1,
        data: dict[str, Any] | None = None,
        *,
        moves: bool = True,
        name_volunteer: bool = True,
    ) -> None:
        state = ("pending" if kind == "queued" else kind) if moves else None
        self.ledger.append_events(
            [
                EventDraft(
                    kind,
                    campaign_id=campaign,
                    volunteer_id=vid if name_volunteer else None,
                    message_id=mid(campaign, vid),
                    data=data or {},
                    state=state,
                )
            ],
            at=when,
        )

    def sent(self, when: str, vid: str, queue_id: str, attempt: int = 1, c: str = C1) -> None:
        self.event(when, "sending", vid, c, {"attempt": attempt})
        reply = f"250 2.0.0 Ok: queued as {queue_id}"
        data = {"reply": reply, "code": 250, "queue_id": queue_id, "attempt": attempt}
        self.event(when, "sent", vid, c, data)

    def refused(self, when: str, vid: str, kind: str, reply: str, attempt: int) -> None:
        self.event(when, "sending", vid, C1, {"attempt": attempt})
        code = int(reply[:3])
        self.event(when, kind, vid, C1, {"reply": reply, "code": code, "attempt": attempt})

    def bounce(self, when: str, kind: str, vid: str, diagnostic: str, c: str = C1) -> None:
        person = next(p for p in PEOPLE if p.vid == vid)
        data = {
            "status": "5.1.1" if kind == "bounced_hard" else "4.2.2",
            "action": "failed" if kind == "bounced_hard" else "delayed",
            "diagnostic": diagnostic,
            "recipient": person.email,
            "source": "bounces/new/1",
        }
        self.event(when, kind, vid, c, data)


HARD_DIAG = "smtp; 550 5.1.1 <mallory@example.com>: Recipient address rejected: User unknown"
SOFT_DIAG = "smtp; 452 4.2.2 Mailbox full"
PERM_REPLY = "550 5.7.1 Relaying denied"
TEMP_REPLY = "451 4.7.1 Try again later"


def build(ledger: Ledger) -> None:
    """Campaign 1 to all ten, with every kind of outcome; campaign 2 to three of them."""
    b = Builder(ledger)
    b.volunteers()
    b.campaign(C1, [p.vid for p in PEOPLE], TEMPLATES_SHA)
    b.campaign(C2, ["v02", "v03", "v06"], None)
    for p in PEOPLE:
        b.event(at("09:58"), "queued", p.vid)
    b.sent(at("10:00"), "v01", "AAA1")
    b.sent(at("10:01"), "v02", "AAA2")
    b.sent(at("10:02"), "v03", "AAA3")
    b.sent(at("10:03"), "v04", "AAA4")
    b.refused(at("10:04"), "v05", "failed_permanent", PERM_REPLY, 1)
    b.refused(at("10:05"), "v06", "deferred", TEMP_REPLY, 1)
    b.refused(at("10:06"), "v08", "deferred", TEMP_REPLY, 1)
    b.event(at("10:07"), "sending", "v07", data={"attempt": 1})
    b.event(at("10:08"), "uncertain", "v07", data={"attempt": 1})
    b.sent(at("10:09"), "v10", "AAA10")
    b.refused(at("11:05"), "v06", "deferred", TEMP_REPLY, 2)
    b.sent(at("11:06"), "v08", "AAA8", attempt=2)
    b.refused(at("11:30"), "v06", "failed_temporary", TEMP_REPLY, 3)
    # Delivery reports. The one for v01 names only the message, as a report matched by
    # Message-ID may; it is still part of v01's history.
    b.event(at("12:00"), "delivered", "v01", data={"status": "2.0.0"}, name_volunteer=False)
    b.bounce(at("12:10"), "bounced_hard", "v03", HARD_DIAG)
    ledger.append_events(
        [
            EventDraft(
                "address_suppressed",
                campaign_id=C1,
                volunteer_id="v03",
                message_id=mid(C1, "v03"),
                data={"email": "mallory@example.com", "reason": "bounced_hard 5.1.1"},
            )
        ],
        at=at("12:10"),
    )
    seq = ledger.count("events")
    ledger.db.table("suppressions").insert_all(
        [
            {
                "email": "mallory@example.com",
                "reason": "bounced_hard 5.1.1",
                "at": at("12:10"),
                "event_seq": seq,
            },
            # Suppressed by hand, with no event: v10 was sent campaign 1 before, but no
            # later notice can reach them.
            {"email": "yamamoto@example.jp", "reason": "asked by phone", "at": at("13:00")},
        ]
    )
    b.bounce(at("12:20"), "bounced_soft", "v04", SOFT_DIAG)
    # Campaign 2, three weeks later.
    day = "2020-04-29"
    for vid in ("v02", "v03", "v06"):
        b.event(at("09:00", day), "queued", vid, C2)
    b.sent(at("09:01", day), "v02", "BBB2", c=C2)
    b.event(at("09:01", day), "suppressed", "v03", C2, {"reason": "address suppressed"})
    b.sent(at("09:02", day), "v06", "BBB6", c=C2)
    b.bounce(at("09:30", day), "bounced_hard", "v02", "smtp; 550 5.1.1 mailbox gone", c=C2)
    # Import history: rejections in an older import no longer count.
    imports = ledger.db.table("imports")
    for import_id, name in ((1, "old.csv"), (2, "volunteers.csv")):
        imports.insert(
            {
                "id": import_id,
                "file_name": name,
                "sha256": "cd" * 32,
                "imported_at": at("08:00") if import_id == 1 else at("09:00"),
                "rows_total": 14,
                "rows_valid": 10,
                "rows_rejected": 3,
            }
        )
    ledger.db.table("rejected_rows").insert_all(
        [
            {
                "import_id": 1,
                "row": 3,
                "column": "email",
                "value": "old@",
                "reason": "bad",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 7,
                "column": "メールアドレス",  # the header as a mapped file spells it
                "value": "kato at example.jp",
                "reason": "not a valid address",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 7,
                "column": "exposure",
                "value": "maybe",
                "reason": "unknown exposure",
                "field": "exposure",
            },
            {
                "import_id": 2,
                "row": 9,
                "column": "email",
                "value": "ALICE@example.org",
                "reason": "duplicate of row 2",
                "field": "email",
            },
            {
                "import_id": 2,
                "row": 12,
                "column": "family_name",
                "value": "",
                "reason": "empty",
                "field": "family_name",
            },
        ]
    )


@pytest.fixture
def built(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


def tamper(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def by_vid(rows: Any) -> dict[str, Any]:
    return {r.volunteer_id: r for r in rows}


# --- history ------------------------------------------------------------------------------


def test_history_is_every_event_of_one_person_in_chain_order(built: Ledger) -> None:
    events = volunteer_history(built, "ALICE@example.org")
    assert [e.kind for e in events] == ["queued", "sending", "sent", "delivered"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[-1].volunteer_id is None  # found through its message
    assert volunteer_history(built, "v01") == events


def test_history_spans_campaigns(built: Ledger) -> None:
    events = volunteer_history(built, "v02")
    assert [(e.campaign_id, e.kind) for e in events] == [
        (C1, "queued"),
        (C1, "sending"),
        (C1, "sent"),
        (C2, "queued"),
        (C2, "sending"),
        (C2, "sent"),
        (C2, "bounced_hard"),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_history_of_unknown_person_is_an_error(built: Ledger) -> None:
    with pytest.raises(VolunteerNotFound):
        volunteer_history(built, "nobody@example.org")


# --- the campaign report --------------------------------------------------------------------


def test_counts_by_state_locale_and_exposure(built: Ledger) -> None:
    r = campaign_report(built, C1)
    assert r.total == 10
    assert dict(r.counts) == {
        "pending": 1,
        "sent": 3,
        "failed_temporary": 1,
        "failed_permanent": 1,
        "uncertain": 1,
        "bounced_hard": 1,
        "bounced_soft": 1,
        "delivered": 1,
    }
    assert r.states == tuple(r.counts)  # lifecycle order, only states that occur
    assert {k: {s: n for s, n in v.items() if n} for k, v in r.counts_by_locale.items()} == {
        "en": {
            "pending": 1,
            "failed_temporary": 1,
            "uncertain": 1,
            "bounced_hard": 1,
            "bounced_soft": 1,
            "delivered": 1,
        },
        "ja": {"sent": 3, "failed_permanent": 1},
    }
    exposure = {k: {s: n for s, n in v.items() if n} for k, v in r.counts_by_exposure.items()}
    assert exposure == {
        "published": {"sent": 1, "failed_temporary": 1, "delivered": 1},
        "screened": {"sent": 2, "uncertain": 1, "bounced_hard": 1},
        "database_only": {"pending": 1, "failed_permanent": 1, "bounced_soft": 1},
    }
    assert list(r.counts_by_exposure) == ["published", "screened", "database_only"]


def test_each_recipient_final_state_times_and_replies(built: Ledger) -> None:
    r = by_vid(campaign_report(built, C1).recipients)
    assert {vid: o.state for vid, o in r.items()} == {
        "v01": "delivered",
        "v02": "sent",
        "v03": "bounced_hard",
        "v04": "bounced_soft",
        "v05": "failed_permanent",
        "v06": "failed_temporary",
        "v07": "uncertain",
        "v08": "sent",
        "v09": "pending",
        "v10": "sent",
    }
    v06 = r["v06"]
    assert (v06.first_attempt_at, v06.final_at, v06.attempts) == (at("10:05"), at("11:30"), 3)
    assert (v06.smtp_reply, v06.queue_id, v06.diagnostic) == (TEMP_REPLY, "", "")
    v08 = r["v08"]
    assert (v08.first_attempt_at, v08.final_at, v08.attempts) == (at("10:06"), at("11:06"), 2)
    assert (v08.smtp_reply, v08.queue_id) == ("250 2.0.0 Ok: queued as AAA8", "AAA8")
    v03 = r["v03"]
    assert v03.final_at == at("12:10") and v03.diagnostic == HARD_DIAG
    assert v03.smtp_reply == "250 2.0.0 Ok: queued as AAA3" and v03.queue_id == "AAA3"
    assert r["v04"].diagnostic == SOFT_DIAG
    assert r["v05"].smtp_reply == PERM_REPLY and r["v05"].attempts == 1
    assert r["v01"].final_at == at("12:00") and r["v01"].queue_id == "AAA1"
    assert r["v09"].first_attempt_at is None and r["v09"].attempts == 0
    assert r["v02"].name == "鈴木 一郎" and r["v01"].name == "Alice Dane"


def test_timeline_buckets_events_by_hour_and_kind(built: Ledger) -> None:
    t = campaign_report(built, C1).timeline
    assert (t.first_send_at, t.last_send_at) == (at("10:00"), at("11:30"))
    hours = {b.hour: dict(b.counts) for b in t.hours}
    assert list(hours) == [
        "2020-04-01T09:00Z",
        "2020-04-01T10:00Z",
        "2020-04-01T11:00Z",
        "2020-04-01T12:00Z",
    ]
    assert hours["2020-04-01T09:00Z"] == {"queued": 10}
    assert hours["2020-04-01T10:00Z"] == {
        "sending": 9,
        "sent": 5,
        "failed_permanent": 1,
        "deferred": 2,
        "uncertain": 1,
    }
    assert hours["2020-04-01T11:00Z"] == {
        "sending": 3,
        "deferred": 1,
        "sent": 1,
        "failed_temporary": 1,
    }
    assert hours["2020-04-01T12:00Z"] == {
        "delivered": 1,
        "bounced_hard": 1,
        "address_suppressed": 1,
        "bounced_soft": 1,
    }


def test_integrity_fields(built: Ledger) -> None:
    r = campaign_report(built, C1, templates_sha256=TEMPLATES_SHA)
    assert r.verification.ok and r.verification.events == built.count("events")
    assert r.verification.head == list(built.events())[-1].hash
    assert r.templates.recorded == TEMPLATES_SHA and r.templates.matches is True
    assert campaign_report(built, C1, templates_sha256="00" * 32).templates.matches is False
    assert campaign_report(built, C2).templates.recorded is None
    assert r.state_mismatches == ()
    # The sha256 is of the file itself, WAL checkpointed into it first.
    assert r.ledger.complete and r.ledger.note == ""
    assert r.ledger.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()
    wal = built.path.with_name(built.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_ledger_hash_says_so_when_writes_are_still_in_the_wal(
    built: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "_CHECKPOINT_BUSY_MS", 20)
    reader = sqlite3.connect(built.path, isolation_level=None)
    try:
        # An open read (another `notifier status`, say) pins the file while a send writes.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        built.append_events([EventDraft("volunteer_updated", volunteer_id="v01")])
        r = campaign_report(built, C1)
        assert not r.ledger.complete and "-wal" in r.ledger.note
        assert r.verification.ok  # the report itself still sees every event
    finally:
        reader.close()
    r = campaign_report(built, C1)
    assert r.ledger.complete
    assert r.ledger.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_tampered_event_shows_as_failed_verification(built: Ledger) -> None:
    seq = next(e.seq for e in built.events(kinds=["failed_permanent"]))
    tamper(built.path, "UPDATE events SET data = ? WHERE seq = ?", ('{"reply":"250 ok"}', seq))
    r = campaign_report(built, C1)
    assert not r.verification.ok
    assert r.verification.first_bad_seq == seq
    assert "edited" in r.verification.reason
    html = report_as_html(r)
    assert "FAILED" in html and "PASSED" not in html
    assert report_as_dict(r)["verification"]["ok"] is False


def test_a_state_no_event_backs_is_flagged(built: Ledger) -> None:
    # Claiming, behind the ledger's back, that someone never sent to was reached.
    tamper(
        built.path,
        "UPDATE messages SET state = 'delivered' WHERE message_id = ?",
        (mid(C1, "v09"),),
    )
    tamper(built.path, "UPDATE messages SET state = 'sent' WHERE message_id = ?", (mid(C1, "v02"),))
    r = campaign_report(built, C1)
    assert r.verification.ok  # the chain does not cover the messages table ...
    assert r.state_mismatches == (mid(C1, "v09"),)  # ... so the report cross-checks it
    assert "have a stored state that differs" in report_as_html(r)


def test_unknown_campaign_is_an_error_with_a_hint(built: Ledger) -> None:
    with pytest.raises(CampaignError) as caught:
        campaign_report(built, "no-such-campaign")
    assert caught.value.hint is not None and "notifier campaign list" in caught.value.hint
    assert not built.conn.in_transaction


# --- renderers --------------------------------------------------------------------------------


def test_csv_has_the_contract_header_and_one_row_per_recipient(built: Ledger) -> None:
    text = report_as_csv(campaign_report(built, C1))
    assert text.splitlines()[0] == (
        "volunteer_id,email,locale,exposure,state,first_attempt_at,final_at,attempts,"
        "smtp_reply,queue_id,diagnostic"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == REPORT_CSV_COLUMNS
    assert [r["volunteer_id"] for r in rows] == [p.vid for p in PEOPLE]
    assert rows[5] == {
        "volunteer_id": "v06",
        "email": "carol@example.org",
        "locale": "en",
        "exposure": "published",
        "state": "failed_temporary",
        "first_attempt_at": at("10:05"),
        "final_at": at("11:30"),
        "attempts": "3",
        "smtp_reply": TEMP_REPLY,
        "queue_id": "",
        "diagnostic": "",
    }
    assert rows[2]["diagnostic"] == HARD_DIAG


def test_json_is_one_object_with_the_documented_keys(built: Ledger) -> None:
    data = json.loads(report_as_json(campaign_report(built, C1)))
    assert set(data) == {
        "campaign",
        "title",
        "follows",
        "registered_at",
        "generated_at",
        "ledger",
        "verification",
        "templates_sha256",
        "total",
        "counts",
        "counts_by_locale",
        "counts_by_exposure",
        "timeline",
        "recipients",
        "state_mismatches",
    }
    assert data["campaign"] == C1 and data["total"] == 10 and data["counts"]["sent"] == 3
    assert set(data["ledger"]) == {"file", "sha256", "complete", "note"}
    assert data["verification"]["ok"] is True
    assert data["counts_by_locale"]["ja"]["sent"] == 3
    assert data["timeline"]["hours"][0] == {"hour": "2020-04-01T09:00Z", "counts": {"queued": 10}}
    v02 = next(r for r in data["recipients"] if r["volunteer_id"] == "v02")
    assert v02["name"] == "鈴木 一郎" and v02["state"] == "sent" and v02["queue_id"] == "AAA2"


def test_html_is_self_contained_escaped_and_carries_the_proof(built: Ledger) -> None:
    r = campaign_report(built, C1)
    html = report_as_html(r)
    lowered = html.lower()
    for forbidden in ("<script", "http", "src=", "<a ", "<link", "@import", "url("):
        assert forbidden not in lowered, forbidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "PASSED" in html and r.verification.head in html
    assert hashlib.sha256(built.path.read_bytes()).hexdigest() in html
    assert TEMPLATES_SHA in html
    assert "鈴木 一郎" in html and HARD_DIAG.replace("<", "&lt;").replace(">", "&gt;") in html
    assert r.generated_at in html and "UTC" in html
    assert html.count("<tr><td>v") == 10  # one recipients row each
    assert "not recorded" in report_as_html(campaign_report(built, C2))


# --- unreachable ------------------------------------------------------------------------------


def test_unreachable_lists_who_no_notice_reached_and_why(built: Ledger) -> None:
    people = unreachable(built)
    listed = {(p.volunteer_id, p.email): p for p in people}
    assert set(listed) == {
        ("v02", "suzuki@example.jp"),  # reached by campaign 1, hard bounce in campaign 2
        ("v03", "mallory@example.com"),  # hard bounce, then skipped in campaign 2
        ("v05", "tanaka@example.jp"),  # refused permanently
        ("v10", "yamamoto@example.jp"),  # suppressed by hand after being sent
        (None, "kato at example.jp"),  # rejected at the latest import
    }
    # Left out: v06 (failed_temporary, then reached by campaign 2), v04 (soft bounce:
    # still open), v07 (uncertain), v09 (never sent), and the duplicate row of alice.
    v02 = listed[("v02", "suzuki@example.jp")]
    assert (v02.reason, v02.campaign_id, v02.detail) == (
        "hard_bounce",
        C2,
        "smtp; 550 5.1.1 mailbox gone",
    )
    assert v02.postal_address == "東京都千代田区1-1" and v02.name == "鈴木 一郎"
    v03 = listed[("v03", "mallory@example.com")]
    assert (v03.reason, v03.campaign_id, v03.at) == ("suppressed", C2, at("09:01", "2020-04-29"))
    v05 = listed[("v05", "tanaka@example.jp")]
    assert (v05.reason, v05.detail, v05.campaign_id, v05.at) == (
        "failed_permanent",
        PERM_REPLY,
        C1,
        at("10:04"),
    )
    assert v05.locale == "ja" and v05.exposure == "database_only"
    v10 = listed[("v10", "yamamoto@example.jp")]
    assert (v10.reason, v10.detail, v10.campaign_id) == ("suppressed", "asked by phone", None)
    row = listed[(None, "kato at example.jp")]
    assert (row.reason, row.import_file, row.import_row, row.at) == (
        "rejected_at_import",
        "volunteers.csv",
        7,
        at("09:00"),
    )
    assert row.detail == "メールアドレス: not a valid address; exposure: unknown exposure"


def test_only_a_later_reach_clears_a_failure(built: Ledger) -> None:
    b = Builder(built)
    # v06 reached by campaign 2 ... until that message hard-bounces too.
    b.bounce(at("10:00", "2020-04-30"), "bounced_hard", "v06", "smtp; 550 gone", c=C2)
    # v05 gets campaign 2 after all, and it goes out.
    built.db.table("messages").insert(
        {"message_id": mid(C2, "v05"), "campaign_id": C2, "volunteer_id": "v05", "state": "pending"}
    )
    b.sent(at("11:00", "2020-04-30"), "v05", "CCC5", c=C2)
    # v08 is refused campaign 2; a late delivery report for campaign 1 does not make
    # that earlier notice a later one.
    built.db.table("messages").insert(
        {"message_id": mid(C2, "v08"), "campaign_id": C2, "volunteer_id": "v08", "state": "pending"}
    )
    b.event(at("12:00", "2020-04-30"), "failed_permanent", "v08", C2, {"reply": PERM_REPLY})
    b.event(at("13:00", "2020-04-30"), "delivered", "v08", C1, {"status": "2.0.0"})
    listed = {p.volunteer_id: p for p in unreachable(built)}
    assert listed["v06"].reason == "hard_bounce" and listed["v06"].campaign_id == C2
    assert "v05" not in listed
    assert (listed["v08"].reason, listed["v08"].campaign_id) == ("failed_permanent", C2)


def test_unreachable_renderings(built: Ledger) -> None:
    people = unreachable(built)
    text = unreachable_as_csv(people)
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == UNREACHABLE_CSV_COLUMNS
    assert "postal_address" in rows[0] and len(rows) == 1 + len(people)
    v05 = next(r for r in rows if r[0] == "v05")
    assert dict(zip(rows[0], v05, strict=True)) == {
        "volunteer_id": "v05",
        "name": "田中 花子",
        "email": "tanaka@example.jp",
        "locale": "ja",
        "exposure": "database_only",
        "postal_address": "大阪府大阪市2-2",
        "reason": "failed_permanent",
        "detail": PERM_REPLY,
        "campaign": C1,
        "at": at("10:04"),
        "import_file": "",
        "import_row": "",
    }
    data = json.loads(unreachable_as_json(people))
    assert isinstance(data, list) and len(data) == len(people)
    assert set(data[0]) == set(UNREACHABLE_CSV_COLUMNS)


def test_csv_cells_cannot_run_as_spreadsheet_formulas(built: Ledger) -> None:
    built.db.table("volunteers").update("v05", {"postal_address": "=HYPERLINK(1)"})
    text = unreachable_as_csv(unreachable(built))
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text


def test_empty_ledger_has_no_one_unreachable(ledger: Ledger) -> None:
    assert unreachable(ledger) == []


def test_attempts_count_the_sendings_when_events_carry_no_number(built: Ledger) -> None:
    b = Builder(built)
    built.db.table("messages").insert(
        {"message_id": mid(C2, "v09"), "campaign_id": C2, "volunteer_id": "v09", "state": "pending"}
    )
    for hhmm in ("10:00", "10:10"):
        b.event(at(hhmm, "2020-04-29"), "sending", "v09", C2)
        b.event(at(hhmm, "2020-04-29"), "deferred", "v09", C2, {"reply": TEMP_REPLY})
    v09 = by_vid(campaign_report(built, C2).recipients)["v09"]
    assert (v09.state, v09.attempts, v09.smtp_reply) == ("deferred", 2, TEMP_REPLY)
