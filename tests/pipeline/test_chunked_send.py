"""A send streams its audience a chunk at a time: whatever the chunk size, the same people
get the same messages, and the ledger ends with the same states and the same events for
each message (suppressions, a limit, cohort filters, a resend, a follow-up)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from smtp_helpers import add_volunteers, make_volunteers, recipients, suppress

from notifier.campaign import Campaign, load_campaign
from notifier.cohort import CohortFilter
from notifier.config import Settings
from notifier.delivery import SendOptions
from notifier.ledger import Ledger
from notifier.message import MessageState
from notifier.pipeline import (
    CHUNK_SIZE,
    SendRequest,
    SendScope,
    plan_send,
    send_audience,
    send_campaign,
)
from notifier.sink import Sink

FIRST, FOLLOW_UP = "2020-03-breach", "2020-04-29-update"
COUNT = 60
EVERYONE, PLAIN = CohortFilter(), SendScope()


def _send(
    ledger: Ledger,
    campaign: Campaign,
    sink: Sink,
    chunk_size: int,
    cohort: CohortFilter = EVERYONE,
    scope: SendScope = PLAIN,
) -> dict[str, Any]:
    options = SendOptions(backoff=0.01, backoff_max=0.02, timeout=5.0, max_attempts=2)
    request = SendRequest(
        campaign,
        send_audience(ledger, campaign, cohort),
        options=options,
        scope=scope,
        compose_workers=0,
        chunk_size=chunk_size,
    )
    settings = Settings(ledger=ledger.path, smtp_url=sink.url)
    plan = plan_send(ledger, request, settings, chosen=True)
    before = len(sink.messages)
    with ledger.lease(scope.command, campaign.campaign_id) as holder:
        ledger.require_intact()
        summary = send_campaign(ledger, request, settings, holder=holder, handle_signals=False)
    return {
        "planned": summary.planned,
        "chosen": plan.chosen,
        "counts": summary.counts,
        "suppressed": summary.suppressed,
        "received": recipients(sink.messages[before:]),
    }


def _scenario(path: Path, chunk_size: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every kind of run on one roster; what each run did, and the ledger afterwards."""
    people = make_volunteers(COUNT)
    runs = []
    with Ledger(path) as ledger:
        add_volunteers(ledger, people)
        for v in (people[3], people[20], people[41]):
            suppress(ledger, v.email, "hard bounce")
        first, update = load_campaign(FIRST), load_campaign(FOLLOW_UP)
        deferring = {people[i].email for i in (5, 14, 33)}
        with Sink(defer=deferring) as sink:
            # A limited run of a narrowed cohort, then the rest (the deferred ones give up).
            narrowed = CohortFilter(exposures=("published", "screened"))
            runs.append(_send(ledger, first, sink, chunk_size, narrowed, SendScope(limit=11)))
            runs.append(_send(ledger, first, sink, chunk_size))
        with Sink() as sink:
            again = SendScope(resend_states=(MessageState.FAILED_TEMPORARY,))
            runs.append(_send(ledger, first, sink, chunk_size, scope=again))
            ja = CohortFilter(locales=("ja",))
            runs.append(_send(ledger, update, sink, chunk_size, ja, SendScope(limit=9)))
            runs.append(_send(ledger, update, sink, chunk_size))
        assert ledger.verify().ok
        # Each ledger has a key of its own, so its Message-IDs: compared by whose they are.
        messages = sorted(
            (m.campaign_id, m.volunteer_id, m.state, m.attempts) for m in ledger.messages()
        )
        histories: dict[tuple[str, str], list[str]] = {}
        for event in ledger.events():
            if event.message_id:
                whose = (event.campaign_id or "", event.volunteer_id or "")
                histories.setdefault(whose, []).append(str(event.kind))
    return runs, [messages, sorted(histories.items())]


def test_a_send_in_chunks_of_seven_does_what_one_chunk_does(tmp_path: Path) -> None:
    small_runs, small_ledger = _scenario(tmp_path / "small.db", 7)
    whole_runs, whole_ledger = _scenario(tmp_path / "whole.db", CHUNK_SIZE)
    assert small_runs == whole_runs
    assert small_ledger == whole_ledger
    # The scenario did what it says: a limit, suppressions, give-ups, a resend, a follow-up.
    limited, rest, resend, update_ja, update_rest = whole_runs
    assert limited["planned"] == 11 and len(limited["received"]) == 11
    assert limited["chosen"] == tuple(sorted(limited["chosen"]))
    assert limited["suppressed"] + rest["suppressed"] == 3  # whatever the limit
    assert rest["counts"].get("failed_temporary") == 3
    assert resend["counts"] == {"sent": 3}
    assert update_ja["planned"] == 9 and update_rest["planned"] > 0
    everyone = Counter[str]()
    for run in (limited, rest, resend):
        everyone.update(run["received"])
    assert len(everyone) == COUNT - 3 and set(everyone.values()) == {1}
