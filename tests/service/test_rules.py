"""Every rule of a send holds in the service API itself, with no command line in between:
what the CLI and the console call cannot skip approval, the check, the one sender, the
settings beside the ledger, or the recorded run a resume continues."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import os
import signal
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest
from conftest import ORG_SETTINGS, Notifier, write_org_config
from smtp_helpers import add_volunteers, make_volunteers, recipients

from notifier.errors import ApprovalError, CampaignError, CheckFailed, SendInProgress
from notifier.event import EventKind
from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome
from notifier.pipeline import SendObserver
from notifier.service import (
    CohortFilter,
    SendOptions,
    SendScope,
    SendSpec,
    ServerInfo,
    Workspace,
)
from notifier.sink import Sink
from notifier.volunteer import Volunteer

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
PEOPLE = make_volunteers(6)  # en and ja in turn, every exposure, a consistent roster
JA = [v for v in PEOPLE if v.locale == "ja"]
EN = [v for v in PEOPLE if v.locale == "en"]


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    folder.mkdir()
    write_org_config(folder)  # the organisation's settings, beside its ledger
    path = folder / "notifier.db"
    with Ledger(path) as led:
        add_volunteers(led, PEOPLE)
    return path


@pytest.fixture
def ws(ledger_path: Path) -> Iterator[Workspace]:
    with Workspace.open(ledger_path, env={}) as workspace:
        yield workspace


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def spec(sink: Sink, **changes: object) -> SendSpec:
    """A send to the sink with short waits; `changes` to SendSpec's fields."""
    options = SendOptions(backoff=0.01, backoff_max=0.05, timeout=5.0)
    return SendSpec(**{"options": options, "smtp_url": sink.url, **changes})  # type: ignore[arg-type]


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def kinds(ws: Workspace, campaign_id: str) -> list[str]:
    return [e.kind for e in ws.ledger().events(campaign_id=campaign_id)]


def contradicting(vid: str = "HMR-90000") -> Volunteer:
    """Someone never screened with screening records: their notice would be untrue."""
    return Volunteer(
        volunteer_id=vid,
        email=f"{vid.lower()}@example.org",
        email_ascii=f"{vid.lower()}@example.org",
        family_name="Lee",
        given_name="Kim",
        locale="en",
        exposure="database_only",
        data_held=("id_documents",),
    )


# --- four eyes, and a clean check --------------------------------------------------------


def test_a_send_without_approval_is_refused_and_writes_nothing(ws: Workspace, sink: Sink) -> None:
    events = ws.ledger().count("events")
    with pytest.raises(ApprovalError, match="has not been approved: nothing was sent"):
        ws.send(FIRST, spec(sink))
    assert sink.messages == []
    assert ws.ledger().count("events") == events  # not even a run started
    assert ws.ledger().state_counts(FIRST) == {}


def test_approve_runs_the_whole_check_and_refuses_while_it_fails(ws: Workspace) -> None:
    add_volunteers(ws.ledger(), [contradicting()])
    with pytest.raises(CheckFailed, match="nothing was approved") as failed:
        ws.approve(FIRST, "Jane Doe, DPO")
    assert failed.value.exit_code == 1
    assert any("database_only" in p and "HMR-90000" in p for p in failed.value.problems)
    assert EventKind.CAMPAIGN_APPROVED not in kinds(ws, FIRST)


def test_a_send_refuses_a_roster_that_fails_the_check_since_approval(
    ws: Workspace, sink: Sink
) -> None:
    """Approval covers the content; the roster can change after it (an import): the send
    checks the campaign again against the roster as it is, and refuses while it fails."""
    ws.approve(FIRST, "Jane Doe, DPO")
    add_volunteers(ws.ledger(), [contradicting()])
    with pytest.raises(CheckFailed, match="nothing was sent"):
        ws.send(FIRST, spec(sink))
    assert sink.messages == [] and ws.ledger().state_counts(FIRST) == {}
    # The roster corrected: the send checks it (and records that it passed), then goes.
    corrected = contradicting()
    add_volunteers(ws.ledger(), [Volunteer(**{**corrected.__dict__, "data_held": ()})])
    summary = ws.send(FIRST, spec(sink))
    assert summary.counts == {"sent": len(PEOPLE) + 1}
    assert kinds(ws, FIRST).count(EventKind.CAMPAIGN_CHECKED) == 1
    assert ws.ledger().verify().ok


def test_a_send_does_not_check_again_what_the_approval_checked(ws: Workspace, sink: Sink) -> None:
    ws.approve(FIRST, "Jane Doe, DPO")
    checked: list[int] = []
    ws.send(FIRST, spec(sink), progress=lambda: checked.append(1))
    assert checked == []  # the approval's own check covered this content and this roster
    assert EventKind.CAMPAIGN_CHECKED not in kinds(ws, FIRST)
    assert len(sink.messages) == len(PEOPLE)


def test_a_stale_approval_stops_a_send(ws: Workspace, sink: Sink, ledger_path: Path) -> None:
    ws.approve(FIRST, "Jane Doe")
    config = ledger_path.parent / "notifier.toml"
    config.write_text(config.read_text().replace("961 000", "961 999"), encoding="utf-8")
    with Workspace.open(ledger_path, env={}) as moved_on:
        with pytest.raises(ApprovalError, match=r"\(settings differ\)"):
            moved_on.send(FIRST, spec(sink))
    assert sink.messages == []


def test_a_follow_up_is_refused_before_the_notice_it_follows(ws: Workspace, sink: Sink) -> None:
    ws.approve(UPDATE, "Jane Doe")
    with pytest.raises(CampaignError, match="has not been sent yet"):
        ws.send(UPDATE, spec(sink))
    assert sink.messages == []


# --- settings belong to the ledger -----------------------------------------------------


def test_settings_are_those_beside_the_ledger_from_any_folder(
    ledger_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from another folder (holding another organisation's settings), or through a
    symlink: the ledger's own settings, every time."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notifier.toml").write_text(
        ORG_SETTINGS.read_text().replace("HMR", "Another Org"), encoding="utf-8"
    )
    (elsewhere / "link.db").symlink_to(ledger_path)
    monkeypatch.chdir(elsewhere)
    for name in (ledger_path, Path("link.db"), Path(os.path.relpath(ledger_path))):
        with Workspace.open(name, env={}) as ws:
            assert ws.campaign(FIRST).contact["en"].organisation == "HMR", name
    with Workspace.open(env={}) as here:  # ./notifier.db: a ledger of this folder
        assert here.campaign(FIRST).contact["en"].organisation == "Another Org"


def test_an_approval_made_in_one_folder_is_the_send_of_another(
    ledger_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: Sink
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for folder in (first, second):
        folder.mkdir()
    (second / "notifier.toml").write_text("[send]\nrequire_approval = false\n")
    monkeypatch.chdir(first)
    with Workspace.open(ledger_path, env={}) as ws:
        ws.approve(FIRST, "Jane Doe")
    monkeypatch.chdir(second)
    with Workspace.open(ledger_path, env={}) as ws:
        assert ws.approval_status(FIRST).is_current
        ws.send(FIRST, spec(sink))
    froms = {parseaddr(str(parsed(m.data)["From"])) for m in sink.messages}
    assert froms == {
        ("Data Protection Officer, HMR", "dpo@hmr.test"),
        ("HMR データ保護責任者", "dpo@hmr.test"),
    }


# --- one sender --------------------------------------------------------------------------


def test_nothing_that_changes_a_send_runs_beside_one(
    ws: Workspace, sink: Sink, tmp_path: Path
) -> None:
    ws.approve(FIRST, "Jane Doe")
    roster = tmp_path / "more.csv"
    roster.write_text("email,family_name,exposure\r\nnew@example.org,New,published\r\n")
    other = Ledger(ws.ledger_path)  # another process's hold, in effect
    try:
        with other.lease("send", FIRST):
            with pytest.raises(SendInProgress, match="another send is running"):
                ws.send(FIRST, spec(sink))
            with pytest.raises(SendInProgress), ws.import_roster(roster):
                pass
            with pytest.raises(SendInProgress):
                mailbox.Maildir(tmp_path / "received", create=True)  # nothing received
                ws.reconcile(FIRST, maildirs=[tmp_path / "received"])
    finally:
        other.close()
    assert sink.messages == [] and ws.latest_import() is not None
    assert ws.latest_import().file_name == "seeded.csv"  # type: ignore[union-attr]


# --- a send run is a recorded thing --------------------------------------------------------


def interrupt_after(count: int) -> SendObserver:
    """An observer that presses Ctrl-C (a real SIGINT) once `count` outcomes are in."""

    class Interrupting:
        seen = 0

        def started(self, total: int | None, server: ServerInfo) -> None:
            pass

        def counted(self, total: int) -> None:
            pass

        def outcome(self, outcome: DeliveryOutcome) -> None:
            self.seen += 1
            if self.seen == count:
                os.kill(os.getpid(), signal.SIGINT)

    return Interrupting()


def throttled(sink: Sink, **changes: object) -> SendSpec:
    """One connection, a message at a time: a Ctrl-C stops it between two messages."""
    options = SendOptions(rate=50, concurrency=1, backoff=0.01, timeout=5.0)
    return SendSpec(**{"options": options, "smtp_url": sink.url, **changes})  # type: ignore[arg-type]


def test_ctrl_c_then_resume_continues_exactly_that_run(ws: Workspace, sink: Sink) -> None:
    """Stopped while sending to the Japanese readers only, a resume sends to the rest of
    them, never to the English readers the stopped run was not for."""
    ws.approve(FIRST, "Jane Doe")
    japanese = throttled(sink, cohort=CohortFilter(locales=("ja",)))
    stopped = ws.send(FIRST, japanese, observer=interrupt_after(1))
    # Stopped between messages: what was in flight (at most the next one) went out.
    assert stopped.stopped and 0 < stopped.counts["sent"] < len(JA)
    run = ws.last_run(FIRST)
    assert run is not None and not run.finished and run.ended is not None
    assert run.data["selection"]["locales"] == ["ja"] and run.ended["stopped"] is True
    assert ws.resume_spec(FIRST).cohort.locales == ("ja",)
    # What status suggests: resume that run, and for the readers it was not for, a send.
    steps = ws.status(FIRST).next_steps
    assert steps[0] == "resume the send that stopped: notifier send 2020-03-breach --resume"
    assert "the people that send was not for: notifier send 2020-03-breach" in steps[1]

    resumed = ws.resume(FIRST)
    assert not resumed.stopped
    assert recipients(sink.messages) == {v.email: 1 for v in JA}  # no English reader
    resumed_run = ws.last_run(FIRST)
    assert resumed_run is not None and resumed_run.data["resumes"] == run.seq
    assert resumed_run.finished and resumed_run.data["options"]["rate"] == 50


def test_a_stop_requested_from_another_thread_stops_cleanly_and_resume_finishes(
    ws: Workspace, sink: Sink
) -> None:
    """The console's stop button: an event set while the send runs (here by the observer,
    as a page's request would from another thread) stops it as Ctrl-C does: what was in
    flight is recorded, the rest stay owed, and nobody is sent the notice twice."""
    ws.approve(FIRST, "Jane Doe")
    stop = threading.Event()

    class StopsAfterOne:
        def started(self, total: int | None, server: ServerInfo) -> None:
            pass

        def counted(self, total: int) -> None:
            pass

        def outcome(self, outcome: DeliveryOutcome) -> None:
            stop.set()

    stopped = ws.send(FIRST, throttled(sink), observer=StopsAfterOne(), stop=stop)
    assert stopped.stopped and 0 < stopped.counts["sent"] < len(PEOPLE)
    states = ws.ledger().state_counts(FIRST)
    assert states["sent"] == stopped.counts["sent"]
    assert states.get("pending", 0) == len(PEOPLE) - states["sent"]  # owed, none in flight
    assert "sending" not in states and "uncertain" not in states
    run = ws.last_run(FIRST)
    assert run is not None and run.ended is not None and run.ended["stopped"] is True
    assert ws.status(FIRST).owed.count == len(PEOPLE) - states["sent"]

    resumed = ws.resume(FIRST)
    assert not resumed.stopped
    assert recipients(sink.messages) == {v.email: 1 for v in PEOPLE}


def test_a_run_of_at_most_n_resumes_its_own_n(ws: Workspace, sink: Sink) -> None:
    ws.approve(FIRST, "Jane Doe")
    ws.send(FIRST, throttled(sink, scope=SendScope(limit=3)), observer=interrupt_after(1))
    run = ws.last_run(FIRST)
    assert run is not None and len(run.data["selection"]["chosen"]) == 3
    ws.resume(FIRST)
    got = recipients(sink.messages)
    assert sorted(got) == sorted(v.email for v in PEOPLE[:3]) and set(got.values()) == {1}


def test_a_run_is_recorded_with_its_selection_and_its_end(ws: Workspace, sink: Sink) -> None:
    ws.approve(FIRST, "Jane Doe")
    ws.send(FIRST, spec(sink, cohort=CohortFilter(exposures=("published",))))
    started, ended = ws.ledger().events(campaign_id=FIRST, kinds=["send_started", "send_ended"])
    assert started.data["selection"]["exposures"] == ["published"]
    assert started.data["command"] == "send" and "@" not in started.data["smtp_url"]
    assert ended.data["run"] == started.seq and ended.data["stopped"] is False
    assert ended.data["counts"] == {"sent": sum(v.exposure == "published" for v in PEOPLE)}


# --- the whole truth --------------------------------------------------------------------


def test_a_partly_sent_follow_up_says_what_it_still_owes(
    ws: Workspace, sink: Sink, notifier_here: Notifier
) -> None:
    ws.approve(FIRST, "Jane Doe")
    ws.approve(UPDATE, "Jane Doe")
    ws.send(FIRST, spec(sink))
    ws.send(UPDATE, spec(sink, cohort=CohortFilter(locales=("ja",))))
    status = ws.status(UPDATE)
    assert (status.owed.audience, status.owed.sent, status.owed.count) == (6, 3, 3)
    assert status.owed.by_state == {None: 3}  # counted by the ledger: no message yet
    assert status.owed.reasons == {"not sent yet": 3}
    assert any("notifier send 2020-04-29-update" in step for step in status.next_steps)
    report = ws.report(UPDATE)
    assert report.owed is not None and report.owed.count == 3
    assert {p.volunteer_id for p in report.owed.people} == {v.volunteer_id for v in EN}
    shown = json.loads(notifier_here("status", UPDATE, "--format", "json").stdout)
    assert (shown["audience"], shown["sent"], shown["owed"]) == (6, 3, 3)
    assert shown["owed_reasons"] == {"not sent yet": 3}
    table = " ".join(notifier_here("report", UPDATE).stdout.split())
    assert "Audience now: 6; sent: 3; still owed: 3" in table


def test_a_report_made_during_a_send_says_so(
    ws: Workspace, sink: Sink, notifier_here: Notifier
) -> None:
    ws.approve(FIRST, "Jane Doe")
    ws.send(FIRST, spec(sink, scope=SendScope(limit=2)))
    other = Ledger(ws.ledger_path)
    try:
        with other.lease("send", FIRST):
            report = ws.report(FIRST)
            table = notifier_here("report", FIRST).stdout
            status = ws.status(FIRST)
    finally:
        other.close()
    assert report.running is not None and report.running.subject == FIRST
    assert table.index("NOTE:") < table.index("generated at")  # at its top
    assert "was running as this report was made" in " ".join(table.split())
    assert status.next_steps == (
        f"a send of {FIRST} is running: watch it with notifier status {FIRST}",
    )


@pytest.fixture
def notifier_here(ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    for var in ("NOTIFIER_LEDGER", "NOTIFIER_CONFIG", "NOTIFIER_SMTP_URL", "NOTIFIER_RATE"):
        monkeypatch.delenv(var, raising=False)
    return Notifier(ledger_path, ledger_path.parent)


def test_cli_resume_keeps_the_runs_options_but_those_given_again(
    ws: Workspace, sink: Sink, notifier_here: Notifier
) -> None:
    ws.approve(FIRST, "Jane Doe")
    first = notifier_here(
        "send", FIRST, "--yes", "--smtp", sink.url, "--limit", "2", "--rate", "50", "--locale", "ja"
    )
    assert first.exit_code == 0, first.output
    again = notifier_here("send", FIRST, "--resume", "--smtp", sink.url, "--timeout", "7")
    assert again.exit_code == 0, again.output
    runs = ws.runs(FIRST)
    assert [r.data["options"]["rate"] for r in runs] == [50, 50]  # kept: not given again
    assert [r.data["options"]["timeout"] for r in runs] == [30.0, 7.0]  # given: changed
    assert runs[1].data["selection"]["locales"] == ["ja"]
    assert recipients(sink.messages) == {v.email: 1 for v in JA[:2]}


def test_a_recorded_run_keeps_every_option_a_library_caller_set() -> None:
    """What `send_started` records, read back, is the same send (the CA file's path comes
    from the settings at resume): a resume never quietly sends another way."""
    options = SendOptions(
        rate=3.0,
        concurrency=2,
        timeout=9.0,
        max_attempts=2,
        backoff=0.5,
        backoff_max=4.0,
        validate_certs=False,
        local_hostname="mail.hmr.test",
    )
    spec = SendSpec(
        cohort=CohortFilter(locales=("ja",)),
        scope=SendScope(limit=5),
        options=options,
        smtp_url="smtp://127.0.0.1:2525",
    )
    data = {
        "selection": spec.selection_json(),
        "options": json.loads(json.dumps(spec.options_json())),
        "smtp_url": spec.smtp_url,
    }
    again = SendSpec.recorded(data, ca_file=None)
    assert again.options == options
    assert again.cohort.locales == ("ja",) and again.scope.limit == 5
    assert again.smtp_url == spec.smtp_url
