"""Proof of notification, the facts: history, the campaign report, unreachable people."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from conftest import fact
from report_scenario import (
    C1,
    C2,
    HARD_DIAG,
    PERM_REPLY,
    SOFT_DIAG,
    TEMP_REPLY,
    TEMPLATES_SHA,
    Builder,
    append,
    at,
    build,
    by_vid,
    mid,
    tamper,
)

from notifier.errors import CampaignError, VolunteerNotFound
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger
from notifier.ledger import store as store_module
from notifier.report import campaign_report, unreachable, volunteer_history


@pytest.fixture
def built(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


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


def test_history_of_someone_no_longer_on_the_roster(built: Ledger) -> None:
    # Someone whose roster row was removed by hand: their events remain.
    append(
        built,
        [EventDraft(EventKind.VOLUNTEER_ADDED, volunteer_id="v99", data={"row": 2})],
        at("14:00"),
    )
    (event,) = volunteer_history(built, " v99 ")
    assert (event.kind, event.volunteer_id) == ("volunteer_added", "v99")


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


def test_the_timeline_counts_an_event_naming_only_a_message_of_the_campaign(
    built: Ledger,
) -> None:
    """A delivery report matched by Message-ID alone names the message, not its campaign:
    it is still the campaign's, in its hour; another campaign's timeline never has it."""
    before = campaign_report(built, C2).timeline
    append(
        built,
        [EventDraft(EventKind.DELIVERED, message_id=mid(C1, "v09"), data={"status": "2.0.0"})],
        at("13:05"),
    )
    hours = {b.hour: dict(b.counts) for b in campaign_report(built, C1).timeline.hours}
    assert hours["2020-04-01T13:00Z"] == {"delivered": 1}
    assert campaign_report(built, C2).timeline == before


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
    monkeypatch.setattr(store_module, "_CHECKPOINT_BUSY_MS", 20)
    reader = sqlite3.connect(built.path, isolation_level=None)
    try:
        # An open read (another `notifier status`, say) pins the file while a send writes.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        built.record([fact("written meanwhile")])
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


def test_a_state_no_event_backs_is_flagged(built: Ledger) -> None:
    # Claiming, behind the ledger's back, that someone never sent to was reached.
    tamper(
        built.path,
        "UPDATE messages SET state = 'delivered' WHERE message_id = ?",
        (mid(C1, "v09"),),
    )
    tamper(built.path, "UPDATE messages SET state = 'sent' WHERE message_id = ?", (mid(C1, "v02"),))
    r = campaign_report(built, C1)
    # The chain vouches for the messages table: verification names the first edited row ...
    assert not r.verification.ok and "table messages" in r.verification.reason
    assert r.state_mismatches == (mid(C1, "v09"),)  # ... and the report cross-checks it


def test_unknown_campaign_is_an_error_with_a_hint(built: Ledger) -> None:
    with pytest.raises(CampaignError) as caught:
        campaign_report(built, "no-such-campaign")
    assert caught.value.hint is not None and "notifier campaign list" in caught.value.hint
    assert not built.in_transaction


# --- unreachable ------------------------------------------------------------------------------


def test_unreachable_lists_who_no_notice_reached_and_why(built: Ledger) -> None:
    people = unreachable(built)
    listed = {(p.volunteer_id, p.email): p for p in people}
    assert set(listed) == {
        ("v02", "suzuki@example.jp"),  # reached by campaign 1, hard bounce in campaign 2
        ("v03", "mallory@example.com"),  # hard bounce, then skipped in campaign 2
        ("v04", "bob@example.org"),  # soft bounce, and nothing reached them since
        ("v05", "tanaka@example.jp"),  # refused permanently
        ("v10", "yamamoto@example.jp"),  # suppressed by hand after being sent
        (None, "old@"),  # rejected at an older import, never imported since
        (None, "kato at example.jp"),  # rejected at the latest import
        ("v12", "lee@example.org"),  # rejected (no family name): not on the roster
    }
    # Left out: v06 (failed_temporary, then reached by campaign 2), v07 (uncertain: see
    # `status`), v09 (not sent yet: see `status`), and the duplicate row of alice (her
    # address is on the roster).
    v04 = listed[("v04", "bob@example.org")]
    assert (v04.reason, v04.campaign_id, v04.detail) == ("bounced_soft", C1, SOFT_DIAG)
    lee = listed[("v12", "lee@example.org")]
    assert (lee.import_file, lee.import_row, lee.postal_address) == (
        "volunteers.csv",
        12,
        "12 Row St",
    )
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
    assert row.name == "加藤 学"  # as the file has it, in the person's own name order
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
