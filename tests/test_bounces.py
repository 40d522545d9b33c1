"""Bounce parsing, classification, correlation and ingest, on real report bytes.

The fixtures in tests/fixtures/bounces/ are written after real MTAs' output. Their VERP
tokens were made with FIXTURE_KEY from the Message-IDs below, so a ledger holding those
messages matches them the way a live one would.
"""

from __future__ import annotations

import base64
import mailbox
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_helpers import add_volunteers

from notifier import verp
from notifier.bounces import (
    RECORD_KEYS,
    BounceRecord,
    classify,
    ingest,
    parse_full_report,
    parse_report,
    read_imap,
    read_sources,
    unmatched_reports,
)
from notifier.compose import message_id_for
from notifier.errors import BounceError
from notifier.ledger import Event, Ledger
from notifier.message import DeliveryOutcome, MessageState, NewMessage, state_after_report
from notifier.volunteer import Volunteer

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
FIXTURE_KEY = b"notifier-test-fixtures-key-32byt"
CAMPAIGN = "2020-03-breach"

# volunteer number -> address the notice went to
PEOPLE: dict[int, str] = {
    1: "alice@example.org",
    2: "bob@example.com",
    3: "carol@example.jp",
    4: "dave@example.com",
    5: "erin@example.com",
    6: "frank@example.com",
    7: "山田@example.jp",
    8: "ivan@example.org",
    9: "judy@example.com",
    10: "ken@example.com",
    11: "lena@example.org",
    12: "mike@example.com",
    13: "tanaka@example.jp",
    14: "nina@example.com",
    15: "oscar@example.com",
    16: "peggy@example.org",
}


def mid(n: int) -> str:
    return f"<2020-03-breach.v-{n:06d}@notify.example.org>"


def token(n: int) -> str:
    return verp.make_token(FIXTURE_KEY, mid(n))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rec(
    n: int | None,
    action: str | None,
    status: str | None,
    recipient: str | None,
    kind: str,
    diagnostic: str | None,
    *,
    envid: bool = True,
    message_id: bool = True,
) -> dict[str, Any]:
    """Expected record (without `file`) for a fixture about volunteer n."""
    return {
        "action": action,
        "status": status,
        "recipient": recipient,
        "kind": kind,
        "original_message_id": mid(n) if n and message_id else None,
        "envelope_id": token(n) if n and envid else None,
        "verp_token": token(n) if n else None,
        "diagnostic": diagnostic,
    }


EXPECTED: dict[str, list[dict[str, Any]]] = {
    "postfix-hard-511.eml": [
        rec(
            1,
            "failed",
            "5.1.1",
            "alice@example.org",
            "hard",
            "550 5.1.1 <alice@example.org>: Recipient address rejected: "
            "User unknown in local recipient table",
        )
    ],
    "postfix-expired-441.eml": [
        rec(
            2,
            "failed",
            "4.4.1",
            "bob@example.com",
            "expired",
            "connect to mx.example.com[192.0.2.20]:25: Connection timed out",
        )
    ],
    "postfix-delayed.eml": [
        rec(
            3,
            "delayed",
            "4.7.1",
            "carol@example.jp",
            "delayed",
            "451 4.7.1 Service unavailable - try again later",
        )
    ],
    "exim-dsn.eml": [
        rec(
            4,
            "failed",
            "5.0.0",
            "dave@example.com",
            "hard",
            "550 5.1.1 <dave@example.com>: Recipient address rejected: User unknown",
        )
    ],
    "gmail-folded.eml": [
        rec(
            5,
            "failed",
            "5.1.1",
            "erin@example.com",
            "hard",
            "550-5.1.1 The email account that you tried to reach does not exist. Please try "
            "550-5.1.1 double-checking the recipient's email address for typos or "
            "550-5.1.1 unnecessary spaces. Learn more at "
            "550 5.1.1 https://support.example.com/mail/?p=NoSuchUser a7si1234567ejb.88 - gsmtp",
            envid=False,
        )
    ],
    "exchange-multi.eml": [
        rec(
            6,
            "failed",
            "5.1.10",
            "frank@example.com",
            "hard",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            envid=False,
        ),
        rec(
            6,
            "failed",
            "5.2.2",
            "grace@example.com",
            "soft",  # a full mailbox: the address exists
            "554 5.2.2 mailbox full; "
            "STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
            envid=False,
        ),
        rec(
            6,
            "failed",
            "5.7.1",
            "heidi@example.jp",
            "blocked",  # refused by policy: the address is fine
            "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized",
            envid=False,
        ),
    ],
    "smtputf8-global.eml": [
        rec(
            7,
            "failed",
            "5.1.1",
            "山田@example.jp",
            "hard",
            'unknown user: "山田", メールボックスが見つかりません',
        )
    ],
    "success-delivered.eml": [
        rec(8, "delivered", "2.0.0", "ivan@example.org", "delivered", "delivered to mailbox")
    ],
    "success-relayed.eml": [
        rec(9, "relayed", "2.0.0", "judy@example.com", "delivered", "250 2.0.0 Ok: queued as 4Zk1")
    ],
    "action-failure.eml": [
        rec(10, "failure", "5.0.0", "ken@example.com", "hard", "550 Mailbox not found", envid=False)
    ],
    "action-delayed-case.eml": [
        rec(11, "delayed", "4.2.2", "lena@example.org", "delayed", "452 4.2.2 Mailbox full")
    ],
    "no-status.eml": [
        rec(
            12,
            "failed",
            None,
            "mike@example.com",
            "hard",
            "550 Requested action not taken: mailbox unavailable",
            envid=False,
        )
    ],
    "x400-recipient.eml": [
        rec(13, "failed", "5.1.1", "tanaka@example.jp", "hard", None, envid=False)
    ],
    # Not DSNs: flufl.bounce finds the recipients; only the VERP token correlates them.
    "qmail.eml": [
        rec(14, "failed", None, "nina@example.com", "hard", None, envid=False, message_id=False)
    ],
    "yahoo.eml": [
        rec(15, "failed", None, "oscar@example.com", "hard", None, envid=False, message_id=False)
    ],
    "exim-classic.eml": [
        rec(16, "failed", None, "peggy@example.org", "hard", None, envid=False, message_id=False)
    ],
}


# The hand-written fixtures above, about the volunteers in PEOPLE.
HAND_WRITTEN: list[str] = sorted(EXPECTED)


def real(message_id: str, token: str, **fields: str | None) -> dict[str, Any]:
    return {
        "original_message_id": message_id,
        "envelope_id": token,
        "verp_token": token,
        **fields,
    }


# Real output of Postfix 3.7 (a throwaway instance relaying to a scripted server; CRLF as
# it came over SMTP): a 450 under maximal_queue_lifetime=0, which Postfix reports as
# `Action: failed` with the 4.x.x status kept, and an SMTPUTF8 550, which it reports as
# message/global-delivery-status with message/global-headers.
EXPECTED["postfix-real-expired.eml"] = [
    {
        "action": "failed",
        "status": "4.2.0",
        "recipient": "soft@example.com",
        "kind": "expired",
        **real("<pf.soft@notify.example.org>", "dt6hn3mhskzcx7zu3y2bbrfgr6o54d3y"),
        "diagnostic": "450 4.2.0 <soft@example.com>: Recipient address rejected: Greylisted",
    }
]
EXPECTED["postfix-real-smtputf8.eml"] = [
    {
        "action": "failed",
        "status": "5.1.1",
        "recipient": "山田@example.jp",
        "kind": "hard",
        **real("<pf.utf8@notify.example.org>", "tzf5em7xigpbuygea6heq5io6i5htbzb"),
        "diagnostic": "550 5.1.1 <山田@example.jp>: ユーザーが存在しません",
    }
]


def test_every_fixture_has_expectations() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_expected_records(name: str) -> None:
    records = parse_report(fixture(name), source=name)
    got = [{k: v for k, v in r.to_json().items() if k != "file"} for r in records]
    assert got == EXPECTED[name]
    assert all(r.file == name for r in records)
    assert all(list(r.to_json()) == list(RECORD_KEYS) for r in records)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_tokens_are_authentic(name: str) -> None:
    """The fixtures stand for our own mail: their tokens verify under the fixture key."""
    (first, *_) = parse_report(fixture(name), source=name)
    assert first.verp_token is not None
    assert verp.token_is_authentic(FIXTURE_KEY, first.verp_token)


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", "hard"),
        ("failed", "4.4.1", "expired"),  # queue lifetime ran out: Postfix keeps the 4.x.x
        ("failed", None, "hard"),
        ("failure", "5.0.0", "hard"),
        ("Failed", "5.1.1", "hard"),
        ("delayed", "4.4.1", "delayed"),
        ("Delayed", "4.2.2", "delayed"),
        ("delivered", "2.0.0", "delivered"),
        ("relayed", "2.0.0", "delivered"),
        ("expanded", "2.0.0", "delivered"),
        (" RELAYED ", None, "delivered"),
        (None, "5.1.1", "unparseable"),
        ("", None, "unparseable"),
        ("bounced", "5.1.1", "hard"),  # a non-standard Action with a 5.x.x status fails
        ("bounced", "4.4.1", "unparseable"),
        ("error", "5.7.1", "blocked"),
    ],
)
def test_classification_table(action: str | None, status: str | None, kind: str) -> None:
    assert classify(action, status) == kind


def test_action_comment_is_ignored_and_case_folded() -> None:
    data = fixture("postfix-hard-511.eml").replace(
        b"Action: failed\n", b"Action: FAILED (bad destination mailbox)\n"
    )
    (record,) = parse_report(data, source="x")
    assert (record.action, record.kind) == ("failed", "hard")


def test_message_global_headers_and_escaped_utf8_address() -> None:
    """Postfix's SMTPUTF8 flavour: message/global-headers, and \\x{...} in utf-8 addresses."""
    data = (
        fixture("smtputf8-global.eml")
        .replace(b"Content-Type: message/global\n", b"Content-Type: message/global-headers\n")
        .replace(
            "Final-Recipient: utf-8; 山田@example.jp".encode(),
            b"Final-Recipient: utf-8; \\x{5C71}\\x{7530}@example.jp",
        )
    )
    (record,) = parse_report(data, source="x")
    assert record.recipient == "山田@example.jp"
    assert record.original_message_id == mid(7)


def test_base64_global_delivery_status() -> None:
    """message/global-delivery-status may travel base64-encoded (RFC 6533)."""
    text = fixture("smtputf8-global.eml").decode("utf-8")
    head, rest = text.split("Content-Type: message/global-delivery-status\n", 1)
    cte, body_and_more = rest.split("\n\n", 1)
    body, more = body_and_more.split("\n--3F2A01C0B7D", 1)
    encoded = base64.encodebytes(body.encode("utf-8")).decode("ascii")
    data = (
        head
        + "Content-Type: message/global-delivery-status\n"
        + "Content-Transfer-Encoding: base64\n\n"
        + encoded
        + "\n--3F2A01C0B7D"
        + more
    ).encode("utf-8")
    assert cte == "Content-Transfer-Encoding: 8bit"
    (record,) = parse_report(data, source="x")
    assert (record.recipient, record.status, record.kind) == ("山田@example.jp", "5.1.1", "hard")


def test_several_blocks_in_a_global_report_without_per_message_block() -> None:
    data = b"""From: MAILER-DAEMON@mx.example.jp
To: bounces+%s@notify.example.org
MIME-Version: 1.0
Content-Type: multipart/report; report-type=global-delivery-status; boundary="b"

--b
Content-Type: message/global-delivery-status

Final-Recipient: rfc822;one@example.jp
Action: delayed
Status: 4.4.7

Final-Recipient: rfc822;two@example.jp
Action: delivered
Status: 2.0.0
--b--
""" % token(7).encode()
    records = parse_report(data, source="x")
    assert [(r.recipient, r.kind) for r in records] == [
        ("one@example.jp", "delayed"),
        ("two@example.jp", "delivered"),
    ]
    assert records[0].verp_token == token(7)


def auto_reply(n: int) -> bytes:
    """An out-of-office reply sent to the VERP address: not a bounce."""
    return (
        f"From: {PEOPLE[n]}\nTo: bounces+{token(n)}@notify.example.org\n"
        "Subject: Out of office\n\nAway until May.\n"
    ).encode()


def test_not_a_bounce_has_no_records_but_keeps_its_facts() -> None:
    report = parse_full_report(auto_reply(1), source="x")
    assert report.records == ()
    assert report.verp_token == token(1)
    assert not report.is_dsn


def test_envelope_id_is_xtext_decoded() -> None:
    data = fixture("postfix-hard-511.eml").replace(
        b"Original-Envelope-Id: " + token(1).encode(), b"Original-Envelope-Id: a+2Bb+3Dc"
    )
    (record,) = parse_report(data, source="x")
    assert record.envelope_id == "a+b=c"


# --- robustness ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    records = parse_report(data, source="fuzz")
    assert all(isinstance(r, BounceRecord) for r in records)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(EXPECTED)),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.binary(max_size=8), st.integers(0, 16)),
        max_size=6,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_parse_never_raises_on_mutated_fixtures(
    name: str, edits: list[tuple[int, bytes, int]], cut: int | None
) -> None:
    data = bytearray(fixture(name))
    for position, insert, delete in edits:
        at = position % (len(data) + 1)
        data[at : at + delete] = insert
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    for record in parse_report(bytes(data), source="fuzz"):
        kinds = ("hard", "soft", "blocked", "expired", "delayed", "delivered", "unparseable")
        assert record.kind in kinds


# --- sources -------------------------------------------------------------------------


def test_read_sources_maildir_mbox_eml_and_folder(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1585563302.M1P1.mx").write_bytes(fixture("postfix-hard-511.eml"))
    (maildir / "cur" / "1585563303.M2P1.mx:2,S").write_bytes(fixture("qmail.eml"))
    (maildir / "cur" / ".dovecot.index").write_bytes(b"not mail")
    (maildir / "tmp" / "partial").write_bytes(b"being written")

    box_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(box_path)
    box.add(fixture("yahoo.eml"))
    box.add(fixture("exim-classic.eml"))
    box.close()

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "b.eml").write_bytes(fixture("gmail-folded.eml"))
    (folder / "a.EML").write_bytes(fixture("x400-recipient.eml"))
    (folder / "notes.txt").write_text("not a report")

    single = FIXTURES / "success-relayed.eml"
    found = list(read_sources([maildir, box_path, folder, single]))
    labels = [label for label, _ in found]
    assert labels == [
        str(maildir / "cur" / "1585563303.M2P1.mx:2,S"),
        str(maildir / "new" / "1585563302.M1P1.mx"),
        f"{box_path}#1",
        f"{box_path}#2",
        str(folder / "a.EML"),
        str(folder / "b.eml"),
        str(single),
    ]
    recipients = [parse_report(data, source=label)[0].recipient for label, data in found]
    assert recipients == [
        "nina@example.com",
        "alice@example.org",
        "oscar@example.com",
        "peggy@example.org",
        "tanaka@example.jp",
        "erin@example.com",
        "judy@example.com",
    ]


def test_read_sources_missing_path_is_named_before_anything_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BounceError) as caught:
        read_sources([FIXTURES / "qmail.eml", missing])
    assert caught.value.file == str(missing)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_read_sources_unreadable_file_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked.eml"
    locked.write_bytes(b"x")
    locked.chmod(0)
    with pytest.raises(BounceError) as caught:
        list(read_sources([locked]))
    assert caught.value.file == str(locked)


def test_folder_reads_only_eml_files(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "a.eml").write_bytes(fixture("qmail.eml"))
    (folder / "b.eml").mkdir()  # a folder named like a report is skipped, not read
    assert [label for label, _ in read_sources([folder])] == [str(folder / "a.eml")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bounces@mail.example.org/INBOX", "expected an IMAP URL"),
        ("imaps://mail.example.org/INBOX", "expected an IMAP URL"),
        ("imaps://bounces@mail.example.org/INBOX", "NOTIFIER_IMAP_PASSWORD"),
    ],
)
def test_imap_url_and_password_are_checked_before_connecting(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFIER_IMAP_PASSWORD", raising=False)
    with pytest.raises(BounceError, match=message):
        read_imap(url)


# --- ingest --------------------------------------------------------------------------


def seed_ledger(led: Ledger, numbers: list[int] | None = None, state: str = "sent") -> None:
    """A campaign, its volunteers and their sent messages, as delivery would leave them
    (through the chain, so the ledger verifies)."""
    people = [
        Volunteer(
            volunteer_id=f"v-{n:06d}",
            email=PEOPLE[n],
            email_ascii=PEOPLE[n],
            family_name=f"Family{n}",
            given_name="",
            locale="ja" if PEOPLE[n].endswith(".jp") else "en",
            exposure="screened",
            data_held=("id_documents",),
        )
        for n in numbers or sorted(PEOPLE)
    ]
    add_volunteers(led, people)
    led.register_campaign(
        CAMPAIGN, title="March 2020 breach", follows=None, definition={}, templates_sha256=""
    )
    numbers = numbers or sorted(PEOPLE)
    led.ensure_messages(CAMPAIGN, [NewMessage(mid(n), f"v-{n:06d}", token(n)) for n in numbers])
    led.claim_for_sending([mid(n) for n in numbers])
    led.record_outcomes(
        [DeliveryOutcome(mid(n), CAMPAIGN, f"v-{n:06d}", MessageState(state), 1) for n in numbers]
    )


def sources(*names: str) -> Iterator[tuple[str, bytes]]:
    for name in names:
        yield name, fixture(name)


def state_of(led: Ledger, n: int) -> str:
    return led.message_states(CAMPAIGN)[f"v-{n:06d}"]


def report_events(led: Ledger, n: int) -> list[Event]:
    """The events reports made about message n (seed_ledger's sending left out)."""
    return [
        e
        for e in led.events(message_id=mid(n))
        if "report_sha256" in e.data or e.kind == "address_suppressed"
    ]


def kinds_for(led: Ledger, n: int) -> list[str]:
    return [e.kind for e in report_events(led, n)]


def suppressed(led: Ledger) -> set[str]:
    return {s.email for s in led.suppressions()}


FINAL_STATES = {
    1: "bounced_hard",
    2: "expired",  # the queue lifetime ran out: the address is fine, never suppressed
    3: "sent",  # delayed: the mail system is still trying, nothing changes
    4: "bounced_hard",
    5: "bounced_hard",
    6: "bounced_hard",
    7: "bounced_hard",
    8: "delivered",
    9: "delivered",
    10: "bounced_hard",
    11: "sent",
    12: "bounced_hard",
    13: "bounced_hard",
    14: "bounced_hard",
    15: "bounced_hard",
    16: "bounced_hard",
}


def test_ingest_every_fixture_sets_states_and_suppresses(ledger: Ledger) -> None:
    seed_ledger(ledger)
    summary = ingest(ledger, sources(*HAND_WRITTEN), key=FIXTURE_KEY)
    assert (summary.reports, summary.matched, summary.unmatched, summary.forged) == (16, 16, 0, 0)
    assert (summary.hard, summary.soft, summary.delayed, summary.delivered) == (11, 0, 2, 2)
    assert summary.expired == 1
    assert kinds_for(ledger, 3) == ["delay_reported"]  # a note on the message
    assert {n: state_of(ledger, n) for n in PEOPLE} == FINAL_STATES
    hard = {PEOPLE[n] for n, s in FINAL_STATES.items() if s == "bounced_hard"}
    assert suppressed(ledger) == hard
    assert summary.suppressed == len(hard)
    # The Exchange report lists two other people: only frank's block is about our message.
    assert "grace@example.com" not in suppressed(ledger)
    assert kinds_for(ledger, 6) == ["bounced_hard", "address_suppressed"]
    assert ledger.verify().ok


def test_bounce_event_data_and_suppression_row(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    ingest(ledger, sources("postfix-hard-511.eml"), key=FIXTURE_KEY)
    bounce, suppression = report_events(ledger, 1)
    assert bounce.kind == "bounced_hard"
    assert (bounce.campaign_id, bounce.volunteer_id) == (CAMPAIGN, "v-000001")
    data = dict(bounce.data)
    assert len(data.pop("report_sha256")) == 64
    assert data == {
        "status": "5.1.1",
        "action": "failed",
        "diagnostic": EXPECTED["postfix-hard-511.eml"][0]["diagnostic"],
        "recipient": "alice@example.org",
        "source": "postfix-hard-511.eml",
        "correlated_by": "verp_token",
        "moved_to": "bounced_hard",  # the state it moved the message to
    }
    assert suppression.kind == "address_suppressed"
    assert suppression.data["email"] == "alice@example.org"
    (row,) = ledger.suppressions()
    assert (row.email, row.reason, row.event_seq) == (
        "alice@example.org",
        "bounced_hard 5.1.1",
        bounce.seq,
    )
    (report,) = ledger.bounce_reports()
    assert (report.matched, report.message_id) == (True, mid(1))


def test_ingest_is_idempotent(ledger: Ledger) -> None:
    seed_ledger(ledger)
    names = HAND_WRITTEN
    ingest(ledger, sources(*names), key=FIXTURE_KEY)
    events_before = ledger.count("events")
    again = ingest(ledger, sources(*names, *names), key=FIXTURE_KEY)
    assert (again.reports, again.duplicates, again.matched) == (32, 32, 0)
    assert ledger.count("events") == events_before
    assert ledger.count("bounce_reports") == 16
    assert ledger.verify().ok


def test_the_same_bounce_twice_in_one_run_is_recorded_once(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    summary = ingest(
        ledger, sources("postfix-hard-511.eml", "postfix-hard-511.eml"), key=FIXTURE_KEY
    )
    assert (summary.matched, summary.duplicates) == (1, 1)
    assert kinds_for(ledger, 1) == ["bounced_hard", "address_suppressed"]


def test_the_same_bounce_from_a_file_and_over_imap_is_recorded_once(ledger: Ledger) -> None:
    # A Maildir keeps LF line endings; IMAP serves the same message with CRLF.
    seed_ledger(ledger, [1])
    ((name, data),) = sources("postfix-hard-511.eml")
    as_file = data.replace(b"\r\n", b"\n")
    over_imap = as_file.replace(b"\n", b"\r\n")
    assert as_file != over_imap
    first = ingest(ledger, [(name, as_file)], key=FIXTURE_KEY)
    second = ingest(
        ledger, [("imaps://bounces@mail.example.org/INBOX;UID=7", over_imap)], key=FIXTURE_KEY
    )
    assert (first.matched, second.duplicates) == (1, 1)
    assert ledger.count("bounce_reports") == 1


def strip_verp(data: bytes, n: int) -> bytes:
    """The report as it would look if the bounce went to a plain address."""
    return data.replace(f"bounces+{token(n)}@".encode(), b"bounces@")


def correlated_by(led: Ledger, n: int) -> str:
    (event,) = led.events(message_id=mid(n), kinds=["bounced_hard"])
    return str(event.data["correlated_by"])


def test_correlation_by_envelope_id_when_no_verp_address(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    data = strip_verp(fixture("postfix-hard-511.eml"), 1)
    report = parse_full_report(data, source="x")
    assert report.verp_token is None and report.envelope_id == token(1)
    summary = ingest(ledger, [("x", data)], key=FIXTURE_KEY)
    assert summary.matched == 1
    assert correlated_by(ledger, 1) == "envelope_id"
    assert state_of(ledger, 1) == "bounced_hard"


def test_correlation_by_returned_message_id(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    data = strip_verp(fixture("postfix-hard-511.eml"), 1)
    data = re.sub(rb"Original-Envelope-Id: \w+\n", b"", data)
    report = parse_full_report(data, source="x")
    assert report.verp_token is None and report.envelope_id is None
    ingest(ledger, [("x", data)], key=FIXTURE_KEY)
    assert correlated_by(ledger, 1) == "message_id"
    assert state_of(ledger, 1) == "bounced_hard"


def test_message_id_matches_without_angle_brackets(ledger: Ledger) -> None:
    seed_ledger(ledger, [12])
    data = strip_verp(fixture("no-status.eml"), 12).replace(
        f"Message-ID: {mid(12)}".encode(), f"Message-ID: {mid(12).strip('<>')}".encode()
    )
    ingest(ledger, [("x", data)], key=FIXTURE_KEY)
    assert correlated_by(ledger, 12) == "message_id"


def test_forged_token_is_refused_and_recorded(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    forged = verp.make_token(b"someone-elses-key-0123456789abcd", mid(1))
    assert forged[:16] == token(1)[:16]  # same lookup part, wrong HMAC
    data = fixture("postfix-hard-511.eml").replace(token(1).encode(), forged.encode())
    summary = ingest(ledger, [("forged.eml", data)], key=FIXTURE_KEY)
    assert (summary.forged, summary.matched, summary.hard) == (1, 0, 0)
    # Refused although its Message-ID would match: a forger can copy a Message-ID.
    assert state_of(ledger, 1) == "sent"
    assert suppressed(ledger) == set()
    (event,) = ledger.events(kinds=["bounce_forged"])
    assert event.message_id is None
    assert event.data["verp_token"] == forged
    assert event.data["recipients"] == ["alice@example.org"]
    (listed,) = unmatched_reports(ledger)
    assert listed.source == "forged.eml"
    assert "forged" in listed.reason
    assert listed.recipients == ("alice@example.org",)


def test_numbered_tokens_match_their_own_message_and_a_neighbours_number_is_forged(
    ledger: Ledger,
) -> None:
    """The tokens a send issues now (numbered in queue order): a bounce carrying one is
    tied to its message; the next number with the MAC copied over (a forger who got one
    notice guessing the person queued after them) is refused, and that person untouched."""
    seed_ledger(ledger, [2])  # someone with a token of the earlier kind, made from the ID
    people = [
        Volunteer(f"v-{n:06d}", PEOPLE[n], PEOPLE[n], f"Family{n}", "", "en", "screened", ())
        for n in (1, 3)
    ]
    add_volunteers(ledger, people)
    issued = ledger.ensure_messages(CAMPAIGN, [NewMessage(mid(n), f"v-{n:06d}") for n in (1, 3)])
    alice, next_one = (m.verp_token for m in issued)
    assert verp.token_number(next_one) == (verp.token_number(alice) or 0) + 1
    ledger.claim_for_sending([mid(1), mid(3)])
    ledger.record_outcomes(
        [DeliveryOutcome(mid(n), CAMPAIGN, f"v-{n:06d}", MessageState.SENT, 1) for n in (1, 3)]
    )
    key = ledger.verp_key()
    bounce = fixture("postfix-hard-511.eml").replace(token(1).encode(), alice.encode())
    guessed = next_one[: verp.LOOKUP_CHARS] + alice[verp.LOOKUP_CHARS :]
    forged = bounce.replace(alice.encode(), guessed.encode()).replace(
        mid(1).encode(), mid(3).encode()
    )
    summary = ingest(ledger, [("forged.eml", forged)], key=key)
    assert (summary.forged, summary.matched) == (1, 0)
    assert state_of(ledger, 3) == "sent"
    summary = ingest(ledger, [("alice.eml", bounce)], key=key)
    assert (summary.matched, summary.hard) == (1, 1)
    assert correlated_by(ledger, 1) == "verp_token"
    # A token of the earlier kind, in the same ledger and index, still finds its message.
    summary = ingest(ledger, sources("postfix-expired-441.eml"), key=FIXTURE_KEY)
    assert summary.matched == 1
    assert (state_of(ledger, 1), state_of(ledger, 2), state_of(ledger, 3)) == (
        "bounced_hard",
        "expired",
        "sent",
    )
    assert ledger.verify().ok


def test_unmatched_report_is_kept_and_listed(ledger: Ledger) -> None:
    seed_ledger(ledger, [2])  # not alice: the report matches no message
    summary = ingest(ledger, sources("postfix-hard-511.eml"), key=FIXTURE_KEY)
    assert (summary.unmatched, summary.matched) == (1, 0)
    (event,) = ledger.events(kinds=["bounce_unmatched"])
    assert event.data["original_message_id"] == mid(1)
    (listed,) = unmatched_reports(ledger)
    assert (listed.source, listed.recipients) == ("postfix-hard-511.eml", ("alice@example.org",))
    (kept,) = ledger.bounce_reports()
    assert kept.detail["raw"].startswith("Return-Path: <>")  # the report itself is kept
    assert suppressed(ledger) == set()


def test_auto_reply_to_a_verp_address_is_listed_not_recorded_as_bounce(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    summary = ingest(ledger, [("ooo.eml", auto_reply(1))], key=FIXTURE_KEY)
    assert (summary.auto_replies, summary.unmatched, summary.hard) == (1, 0, 0)
    assert state_of(ledger, 1) == "sent"
    (listed,) = unmatched_reports(ledger)
    assert "an automatic reply (subject" in listed.reason
    assert kinds_for(ledger, 1) == ["bounce_unmatched"]


def delivered_report_for(n: int) -> bytes:
    """A success DSN for volunteer n, made from the delivered fixture."""
    return (
        fixture("success-delivered.eml")
        .replace(token(8).encode(), token(n).encode())
        .replace(mid(8).encode(), mid(n).encode())
        .replace(b"ivan@example.org", PEOPLE[n].encode())
    )


def test_delivered_after_hard_bounce_does_not_unbounce(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    ingest(ledger, sources("postfix-hard-511.eml"), key=FIXTURE_KEY)
    ingest(ledger, [("late-success", delivered_report_for(1))], key=FIXTURE_KEY)
    assert state_of(ledger, 1) == "bounced_hard"
    assert kinds_for(ledger, 1) == ["bounced_hard", "address_suppressed", "delivered"]


def test_hard_bounce_after_delivered_moves_to_bounced(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    ingest(ledger, [("early-success", delivered_report_for(1))], key=FIXTURE_KEY)
    assert state_of(ledger, 1) == "delivered"
    ingest(ledger, sources("postfix-hard-511.eml"), key=FIXTURE_KEY)
    assert state_of(ledger, 1) == "bounced_hard"


def test_dsn_never_overwrites_refused_at_smtp_time(ledger: Ledger) -> None:
    seed_ledger(ledger, [8], state="failed_permanent")
    ingest(ledger, sources("success-delivered.eml"), key=FIXTURE_KEY)
    assert state_of(ledger, 8) == "failed_permanent"
    assert kinds_for(ledger, 8) == ["delivered"]


@pytest.mark.parametrize(
    ("current", "proposed", "moved"),
    [
        ("sent", "bounced_hard", "bounced_hard"),
        ("sent", "bounced_soft", "bounced_soft"),
        ("deferred", "delivered", "delivered"),
        ("uncertain", "delivered", "delivered"),
        ("bounced_soft", "delivered", "delivered"),
        ("bounced_soft", "bounced_hard", "bounced_hard"),
        ("delivered", "bounced_hard", "bounced_hard"),
        ("delivered", "bounced_soft", None),
        ("bounced_hard", "delivered", None),
        ("bounced_hard", "bounced_soft", None),
        ("bounced_hard", "bounced_hard", None),
        ("failed_permanent", "delivered", None),
        ("suppressed", "bounced_hard", None),
    ],
)
def test_state_never_regresses(current: str, proposed: str, moved: str | None) -> None:
    assert state_after_report(current, MessageState(proposed)) == moved


def test_address_suppressed_once_across_campaigns(ledger: Ledger) -> None:
    seed_ledger(ledger, [1])
    ledger.db.table("campaigns").insert({"campaign_id": "2020-04-update", "title": "Update"})
    later = "<2020-04-update.v-000001@notify.example.org>"
    ledger.db.table("messages").insert(
        {
            "message_id": later,
            "campaign_id": "2020-04-update",
            "volunteer_id": "v-000001",
            "verp_token": verp.make_token(FIXTURE_KEY, later),
            "state": "sent",
        }
    )
    second = (
        fixture("postfix-hard-511.eml")
        .replace(token(1).encode(), verp.make_token(FIXTURE_KEY, later).encode())
        .replace(mid(1).encode(), later.encode())
    )
    summary = ingest(
        ledger, [*sources("postfix-hard-511.eml"), ("second", second)], key=FIXTURE_KEY
    )
    assert (summary.matched, summary.hard, summary.suppressed) == (2, 2, 1)
    assert ledger.count("suppressions") == 1
    assert len(list(ledger.events(kinds=["address_suppressed"]))) == 1
    assert state_of(ledger, 1) == "bounced_hard"
    assert ledger.message_states("2020-04-update") == {"v-000001": "bounced_hard"}


def test_wrong_key_makes_every_token_forged(ledger: Ledger) -> None:
    """What happens with the wrong key file: nothing is suppressed, everything is listed."""
    seed_ledger(ledger)
    summary = ingest(ledger, sources(*HAND_WRITTEN), key=b"k" * 32)
    assert (summary.forged, summary.matched) == (16, 0)
    assert suppressed(ledger) == set()
    assert len(unmatched_reports(ledger)) == 16


def test_a_bounce_with_a_guessed_message_id_matches_nobody(ledger: Ledger) -> None:
    """Message-IDs are keyed: the public algorithm's ID for a real person, in a bounce with
    no VERP token or ENVID, ties to no message, and nobody is suppressed."""
    seed_ledger(ledger, [2])
    vid = "v-000001"
    add_volunteers(
        ledger,
        [
            Volunteer(
                volunteer_id=vid,
                email=PEOPLE[1],
                email_ascii=PEOPLE[1],
                family_name="Family1",
                given_name="",
                locale="en",
                exposure="screened",
                data_held=("id_documents",),
            )
        ],
    )
    issued = message_id_for(CAMPAIGN, vid, "example.org", ledger.message_id_key())
    ledger.ensure_messages(CAMPAIGN, [NewMessage(issued, vid, "tok1")])
    guessed = message_id_for(CAMPAIGN, vid, "example.org")  # no key: what anyone can compute
    assert guessed != issued
    bounce = fixture("postfix-hard-511.eml").replace(token(1).encode(), b"")
    summary = ingest(
        ledger,
        [("guessed", bounce.replace(mid(1).encode(), guessed.encode()))],
        key=ledger.verp_key(),
    )
    assert (summary.matched, summary.unmatched, summary.suppressed) == (0, 1, 0)
    assert suppressed(ledger) == set()
    # The ID this ledger issued does tie the same report to the message.
    summary = ingest(
        ledger,
        [("issued", bounce.replace(mid(1).encode(), issued.encode()))],
        key=ledger.verp_key(),
    )
    assert (summary.matched, summary.suppressed) == (1, 1)
