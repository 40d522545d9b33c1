"""Evidence of what an MTA received: a real Postfix log, a real Maildir."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from notifier.errors import EvidenceError
from notifier.reconcile import maildir_evidence, postfix_log_evidence

LOG = Path(__file__).resolve().parent.parent / "fixtures" / "reconcile" / "postfix-maillog"


def test_postfix_log_ties_message_ids_to_queue_ids_and_fates() -> None:
    evidence = postfix_log_evidence(LOG)
    sent = evidence["gewnp3zznkefovlje6df4sc3xo@example.org"]
    assert (sent.queue_id, sent.fate) == ("602F420E3D2", "sent")
    assert sent.detail.startswith("250 2.0.0 Ok")
    path, line = sent.source.rsplit(":", 1)
    assert path == str(LOG)
    assert (
        "602F420E3D2: message-id=<gewnp3zznkefovlje6df4sc3xo@example.org>"
        in (LOG.read_text().splitlines()[int(line) - 1])
    )
    bounced = evidence["ux4rsw6tvg2cdnvbxsyz3ob6e6@example.org"]
    assert (bounced.queue_id, bounced.fate) == ("6587520E3E2", "bounced")
    assert "550 5.1.1" in bounced.detail
    # Deferred, then given up on after the queue lifetime: the last word wins.
    assert evidence["kzbfycmap2i3jpphyywqaznl7n@example.org"].fate == "expired"
    assert evidence["kzbfycmap2i3jpphyywqaznl7n@example.org"].event_data()["queue_id"] == (
        "68A1C20E132"
    )


def test_every_message_postfix_took_is_evidence() -> None:
    evidence = postfix_log_evidence(LOG)
    cleanup_lines = [line for line in LOG.read_text().splitlines() if "message-id=<" in line]
    assert len(evidence) == len(cleanup_lines)


def test_unrelated_and_hostile_lines_are_ignored(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(
        "Dec 01 10:00:00 mta sshd[1]: ABCDEF12345: message-id=<forged@example.org>\n"
        + "x" * 200_000
        + "\n"
        + "Dec 01 10:00:01 mta postfix/cleanup[9]: 1A2B3C4D5E: message-id=<real@example.org>\n"
        + "Dec 01 10:00:02 mta postfix/smtp[9]: 1A2B3C4D5E: to=<a@example.com>,"
        + " status=sent (250 ok)\n",
        encoding="utf-8",
    )
    evidence = postfix_log_evidence(log)
    assert set(evidence) == {"real@example.org"}
    assert evidence["real@example.org"].fate == "sent"


def test_missing_log_is_one_clean_error(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="cannot read the MTA log") as caught:
        postfix_log_evidence(tmp_path / "nope.log")
    assert caught.value.file == str(tmp_path / "nope.log")


def test_maildir_evidence_by_message_id(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "received", create=True)
    for n in range(3):
        msg = EmailMessage()
        msg["Message-ID"] = f"<m{n}@example.org>"
        msg["Subject"] = "notice"
        msg.set_content("body " * 1000)
        key = box.add(msg)
        if n == 2:  # one already read: moved to cur/
            box[key] = mailbox.MaildirMessage(box[key])
            box[key].set_subdir("cur")
    no_id = EmailMessage()
    no_id.set_content("no message id")
    box.add(no_id)
    evidence = maildir_evidence(tmp_path / "received")
    assert set(evidence) == {"m0@example.org", "m1@example.org", "m2@example.org"}
    assert all(Path(e.source).is_file() for e in evidence.values())


def test_not_a_maildir(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="not a Maildir"):
        maildir_evidence(tmp_path)
