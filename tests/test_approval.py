"""Four eyes: a campaign is sent only as someone approved it, word for word."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import ORG_SETTINGS, Notifier
from smtp_helpers import add_volunteers, make_volunteers

from notifier.approval import approval_status, approve, content_digest, require_approval
from notifier.campaign import load_campaign
from notifier.errors import ApprovalError, ExitCode
from notifier.ledger import Ledger
from notifier.sink import Sink

CAMPAIGN = "2020-03-breach"
CONTACT = ORG_SETTINGS.read_text(encoding="utf-8")


@pytest.fixture
def roster(ledger: Ledger) -> Ledger:
    """Six volunteers, and the example organisation's settings beside the ledger."""
    (ledger.path.parent / "notifier.toml").write_text(CONTACT, encoding="utf-8")
    add_volunteers(ledger, make_volunteers(6))
    return ledger


def test_send_without_approval_sends_nothing_and_says_what_to_run(
    notifier: Notifier, roster: Ledger
) -> None:
    with Sink() as sink:
        result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert sink.messages == []
    assert result.exit_code == ExitCode.PROBLEMS
    assert result.stderr.count("\n") == 1  # one line
    assert "has not been approved: nothing was sent" in result.stderr
    assert f'notifier approve {CAMPAIGN} --by "NAME"' in result.stderr
    assert roster.state_counts(CAMPAIGN) == {}


def test_approved_campaign_sends_and_status_says_who(notifier: Notifier, roster: Ledger) -> None:
    approved = notifier("approve", CAMPAIGN, "--by", "Jane Doe, DPO")
    assert approved.exit_code == 0, approved.output
    assert "Approved: 2020-03-breach by Jane Doe, DPO" in approved.stdout
    with Sink() as sink:
        sent = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert sent.exit_code == 0, sent.output
        assert len(sink.messages) == 6
    status = notifier("status", CAMPAIGN)
    assert "Approved by Jane Doe, DPO at" in status.stdout
    assert "has not changed since" in status.stdout
    shown = json.loads(notifier("status", CAMPAIGN, "--format", "json").stdout)
    assert shown["approval"]["by"] == "Jane Doe, DPO" and shown["approval"]["current"] is True
    kinds = [e.kind for e in roster.events(campaign_id=CAMPAIGN, kinds=["campaign_approved"])]
    assert kinds == ["campaign_approved"]
    assert roster.verify().ok  # the approval is a chained event


def test_a_contact_change_makes_the_approval_stale(
    notifier: Notifier, roster: Ledger, tmp_path: Path
) -> None:
    (tmp_path / "notifier.toml").write_text(CONTACT, encoding="utf-8")
    assert notifier("approve", CAMPAIGN, "--by", "Jane Doe").exit_code == 0
    (tmp_path / "notifier.toml").write_text(
        CONTACT.replace("+44 1632 961 000", "+44 1632 961 999"), encoding="utf-8"
    )
    with Sink() as sink:
        result = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert sink.messages == []
    assert result.exit_code == ExitCode.PROBLEMS
    assert "changed since Jane Doe approved it" in result.stderr
    assert "(settings differ)" in result.stderr
    status = notifier("status", CAMPAIGN)
    assert "the content has changed since" in status.stdout
    # Approving the new content lets it go.
    assert notifier("approve", CAMPAIGN, "--by", "Jane Doe").exit_code == 0
    with Sink() as sink:
        assert notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url).exit_code == 0


def test_resend_needs_approval_too(notifier: Notifier, roster: Ledger) -> None:
    result = notifier("resend", CAMPAIGN, "--status", "failed_temporary", "--yes")
    assert result.exit_code == ExitCode.PROBLEMS
    assert "has not been approved" in result.stderr


def test_approval_can_be_turned_off_only_explicitly(
    notifier: Notifier, roster: Ledger, tmp_path: Path
) -> None:
    (tmp_path / "notifier.toml").write_text(
        CONTACT + "\n[send]\nrequire_approval = false\n", "utf-8"
    )
    with Sink() as sink:
        assert notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url).exit_code == 0
        assert len(sink.messages) == 6
    (tmp_path / "notifier.toml").write_text('[send]\nrequire_approval = "no"\n', "utf-8")
    bad = notifier("status", CAMPAIGN)
    assert bad.exit_code == 2 and "send.require_approval" in bad.stderr


def test_every_part_of_the_content_is_covered(roster: Ledger, tmp_path: Path) -> None:
    campaign = load_campaign(CAMPAIGN)
    before = content_digest(campaign)
    # A copy of the templates with one word changed.
    templates = tmp_path / "templates"
    shutil.copytree(campaign.templates_dir, templates)
    common = templates / "en" / "_common.j2"
    common.write_text(common.read_text(encoding="utf-8") + "\n{# edit #}\n", encoding="utf-8")
    edited = dataclasses.replace(campaign, templates_dir=templates)
    after = content_digest(edited)
    assert after.sha256 != before.sha256
    assert [p for p in before.parts if before.parts[p] != after.parts[p]] == ["templates"]
    # A Reply-To change is a settings change.
    moved = dataclasses.replace(campaign, reply_to={**campaign.reply_to, "en": "x@example.org"})
    assert [p for p, v in content_digest(moved).parts.items() if before.parts[p] != v] == [
        "settings"
    ]
    approve(roster, campaign, "A")
    assert approval_status(roster, campaign).is_current
    assert not approval_status(roster, edited).is_current
    with pytest.raises(ApprovalError, match=r"\(templates differ\)"):
        require_approval(roster, edited)


def test_an_approver_must_be_named(roster: Ledger) -> None:
    with pytest.raises(ApprovalError, match="needs the approver's name"):
        approve(roster, load_campaign(CAMPAIGN), "   ")


def test_approve_and_send_refuse_while_the_check_fails(notifier: Notifier, roster: Ledger) -> None:
    """`check` exiting 1 stops `approve` and `send --yes` too (exit 1), each naming the
    problem; here a link in a volunteer's name, which a breach notice must never carry."""
    assert notifier("approve", CAMPAIGN, "--by", "Jane Doe").exit_code == 0
    linked = make_volunteers(1, start=50)[0]
    add_volunteers(roster, [dataclasses.replace(linked, given_name="http://evil.example")])
    with Sink() as sink:
        sent = notifier("send", CAMPAIGN, "--yes", "--smtp", sink.url)
        assert sink.messages == []
    assert sent.exit_code == ExitCode.PROBLEMS
    assert "fails its check" in sent.stderr and "nothing was sent" in sent.stderr
    assert "problem: " in sent.stderr and "HMR-00050" in sent.stderr
    again = notifier("approve", CAMPAIGN, "--by", "Jane Doe")
    assert again.exit_code == ExitCode.PROBLEMS
    assert "nothing was approved" in again.stderr and "HMR-00050" in again.stderr
    assert roster.state_counts(CAMPAIGN) == {}


@pytest.mark.parametrize(
    "name",
    ["\u200b", "\u2060\u2060", "\ufeff", "\x1b[8m", "\u202e\u202c", " \t ", "\x1b]0;x\x07"],
    ids=["zero-width-space", "word-joiners", "bom", "ansi-hidden", "bidi", "blank", "osc"],
)
def test_an_approver_name_needs_a_visible_letter(roster: Ledger, name: str) -> None:
    with pytest.raises(ApprovalError, match="at least one visible letter"):
        approve(roster, load_campaign(CAMPAIGN), name)
    assert list(roster.events(kinds=["campaign_approved"])) == []


def test_what_an_approver_name_hides_is_not_recorded(notifier: Notifier, roster: Ledger) -> None:
    result = notifier("approve", CAMPAIGN, "--by", "Jane\u200b Doe\x1b[8m, \u202eDPO")
    assert result.exit_code == 0, result.output
    (event,) = roster.events(kinds=["campaign_approved"])
    assert event.data["by"] == "Jane Doe, DPO"
    refused = notifier("approve", CAMPAIGN, "--by", "\u200b\u2060")
    assert refused.exit_code == ExitCode.PROBLEMS and "visible letter" in refused.stderr
