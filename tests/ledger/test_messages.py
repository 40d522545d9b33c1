"""Messages in the ledger: registering them, the write-ahead claim, outcomes, and the events
that move each message's state in the same statement as they are written."""

from __future__ import annotations

import threading

import pytest
from smtp_helpers import add_volunteers, make_volunteers

from notifier import verp
from notifier.errors import IllegalTransition, LedgerError
from notifier.event import EventKind
from notifier.ledger import Ledger, Move
from notifier.message import TRANSITIONS, DeliveryOutcome, MessageRow, MessageState, NewMessage

IDS = [f"<m{i}@example.org>" for i in range(3)]


@pytest.fixture
def campaign(ledger: Ledger) -> Ledger:
    """Campaign `c` with three pending messages, to HMR-00000 .. HMR-00002."""
    add_volunteers(ledger, make_volunteers(3))
    assert ledger.register_campaign(
        "c", title="t", follows=None, definition={}, templates_sha256="0" * 64
    )
    new = [NewMessage(IDS[i], f"HMR-{i:05d}", f"t{i}") for i in range(3)]
    assert ledger.ensure_messages("c", new) == new
    assert ledger.ensure_messages("c", new) == []  # known messages are left as they are
    return ledger


def test_messages_are_registered_pending_with_a_queued_event(campaign: Ledger) -> None:
    assert campaign.has_messages("c") and not campaign.has_messages("other")
    assert campaign.state_counts("c") == {"pending": 3}
    assert campaign.message_states("c") == {f"HMR-{i:05d}": "pending" for i in range(3)}
    assert [e.kind for e in campaign.events(campaign_id="c")] == ["campaign_registered"] + [
        "queued"
    ] * 3
    first = campaign.messages("c")[0]
    assert first == MessageRow(
        message_id=IDS[0],
        campaign_id="c",
        volunteer_id="HMR-00000",
        verp_token="t0",
        state=MessageState.PENDING,
        attempts=0,
        smtp_reply="",
        queue_id="",
        updated_at=first.updated_at,
    )
    assert campaign.messages() == campaign.messages("c")
    assert [m.email for m in campaign.campaign_messages("c")] == [
        v.email for v in make_volunteers(3)
    ]


def test_claims_and_outcomes_move_messages_in_one_statement(campaign: Ledger) -> None:
    assert campaign.claim_for_sending(IDS) == dict.fromkeys(IDS, 1)
    campaign.record_outcomes(
        [
            DeliveryOutcome(
                IDS[0], "c", "HMR-00000", MessageState.SENT, 1, 250, "2.0.0 Ok: queued as Q1", "Q1"
            ),
            DeliveryOutcome(
                IDS[1], "c", "HMR-00001", MessageState.DEFERRED, 1, None, "Connection lost"
            ),
            DeliveryOutcome(
                IDS[2], "c", "HMR-00002", MessageState.FAILED_PERMANENT, 1, reason="no way"
            ),
        ]
    )
    assert campaign.claim_for_sending([IDS[1]]) == {IDS[1]: 2}
    rows = {m.message_id: m for m in campaign.campaign_messages("c")}
    assert (rows[IDS[0]].state, rows[IDS[0]].queue_id) == ("sent", "Q1")
    assert (rows[IDS[1]].state, rows[IDS[1]].attempts) == ("sending", 2)
    assert rows[IDS[1]].smtp_reply == "Connection lost"  # kept from the deferral
    assert (rows[IDS[2]].state, rows[IDS[2]].smtp_reply) == ("failed_permanent", "no way")
    updated = {m.message_id: m.updated_at for m in campaign.messages("c")}
    last = {e.message_id: e.at for e in campaign.events(campaign_id="c") if e.message_id}
    assert updated == last  # a message's time is that of its latest event
    assert campaign.verify().ok


def test_claiming_an_unknown_message_claims_nothing(campaign: Ledger) -> None:
    events = campaign.count("events")
    with pytest.raises(LedgerError, match="no such message"):
        campaign.claim_for_sending([IDS[0], "<nobody@example.org>"])
    assert campaign.count("events") == events
    assert campaign.state_counts("c") == {"pending": 3}
    assert campaign.claim_for_sending([]) == {}
    assert campaign.record_outcomes([]) == 0


def test_messages_left_sending_become_uncertain(campaign: Ledger) -> None:
    campaign.claim_for_sending(IDS[:2])
    assert [m.message_id for m in campaign.claimed_messages("c")] == IDS[:2]
    stuck = campaign.mark_uncertain("c")
    assert [m.message_id for m in stuck] == IDS[:2]
    assert campaign.state_counts("c") == {"pending": 1, "uncertain": 2}
    (event, _) = campaign.events(kinds=["uncertain"])
    assert event.data["attempt"] == 1 and "in flight" in event.data["reason"]
    assert campaign.mark_uncertain("c") == []  # nothing left sending


def test_a_move_writes_its_event_and_the_state_together(campaign: Ledger) -> None:
    campaign.claim_for_sending([IDS[0]])
    (event,) = campaign.move_messages(
        [Move(IDS[0], EventKind.SENT, {"attempt": 1})], at="2020-04-01T10:00:00.000000+00:00"
    )
    moved = {m.message_id: m for m in campaign.messages("c")}[IDS[0]]
    assert (moved.state, moved.updated_at) == ("sent", event.at)
    assert (event.campaign_id, event.volunteer_id) == ("c", "HMR-00000")  # from the message
    # A report that moves nothing records, and leaves the state as it was.
    (unclear,) = campaign.move_messages([Move(IDS[1], EventKind.BOUNCE_UNCLEAR, {"x": 1})])
    assert "moved_to" not in unclear.data
    assert campaign.message_states("c")["HMR-00001"] == "pending"
    # A report that moves its message says where, so the chain can rebuild the state.
    (bounce,) = campaign.move_messages(
        [Move(IDS[0], EventKind.BOUNCED_HARD, {}, MessageState.BOUNCED_HARD)]
    )
    assert bounce.data["moved_to"] == "bounced_hard"
    assert campaign.verify().ok


# How to bring a message to each state through allowed moves only.
S = MessageState
_PATH: dict[MessageState, list[tuple[EventKind, MessageState | None]]] = {
    S.PENDING: [],
    S.SENDING: [(EventKind.SENDING, None)],
    S.SUPPRESSED: [(EventKind.SUPPRESSED, None)],
    **{
        state: [(EventKind.SENDING, None), (EventKind(state), None)]
        for state in (S.SENT, S.DEFERRED, S.FAILED_TEMPORARY, S.FAILED_PERMANENT, S.UNCERTAIN)
    },
    **{
        state: [(EventKind.SENDING, None), (EventKind.SENT, None), (EventKind(state), state)]
        for state in (S.DELIVERED, S.BOUNCED_SOFT, S.EXPIRED, S.BLOCKED, S.BOUNCED_HARD)
    },
}


def _bring(ledger: Ledger, message_id: str, state: MessageState) -> None:
    for kind, to in _PATH[state]:
        if kind == EventKind.SENDING:
            assert ledger.claim_for_sending([message_id], claimable=set(MessageState))
        else:
            ledger.move_messages([Move(message_id, kind, {}, to)])
    assert {m.message_id: m.state for m in ledger.messages("c")}[message_id] == state


ILLEGAL = [
    (before, after)
    for before in MessageState
    for after in MessageState
    if after not in TRANSITIONS[before] and (after != before or after == S.SENDING)
]


@pytest.mark.parametrize(("before", "after"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_every_illegal_move_is_refused_and_writes_nothing(
    campaign: Ledger, before: MessageState, after: MessageState
) -> None:
    """The transition table is enforced, not advisory: every move it does not list is
    refused by the ledger itself (a claim simply does not take the message)."""
    _bring(campaign, IDS[0], before)
    events = campaign.count("events")
    if after == S.SENDING:
        assert campaign.claim_for_sending([IDS[0]], claimable=set(MessageState)) == {}
    else:
        kind = EventKind(after.value)
        with pytest.raises(IllegalTransition, match=f"is {before} cannot become {after}"):
            campaign.move_messages(
                [Move(IDS[1], EventKind.SUPPRESSED, {}), Move(IDS[0], kind, {}, after)]
            )
    assert campaign.count("events") == events  # not even the batch's other, legal move
    assert {m.message_id: m.state for m in campaign.messages("c")}[IDS[0]] == before
    assert campaign.verify().ok


def test_every_allowed_move_is_taken(campaign: Ledger) -> None:
    pairs = [
        (before, after)
        for before, targets in TRANSITIONS.items()
        for after in sorted(targets - {S.SENDING})  # claims: tested on their own
    ]
    add_volunteers(campaign, make_volunteers(len(pairs), start=10))
    for number, (before, after) in enumerate(pairs, start=10):
        message_id = f"<{before}-{after}@example.org>"
        campaign.ensure_messages("c", [NewMessage(message_id, f"HMR-{number:05d}", message_id)])
        _bring(campaign, message_id, before)
        campaign.move_messages([Move(message_id, EventKind(after), {}, after)])
        assert {m.message_id: m.state for m in campaign.messages("c")}[message_id] == after
    assert campaign.verify().ok


def test_only_a_claim_moves_a_message_to_sending_and_never_twice(campaign: Ledger) -> None:
    with pytest.raises(IllegalTransition, match="only a claim"):
        campaign.move_messages([Move(IDS[0], EventKind.SENDING, {"attempt": 1})])
    assert campaign.claim_for_sending([IDS[0]]) == {IDS[0]: 1}
    assert campaign.claim_for_sending([IDS[0]]) == {}  # claimed already: not again
    campaign.move_messages([Move(IDS[0], EventKind.SENT, {})])
    assert campaign.claim_for_sending([IDS[0]], claimable=set(MessageState)) == {}  # sent
    # A run claims only from its own states: a deferred message is not a resend's to take
    # unless its states say so.
    assert campaign.claim_for_sending([IDS[1]]) == {IDS[1]: 1}
    campaign.move_messages([Move(IDS[1], EventKind.DEFERRED, {})])
    assert campaign.claim_for_sending([IDS[1]], claimable={S.FAILED_TEMPORARY}) == {}
    assert campaign.claim_for_sending([IDS[1]]) == {IDS[1]: 2}
    assert campaign.verify().ok


def test_two_connections_claiming_the_same_messages_take_each_once(campaign: Ledger) -> None:
    """The claim is conditional inside the write transaction: two senders (here two
    connections, as two processes would have) that both chose the same messages split
    them, whatever the order their claims reach the ledger."""
    other = Ledger(campaign.path)
    try:
        first = campaign.claim_for_sending(IDS[:2])
        second = other.claim_for_sending(IDS)
        assert first == {IDS[0]: 1, IDS[1]: 1} and second == {IDS[2]: 1}
        assert not first.keys() & second.keys()
    finally:
        other.close()
    assert campaign.state_counts("c") == {"sending": 3}
    assert campaign.verify().ok


def test_a_send_chunks_look_ups_go_by_volunteer_not_by_state(campaign: Ledger) -> None:
    # A chunk of a send asks for its volunteers' messages in some states: by the state
    # index SQLite would read every message of the campaign in those states, per chunk
    # (a follow-up of a million people read a million rows per thousand it sent).
    traced: list[str] = []
    campaign.conn.set_trace_callback(traced.append)  # the SQL with its values, as run
    try:
        assert campaign.message_ids("c", states=["pending"], volunteer_ids=["HMR-00001"]) == {
            "HMR-00001": IDS[1]
        }
        rows = campaign.campaign_messages("c", states=["pending"], volunteer_ids=["HMR-00001"])
        assert [m.message_id for m in rows] == [IDS[1]]
    finally:
        campaign.conn.set_trace_callback(None)
    looked_up = [sql for sql in traced if sql.lstrip().startswith("SELECT")]
    assert len(looked_up) == 2
    for sql in looked_up:
        plan = " ".join(str(row[3]) for row in campaign.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "idx_messages_campaign_id_volunteer_id" in plan, plan
        assert "idx_messages_campaign_id_state" not in plan, plan


def test_a_chunks_check_leaves_out_only_the_messages_its_transaction_queued(
    campaign: Ledger,
) -> None:
    """A send checks each chunk's rows in the transaction that queues its messages; the
    messages that transaction registered (row and `queued` event written together) are
    not read again, and nothing else is left out: an edited volunteer of the same person,
    or a message queued earlier (by another run), is still found."""
    campaign.conn.execute(
        "UPDATE messages SET verp_token = 'forged' WHERE message_id = ?", (IDS[1],)
    )
    campaign.conn.execute(
        "UPDATE volunteers SET email = 'attacker@evil.test' WHERE volunteer_id = 'HMR-00002'"
    )
    everyone = [f"HMR-{i:05d}" for i in range(3)]
    assert "verp_token" in (campaign.rows_differ(["HMR-00001"], "c") or "")
    # Registered earlier, so a new chunk's transaction does not return it: still checked.
    with campaign.transaction():
        queued_now = [
            m.volunteer_id
            for m in campaign.ensure_messages("c", [NewMessage(IDS[1], "HMR-00001", "t1")])
        ]
        assert queued_now == []
        assert "verp_token" in (
            campaign.rows_differ(["HMR-00001"], "c", queued_now=queued_now) or ""
        )
    # The volunteer's own row is checked whatever their message.
    found = campaign.rows_differ(everyone, "c", queued_now=everyone) or ""
    assert "volunteer_id HMR-00002" in found and "volunteers" in found


# --- VERP tokens: numbered by the ledger as it queues (notifier.verp) ---------------------


def _queue(ledger: Ledger, campaign_id: str, numbers: range) -> list[NewMessage]:
    return ledger.ensure_messages(
        campaign_id,
        [NewMessage(f"<{campaign_id}.{n}@example.org>", f"HMR-{n:05d}") for n in numbers],
    )


def _registered(ledger: Ledger, campaign_id: str) -> None:
    ledger.register_campaign(
        campaign_id, title="t", follows=None, definition={}, templates_sha256="0" * 64
    )


def test_tokens_are_numbered_in_the_order_messages_are_queued(ledger: Ledger) -> None:
    add_volunteers(ledger, make_volunteers(30))
    _registered(ledger, "c")
    _registered(ledger, "d")
    key = ledger.verp_key()
    first = _queue(ledger, "c", range(10))
    again = _queue(ledger, "d", range(10, 20))  # another chunk, another campaign
    given = NewMessage(
        "<kept@example.org>", "HMR-00020", verp.make_token(key, "<kept@example.org>")
    )
    assert ledger.ensure_messages("c", [given]) == [given]  # a token given is kept
    last = _queue(ledger, "c", range(21, 30))
    numbers = [verp.token_number(m.verp_token) for m in (*first, *again, *last)]
    start = verp.first_number(key)
    assert numbers == list(range(start, start + 29))
    tokens = [m.verp_token for m in (*first, *again, *last)]
    assert all(verp.token_is_authentic(key, t) for t in tokens)
    # What the ledger keeps (and its queued events vouch for) is what was returned.
    kept = {row.message_id: row.verp_token for row in ledger.messages()}
    assert kept == {m.message_id: m.verp_token for m in (*first, *again, given, *last)}
    queued = {e.message_id: e.data["verp_token"] for e in ledger.events(kinds=["queued"])}
    assert queued == kept
    for m in (*first, *last):
        found = ledger.message_by_verp_token(m.verp_token)
        assert found is not None and found.message_id == m.message_id
    assert ledger.verify().ok


def test_two_senders_at_once_never_take_one_number(ledger: Ledger) -> None:
    """Two connections queueing chunks at the same time (two sends, or a send and the
    console): each reads the next number inside its own write transaction, so none is
    issued twice and no chunk fails on the tokens' unique index."""
    add_volunteers(ledger, make_volunteers(400))
    _registered(ledger, "c")
    start = threading.Barrier(2)
    issued: list[list[NewMessage]] = [[], []]

    def sender(which: int) -> None:
        with Ledger(ledger.path) as own:
            start.wait(timeout=10)
            for chunk in range(which * 200, which * 200 + 200, 10):
                issued[which] += _queue(own, "c", range(chunk, chunk + 10))

    threads = [threading.Thread(target=sender, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    numbers = sorted(verp.token_number(m.verp_token) or 0 for m in issued[0] + issued[1])
    start_at = verp.first_number(ledger.verp_key())
    assert numbers == list(range(start_at, start_at + 400))
    assert ledger.state_counts("c") == {"pending": 400}
    # Each chunk's ten numbers are consecutive: one transaction took them together.
    for mine in issued:
        for at in range(0, 200, 10):
            chunk = [verp.token_number(m.verp_token) or 0 for m in mine[at : at + 10]]
            assert chunk == list(range(chunk[0], chunk[0] + 10))


def test_numbers_continue_after_the_highest_issued_in_a_reopened_ledger(ledger: Ledger) -> None:
    add_volunteers(ledger, make_volunteers(4))
    _registered(ledger, "c")
    (before,) = _queue(ledger, "c", range(1))
    with Ledger(ledger.path) as reopened:
        (after,) = _queue(reopened, "c", range(1, 2))
    assert verp.token_number(after.verp_token) == (verp.token_number(before.verp_token) or 0) + 1


def test_a_ledger_whose_token_numbers_were_pushed_to_the_end_says_so(ledger: Ledger) -> None:
    """Only an edit gets there (9e14 numbers): the send stops with what to run, instead of
    issuing a token out of range or one already held."""
    add_volunteers(ledger, make_volunteers(2))
    _registered(ledger, "c")
    (queued,) = _queue(ledger, "c", range(1))
    last = verp.numbered_token(ledger.verp_key(), 10**verp.NUMBER_DIGITS - 1)
    ledger.conn.execute(
        "UPDATE messages SET verp_token = ? WHERE message_id = ?", (last, queued.message_id)
    )
    with pytest.raises(LedgerError, match="used up") as raised:
        _queue(ledger, "c", range(1, 2))
    assert "ledger verify" in str(raised.value.hint)
    assert ledger.state_counts("c") == {"pending": 1}  # nothing of that chunk was written


def test_a_message_whose_row_was_deleted_is_never_registered_again(campaign: Ledger) -> None:
    """The ledger's own rule, whoever calls it: a message (or another message of the same
    campaign to the same person) that the chain holds events of is not queued afresh."""
    campaign.claim_for_sending([IDS[0]])
    campaign.conn.execute("DELETE FROM messages WHERE message_id = ?", (IDS[0],))
    before = campaign.head()
    for again in (
        NewMessage(IDS[0], "HMR-00000"),  # the same message
        NewMessage("<another@example.org>", "HMR-00000"),  # another ID for that person
    ):
        with pytest.raises(LedgerError, match="missing \\(deleted\\)") as raised:
            campaign.ensure_messages("c", [NewMessage("<new@example.org>", "HMR-00001"), again])
        assert IDS[0] in str(raised.value) and raised.value.file == str(campaign.path)
        assert campaign.head() == before  # nothing of the chunk was written
    # Another campaign's message to that person is a message of its own.
    _registered(campaign, "d")
    (queued,) = campaign.ensure_messages("d", [NewMessage("<d0@example.org>", "HMR-00000")])
    assert queued.verp_token
