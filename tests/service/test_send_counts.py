"""A send starts its first message without counting everyone first: its counts (the
audience, what it sets out to send, the suppressed addresses it skips, the progress
bar's total) are made by the database beside the sending, from the ledger as it stood
when the run began. They are the counts the old full pass gave, person by person: in the
summary, in the run's record, to the observer, for a first notice, a resend, a follow-up
and narrowed cohorts, with suppressed addresses and mixed states; a run of at most N
records its N before the first message and a resume finishes exactly them."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_org_config
from smtp_helpers import add_volunteers, make_volunteers, recipients, suppress

from notifier import pipeline
from notifier.event import EventKind
from notifier.ledger import Ledger
from notifier.message import DeliveryOutcome, MessageState
from notifier.pipeline import Tally, audience_chunks, read_selection, send_audience
from notifier.service import (
    CohortFilter,
    SendOptions,
    SendScope,
    SendSpec,
    SendSummary,
    ServerInfo,
    Workspace,
)
from notifier.sink import Sink

FIRST, UPDATE = "2020-03-breach", "2020-04-29-update"
PEOPLE = make_volunteers(30)  # en and ja in turn, every exposure
REFUSED = [PEOPLE[4].email, PEOPLE[17].email]  # failed_permanent: no follow-up
DEFERRED = [PEOPLE[9].email]  # deferred, then failed for now
SUPPRESSED = [PEOPLE[2], PEOPLE[11], PEOPLE[20]]  # after the first notice: skipped


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    folder = tmp_path / "case"
    folder.mkdir()
    write_org_config(folder)
    path = folder / "notifier.db"
    with Ledger(path) as led:
        add_volunteers(led, PEOPLE)
    with Workspace.open(path, env={}) as workspace:
        yield workspace


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink(reject=REFUSED, defer=DEFERRED) as server:
        yield server


class Watching:
    """An observer: the progress bar's total as the run gave it, and the outcomes seen."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.started_with: int | None = -1
        self.counted_with: int | None = None
        self.seen = 0
        self.interrupt_after = interrupt_after

    def started(self, total: int | None, server: ServerInfo) -> None:
        self.started_with = total

    def counted(self, total: int) -> None:
        self.counted_with = total

    def outcome(self, outcome: DeliveryOutcome) -> None:
        self.seen += 1
        if self.seen == self.interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)

    @property
    def total(self) -> int | None:
        return self.counted_with if self.started_with is None else self.started_with


def spec(sink: Sink, **changes: Any) -> SendSpec:
    options = SendOptions(backoff=0.01, backoff_max=0.02, timeout=5.0, max_attempts=2)
    return SendSpec(**{"options": options, "smtp_url": sink.url, **changes})


def walked(ws: Workspace, campaign_id: str, send: SendSpec) -> tuple[int, int, int]:
    """(audience, to send, suppressed) as the old full pass counted them: the audience
    read a chunk at a time, each person selected by `select_messages`."""
    led, campaign = ws.ledger(), ws.campaign(campaign_id)
    audience = send_audience(led, campaign, send.cohort)
    people = [v for chunk in audience_chunks(led, campaign, audience, 4) for v in chunk]
    selection = read_selection(led, campaign.campaign_id, people, send.scope)
    return len(people), len(selection.send), len(selection.suppressed)


def send_and_compare(ws: Workspace, campaign_id: str, send: SendSpec) -> SendSummary:
    """Send; the summary, the run's record and the observer's total are the counts the
    full pass and the dry run gave just before it."""
    audience, to_send, suppressed = walked(ws, campaign_id, send)
    plan = ws.plan_send(campaign_id, send)
    assert (plan.audience, plan.to_send, plan.suppressed) == (audience, to_send, suppressed)
    watching = Watching()
    summary = ws.send(campaign_id, send, observer=watching, handle_signals=False)
    assert (summary.audience, summary.planned, summary.suppressed) == (
        audience,
        to_send,
        suppressed,
    )
    started, ended = list(
        ws.ledger().events(campaign_id=campaign_id, kinds=[EventKind.SEND_STARTED, "send_ended"])
    )[-2:]
    assert ended.data["run"] == started.seq
    recorded = (ended.data["audience"], ended.data["planned"], ended.data["suppressed"])
    assert recorded == (audience, to_send, suppressed)
    if to_send:
        assert watching.total == to_send
    return summary


def test_every_kind_of_run_counts_what_the_full_pass_counted(ws: Workspace, sink: Sink) -> None:
    ws.approve(FIRST, "Jane Doe")
    ws.approve(UPDATE, "Jane Doe")
    ja = CohortFilter(locales=("ja",))
    first = send_and_compare(ws, FIRST, spec(sink, cohort=ja))
    assert first.planned == 15 and first.counts[MessageState.FAILED_PERMANENT] == 1
    rest = send_and_compare(ws, FIRST, spec(sink))
    assert rest.planned == 15
    for person in SUPPRESSED:
        suppress(ws.ledger(), person.email, "hard bounce")
    resend = spec(sink, scope=SendScope(resend_states=(MessageState.FAILED_TEMPORARY,)))
    assert send_and_compare(ws, FIRST, resend).planned == 1
    # The follow-up: people the first notice reached, narrowed three ways, suppressed
    # addresses among them; then the rest of it, and nothing left.
    ids = frozenset(p.volunteer_id.casefold() for p in PEOPLE[:12])
    named = send_and_compare(ws, UPDATE, spec(sink, cohort=CohortFilter(ids=ids)))
    assert named.suppressed == 2 and named.planned == 12 - 2 - 2  # suppressed, refused/deferred
    screened = CohortFilter(exposures=("screened",), locales=("en",))
    assert send_and_compare(ws, UPDATE, spec(sink, cohort=screened)).audience > 0
    follow_up = send_and_compare(ws, UPDATE, spec(sink))
    assert follow_up.audience == 27 and follow_up.suppressed == 1
    assert send_and_compare(ws, UPDATE, spec(sink)).nothing_to_send


def test_the_count_reads_the_ledger_as_it_stood_when_the_run_began(
    ws: Workspace, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The count is held back until the run has recorded its suppressed addresses and sent
    # everything: read from the ledger as it is then, it would find nobody left to send
    # and nobody suppressed (their messages are `suppressed` by then, not due).
    ws.approve(FIRST, "Jane Doe")
    for person in SUPPRESSED:
        suppress(ws.ledger(), person.email, "hard bounce")
    sent_all = threading.Event()
    count = pipeline.count_selection

    def held_back(*args: Any) -> Tally:
        assert sent_all.wait(30)
        return count(*args)

    class Releasing(Watching):
        def outcome(self, outcome: DeliveryOutcome) -> None:
            super().outcome(outcome)
            if self.seen == 27 - len(REFUSED):  # the last outcome (the deferred one's)
                sent_all.set()

    monkeypatch.setattr(pipeline, "count_selection", held_back)
    watching = Releasing()
    summary = ws.send(FIRST, spec(sink), observer=watching, handle_signals=False)
    assert sent_all.is_set()
    assert (summary.audience, summary.planned, summary.suppressed) == (30, 27, 3)
    assert watching.started_with is None  # the first message did not wait for the count
    state_counts = ws.ledger().state_counts(FIRST)
    assert state_counts[MessageState.SUPPRESSED] == 3


def test_a_run_of_at_most_n_records_its_n_and_its_resume_sends_exactly_them(
    ws: Workspace, sink: Sink
) -> None:
    ws.approve(FIRST, "Jane Doe")
    suppress(ws.ledger(), PEOPLE[1].email, "hard bounce")  # among the first: skipped
    limited = spec(sink, scope=SendScope(limit=6))
    plan = ws.plan_send(FIRST, limited)
    assert plan.to_send == 6 and plan.suppressed == 1
    ws.send(FIRST, limited, observer=Watching(interrupt_after=2))
    run = ws.last_run(FIRST)
    assert run is not None and not run.finished
    chosen = [p.volunteer_id for p in PEOPLE if p is not PEOPLE[1]][:6]
    assert run.data["selection"]["chosen"] == chosen
    resumed = ws.resume(FIRST)
    assert not resumed.stopped
    got = recipients(sink.messages)
    # Each of the six once (but the one the server refuses), nobody beyond them.
    assert set(got) == {p.email for p in PEOPLE if p.volunteer_id in chosen} - set(REFUSED)
    assert set(got.values()) == {1}
    assert sum(ws.ledger().state_counts(FIRST).values()) == 30  # the rest queued, unsent
    assert ws.ledger().state_counts(FIRST)[MessageState.PENDING] == 30 - 6 - 1
