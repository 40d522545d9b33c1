"""End to end through a real MTA: send via Postfix, read its real DSNs back, check the ledger.

notifier sends the 2020-03-breach notice to a private Postfix on 127.0.0.1. Postfix
relays to a scripted remote that refuses some recipients (550 unknown user, 552 mailbox
full, 450 try later) and writes its delivery status notifications to each message's VERP
return path, bounces+TOKEN@hmr.test, which it delivers into a local Maildir.
`notifier bounces ingest` reads that Maildir, and every recipient's final state is
checked in the ledger.

Skipped, saying why, only where Postfix is not installed or we are not root
(`.ci/run` installs it).
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import smtplib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Notifier, write_org_config
from mta import (
    LOCAL_DOMAIN,
    MAILBOX_FULL,
    TRY_LATER,
    USER_UNKNOWN,
    PostfixInstance,
    Reply,
    ScriptedRemote,
    skip_reason,
)

from notifier.ledger import Ledger
from notifier.message import MessageState

CAMPAIGN = "2020-03-breach"
UPDATE = "2020-04-29-update"
DSN_TIMEOUT = 60.0  # seconds; Postfix returns these within a few seconds here

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


# Ten volunteers, English and Japanese, every exposure (the published ones with surnames
# beginning with D, G, I or J, as the 2020 notice says). Two have internationalised
# addresses (sent with SMTPUTF8 through Postfix); 田中's DSN is an SMTPUTF8 one
# (message/global-delivery-status).
ROSTER_CSV = """\
volunteer_id,email,family_name,given_name,locale,exposure,data_held,family_name_latin
V001,alice@example.com,Davies,Alice,en,published,id_documents;photo,
V002,ito@example.jp,伊藤,花子,ja,published,id_documents,Ito
V003,bob@example.net,Jones,Bob,en,screened,health_questionnaire,
V004,suzuki@example.jp,鈴木,一郎,ja,screened,consent_form,Suzuki
V005,山田@example.jp,山田,太郎,ja,database_only,,Yamada
V006,nobody@example.com,Green,Carol,en,published,photo,
V007,田中@example.jp,田中,次郎,ja,screened,gp_information,Tanaka
V008,full@example.net,Brown,Dan,en,database_only,,
V009,busy@example.jp,後藤,三郎,ja,published,test_results,Goto
V010,later@example.com,White,Eve,en,screened,bank_details,
"""
# What the remote answers each address; everyone else gets 250.
SCRIPT: dict[str, Reply] = {
    "nobody@example.com": USER_UNKNOWN,
    "田中@example.jp": USER_UNKNOWN,
    "full@example.net": MAILBOX_FULL,
    "busy@example.jp": TRY_LATER,
    "later@example.com": TRY_LATER,
}
# Replies Postfix turns into `Action: failed` at once (5xx); of these only an unknown user
# is a hard bounce: a full mailbox (5.2.2) belongs to someone who can empty it (soft).
FAILED_REPLIES = (USER_UNKNOWN, MAILBOX_FULL)


@dataclass(frozen=True)
class Person:
    volunteer_id: str
    email: str
    reply: Reply | None  # what the remote answers; None: 250


ROSTER = tuple(
    Person(row["volunteer_id"], row["email"], SCRIPT.get(row["email"]))
    for row in csv.DictReader(io.StringIO(ROSTER_CSV))
)


def final_states(ledger_path: Path) -> dict[str, str]:
    with Ledger(ledger_path, create=False) as led:
        return {m.volunteer_id: m.state for m in led.campaign_messages(CAMPAIGN)}


def ledger_snapshot(ledger_path: Path) -> tuple[dict[str, MessageState], set[str], int, int]:
    """States, suppressed addresses, number of events, number of reports: all that ingest moves."""
    with Ledger(ledger_path, create=False) as led:
        states = {m.volunteer_id: m.state for m in led.campaign_messages(CAMPAIGN)}
        return (
            states,
            led.suppressed_addresses(),
            led.count("events"),
            led.count("bounce_reports"),
        )


@pytest.fixture
def cli(notifier: Notifier, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    # The VERP key must be the one `send` creates beside the ledger.
    monkeypatch.delenv("NOTIFIER_SECRET_FILE", raising=False)
    return notifier


@pytest.fixture
def remote() -> Iterator[ScriptedRemote]:
    with ScriptedRemote(SCRIPT) as server:
        yield server


def send_and_collect_dsns(
    cli: Notifier, postfix: PostfixInstance, tmp_path: Path, expected_dsns: int
) -> list[Path]:
    """Import the roster, send the campaign through Postfix, wait for the DSNs."""
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER_CSV, encoding="utf-8")
    write_org_config(cli.ledger_path.parent)  # the organisation's contact point
    imported = cli("roster", "import", str(roster))
    assert imported.exit_code == 0, imported.output
    assert "10 valid, 0 rejected" in imported.output
    approved = cli("approve", CAMPAIGN, "--by", "Test approver")
    assert approved.exit_code == 0, approved.output

    sent = cli("send", CAMPAIGN, "--yes", "--smtp", f"smtp://127.0.0.1:{postfix.port}")
    assert sent.exit_code == 0, sent.output
    # Postfix took every message: the refusals come later, as DSNs.
    assert set(final_states(cli.ledger_path).values()) == {"sent"}, sent.output
    assert len(final_states(cli.ledger_path)) == len(ROSTER)

    return postfix.wait_for_maildir(expected_dsns, timeout=DSN_TIMEOUT)


def dsn_actions(files: list[Path]) -> Counter[str]:
    """The Action of every recipient block in the Maildir, read with the stdlib parser."""
    actions: Counter[str] = Counter()
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        assert msg.get_content_type() == "multipart/report", path
        assert msg["Delivered-To"].startswith("bounces+"), msg["Delivered-To"]
        for part in msg.walk():
            if part.get_content_type() in (
                "message/delivery-status",
                "message/global-delivery-status",
            ):
                body = part.as_bytes().decode("utf-8", "replace")
                for line in body.splitlines():
                    if line.lower().startswith("action:"):
                        actions[line.split(":", 1)[1].strip().lower()] += 1
    return actions


def ingest_twice_changes_nothing(cli: Notifier, maildir: Path) -> str:
    first = cli("bounces", "ingest", str(maildir))
    assert first.exit_code == 0, first.output
    before = ledger_snapshot(cli.ledger_path)
    again = cli("bounces", "ingest", str(maildir))
    assert again.exit_code == 0, again.output
    assert ledger_snapshot(cli.ledger_path) == before
    assert "0 matched" in again.output, again.output
    return first.output


def assert_ledger_verifies(cli: Notifier) -> None:
    verified = cli("ledger", "verify")
    assert verified.exit_code == 0, verified.output


def test_messages_postfix_gave_up_on_are_expired_never_suppressed(
    cli: Notifier, remote: ScriptedRemote, tmp_path: Path
) -> None:
    """One try only (maximal_queue_lifetime=0): a 450 comes back as Action: failed with
    its 4.x.x status kept. The server was busy, the address is fine: the message is
    expired, the address is not suppressed, the person is on the unreachable list and
    `status` offers to send their notice again."""
    refused = [p for p in ROSTER if p.reply is not None]
    with PostfixInstance(remote.port, {"maximal_queue_lifetime": "0"}) as postfix:
        send_and_collect_dsns(cli, postfix, tmp_path, expected_dsns=len(refused))
        # Nothing left to retry, so no more reports will come: count them exactly.
        postfix.wait_for_empty_queue(timeout=DSN_TIMEOUT)
        files = postfix.maildir_files()
        assert len(files) == len(refused)
        assert dsn_actions(files) == Counter({"failed": len(refused)})
        summary = ingest_twice_changes_nothing(cli, postfix.maildir)

    assert f"{len(refused)} matched, 0 unmatched, 0 refused as forged" in summary, summary
    expired = [p for p in refused if p.reply is TRY_LATER]
    hard = [p for p in refused if p.reply is USER_UNKNOWN]
    state_of_reply = {None: "sent", MAILBOX_FULL: "bounced_soft", USER_UNKNOWN: "bounced_hard"}
    expected = {p.volunteer_id: state_of_reply.get(p.reply, "expired") for p in ROSTER}
    assert final_states(cli.ledger_path) == expected
    assert f"{len(hard)} hard, 1 soft, 0 delayed" in summary, summary
    assert f"{len(expired)} expired" in summary, summary

    with Ledger(cli.ledger_path, create=False) as led:
        assert led.suppressed_addresses() == {p.email for p in hard}
        gave_up = list(led.events(campaign_id=CAMPAIGN, kinds=("expired",)))
    # The 450s kept their temporary status: the failure is final because the queue
    # lifetime ran out, not because the remote said so.
    statuses = {e.volunteer_id: e.data["status"] for e in gave_up}
    assert statuses == {p.volunteer_id: TRY_LATER.status for p in expired}
    # Tied to the message by the VERP address Postfix delivered each report to.
    assert {e.data["correlated_by"] for e in gave_up} == {"verp_token"}
    # Each message was accepted by the remote once, and the refused never.
    delivered = Counter(r for rcpts, _ in remote.record.accepted for r in rcpts)
    assert delivered == Counter({p.email: 1 for p in ROSTER if p.reply is None})

    unreachable = cli("export", "unreachable", "--format", "json")
    assert unreachable.exit_code == 0, unreachable.output
    reasons = {r["volunteer_id"]: r["reason"] for r in json.loads(unreachable.stdout)}
    assert {vid: reasons[vid] for vid in (p.volunteer_id for p in expired)} == dict.fromkeys(
        (p.volunteer_id for p in expired), "expired"
    )
    status = json.loads(cli("status", CAMPAIGN, "--format", "json").stdout)
    steps = " ".join(status["next_steps"])
    assert f"notifier resend {CAMPAIGN} --status expired --yes" in steps, steps

    # The correction does not miss them because a server was down: they are in its
    # audience, and the update they get does not say "as we told you".
    cohort = json.loads(cli("cohort", UPDATE, "--format", "json").stdout)
    included = {m["volunteer_id"] for m in cohort if m["included"]}
    assert {p.volunteer_id for p in expired} <= included
    assert not {p.volunteer_id for p in hard} & included

    def update_for(person: Person) -> email.message.EmailMessage:
        eml = cli("preview", UPDATE, "--volunteer", person.volunteer_id, "--format", "eml")
        assert eml.exit_code == 0, eml.output
        parsed = email.message_from_string(eml.stdout, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    for person in expired:  # one English, one Japanese reader
        message = update_for(person)
        text = message.get_body(("plain",))
        assert text is not None
        body = text.get_content()
        assert "As we told you" not in body and "先にお知らせしたとおり" not in body
        assert "may not have reached you" in body or "届いていない可能性" in body
        assert message["In-Reply-To"] is None  # not threaded under a notice never read
    told = update_for(ROSTER[0])  # sent: threaded, and "as we told you"
    assert told["In-Reply-To"] is not None
    told_text = told.get_body(("plain",))
    assert told_text is not None and "As we told you" in told_text.get_content()
    assert_ledger_verifies(cli)


def test_delay_warning_from_postfix_changes_nothing_and_offers_no_resend(
    cli: Notifier, remote: ScriptedRemote, tmp_path: Path
) -> None:
    """Queue lifetime of an hour, warnings after a second: a 450 gives Action: delayed.
    Postfix is still trying: the message stays sent, with a note, and nothing offers to
    send it again (a resend would deliver twice once Postfix gets through)."""
    refused = [p for p in ROSTER if p.reply is not None]
    failed = [p for p in refused if p.reply in FAILED_REPLIES]
    hard = [p for p in refused if p.reply is USER_UNKNOWN]
    settings = {"maximal_queue_lifetime": "1h", "delay_warning_time": "1s"}
    with PostfixInstance(remote.port, settings) as postfix:
        files = send_and_collect_dsns(cli, postfix, tmp_path, expected_dsns=len(refused))
        assert len(files) == len(refused)
        assert dsn_actions(files) == Counter(
            {"failed": len(failed), "delayed": len(refused) - len(failed)}
        )
        # The deferred ones are still queued, still being retried.
        queued = {r["address"] for m in postfix.queue() for r in m["recipients"]}
        assert queued == {p.email for p in refused if p.reply is TRY_LATER}
        summary = ingest_twice_changes_nothing(cli, postfix.maildir)

    assert f"{len(refused)} matched, 0 unmatched, 0 refused as forged" in summary, summary
    expected = {
        p.volunteer_id: (
            "bounced_hard"
            if p.reply is USER_UNKNOWN
            else "bounced_soft"
            if p.reply is MAILBOX_FULL
            else "sent"  # delivered, or still being tried by Postfix
        )
        for p in ROSTER
    }
    assert final_states(cli.ledger_path) == expected
    later = {p.volunteer_id for p in ROSTER if p.reply is TRY_LATER}
    with Ledger(cli.ledger_path, create=False) as led:
        # A delay is no reason to stop writing to someone.
        assert led.suppressed_addresses() == {p.email for p in hard}
        noted = {e.volunteer_id for e in led.events(kinds=["delay_reported"])}
    assert noted == later
    status = json.loads(cli("status", CAMPAIGN, "--format", "json").stdout)
    steps = " ".join(status["next_steps"])
    full = sum(p.reply is MAILBOX_FULL for p in ROSTER)
    assert f"try again the {full} soft-bounced or failed for now" in steps
    assert all(vid not in steps for vid in later)
    assert_ledger_verifies(cli)


# The three vacation replies that once suppressed the people who sent them: each quotes a
# bounce ("permanent fatal errors", "User unknown") and has no Auto-Submitted header.
VACATION_MARKS = (
    ("Precedence: bulk\r\n", "Re: Important: a cyber attack on HMR"),
    ("X-Auto-Response-Suppress: All\r\n", "Re: Important: a cyber attack on HMR"),
    ("", "Automatic reply: Important: a cyber attack on HMR"),
)
QUOTED_BOUNCE = (
    "I am away until 4 May and will read your message when I return.\r\n\r\n"
    "----- The following addresses had permanent fatal errors -----\r\n{address}\r\n"
    "----- Transcript of session follows -----\r\n550 5.1.1 {address}... User unknown\r\n"
)


def test_vacation_replies_through_postfix_suppress_no_one(cli: Notifier, tmp_path: Path) -> None:
    """Three people's vacation responders answer their notice; Postfix delivers the
    replies to the notices' return paths like any bounce. None is taken for a bounce."""
    with ScriptedRemote({}) as remote, PostfixInstance(remote.port) as postfix:
        send_and_collect_dsns(cli, postfix, tmp_path, expected_dsns=0)
        with Ledger(cli.ledger_path, create=False) as led:
            messages = {m.volunteer_id: m for m in led.campaign_messages(CAMPAIGN)}
        away = [ROSTER[0], ROSTER[2], ROSTER[3]]
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=DSN_TIMEOUT) as client:
            for person, (mark, subject) in zip(away, VACATION_MARKS, strict=True):
                token = messages[person.volunteer_id].verp_token
                return_path = f"bounces+{token}@{LOCAL_DOMAIN}"
                reply = (
                    f"From: {person.email}\r\nTo: {return_path}\r\nSubject: {subject}\r\n"
                    f"{mark}Content-Type: text/plain; charset=utf-8\r\n\r\n"
                    + QUOTED_BOUNCE.format(address=person.email)
                )
                client.sendmail(person.email, [return_path], reply.encode())
        postfix.wait_for_maildir(len(away), timeout=DSN_TIMEOUT)
        summary = ingest_twice_changes_nothing(cli, postfix.maildir)

    assert "3 auto-replies" in summary, summary
    assert "0 hard" in summary and "0 addresses suppressed" in summary, summary
    assert set(final_states(cli.ledger_path).values()) == {"sent"}
    with Ledger(cli.ledger_path, create=False) as led:
        assert led.suppressed_addresses() == set()
        kept = {(r.message_id, r.detail["outcome"]) for r in led.bounce_reports()}
    # Each is kept, tied to the notice it answered, as what it is.
    answered = {messages[p.volunteer_id].message_id for p in away}
    assert kept == {(message_id, "auto_reply") for message_id in answered}
    assert_ledger_verifies(cli)


def test_test_sends_through_postfix_with_dsn_reach_the_test_mailbox_only(
    cli: Notifier, tmp_path: Path
) -> None:
    """`send --test-to` through Postfix, which offers DSN and refuses an empty ESMTP value
    (`501 5.5.4 Bad ENVID parameter syntax`): every test message is delivered to the test
    mailbox (hmr.test is Postfix's own domain here), none relayed toward a volunteer."""
    tester = f"reviewer@{LOCAL_DOMAIN}"
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER_CSV, encoding="utf-8")
    write_org_config(cli.ledger_path.parent)
    assert cli("roster", "import", str(roster)).exit_code == 0
    with ScriptedRemote({}) as remote, PostfixInstance(remote.port) as postfix:
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=DSN_TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("dsn")  # the case that failed: DSN parameters are sent
        sent = cli(
            "send", CAMPAIGN, "--test-to", tester, "--smtp", f"smtp://127.0.0.1:{postfix.port}"
        )
        assert sent.exit_code == 0, sent.output + postfix.log_tail()
        with Ledger(cli.ledger_path, create=False) as led:
            tests = list(led.events(campaign_id=CAMPAIGN, kinds=("test_sent", "test_refused")))
        assert tests and {e.kind for e in tests} == {"test_sent"}
        postfix.wait_for_maildir(len(tests), timeout=DSN_TIMEOUT)
        postfix.wait_for_empty_queue(timeout=DSN_TIMEOUT)
        delivered = [path.read_bytes() for path in postfix.maildir_files()]
        assert remote.record.rcpt == [] and remote.record.accepted == []  # no volunteer
    assert len(delivered) == len(tests)
    volunteers = {p.email for p in ROSTER}
    subjects = set()
    for data in delivered:
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert message["Delivered-To"] == tester
        assert str(message["To"]) == tester
        assert not volunteers & {str(a.addr_spec) for a in message["To"].addresses}
        subjects.add(str(message["Subject"]))
    assert {s.split("]")[0] for s in subjects} == {f"[TEST {e.data['as']}" for e in tests}
    assert final_states(cli.ledger_path) == {}  # no volunteer's message exists, or changed
