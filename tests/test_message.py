"""The message lifecycle: every state, the moves allowed between them, and what a delivery
report may change."""

from __future__ import annotations

import pytest

from notifier.message import (
    ATTEMPT_OUTCOMES,
    FAILED_STATES,
    REACHED_STATES,
    REPORT_RANK,
    RESENDABLE_STATES,
    RESUMABLE_STATES,
    TRANSITIONS,
    DeliveryOutcome,
    MessageState,
    OutgoingMessage,
    can_move,
    state_after_report,
)

S = MessageState
REPORTS = (S.DELIVERED, S.BOUNCED_SOFT, S.EXPIRED, S.BLOCKED, S.BOUNCED_HARD)


def test_message_every_state_has_its_moves_and_every_move_a_known_state() -> None:
    assert set(TRANSITIONS) == set(MessageState)
    for targets in TRANSITIONS.values():
        assert targets <= set(MessageState)
    assert all(state == state.value for state in MessageState)  # what the ledger stores


def test_message_state_groups_are_made_of_states() -> None:
    for group in (
        RESUMABLE_STATES,
        RESENDABLE_STATES,
        ATTEMPT_OUTCOMES,
        FAILED_STATES,
        REACHED_STATES,
    ):
        assert group and set(group) <= set(MessageState)
    # Nothing that reached someone is sent again, and nothing hard-bounced either.
    assert not set(RESENDABLE_STATES) & {S.SENT, S.DELIVERED, S.BOUNCED_HARD}
    assert set(REPORT_RANK) == set(REPORTS)


@pytest.mark.parametrize(
    ("current", "proposed", "allowed"),
    [
        ("pending", "sending", True),
        ("sending", "sent", True),
        ("sending", "uncertain", True),
        ("deferred", "sending", True),
        ("deferred", "failed_temporary", True),
        ("uncertain", "sending", True),  # --resend-uncertain
        ("failed_temporary", "sending", True),  # resend
        ("bounced_soft", "sending", True),  # resend
        ("sent", "sending", False),  # never told twice by accident
        ("delivered", "sending", False),
        ("bounced_hard", "sending", False),
        ("suppressed", "sending", False),  # final
        ("pending", "sent", False),  # only through `sending`: claimed first
        ("failed_permanent", "delivered", False),  # refused outright: no report moves it
    ],
)
def test_message_can_move(current: str, proposed: str, allowed: bool) -> None:
    assert can_move(current, proposed) is allowed


def test_message_unknown_states_are_refused_loudly() -> None:
    with pytest.raises(ValueError):
        can_move("pending", "teleported")
    with pytest.raises(ValueError):
        can_move("teleported", "sent")


def test_message_suppressed_is_final() -> None:
    assert TRANSITIONS[S.SUPPRESSED] == frozenset()
    assert not any(can_move("suppressed", s) for s in MessageState)


@pytest.mark.parametrize(
    ("current", "report", "after"),
    [
        ("sent", S.DELIVERED, S.DELIVERED),
        ("sent", S.BOUNCED_HARD, S.BOUNCED_HARD),
        ("sending", S.DELIVERED, S.DELIVERED),  # it went out: the report is the evidence
        ("uncertain", S.BOUNCED_SOFT, S.BOUNCED_SOFT),
        ("delivered", S.BOUNCED_HARD, S.BOUNCED_HARD),  # worse news wins
        ("bounced_hard", S.DELIVERED, None),  # a late "delivered" does not un-bounce it
        ("delivered", S.BOUNCED_SOFT, None),
        ("bounced_soft", S.BOUNCED_SOFT, None),  # nothing new
        ("failed_permanent", S.BOUNCED_HARD, None),  # refused at SMTP time: never went
        ("suppressed", S.DELIVERED, None),
        ("sent", S.EXPIRED, S.EXPIRED),
        ("delivered", S.EXPIRED, S.EXPIRED),  # a relay took it; the next hop gave up
        ("expired", S.DELIVERED, None),
        ("expired", S.BOUNCED_HARD, S.BOUNCED_HARD),
        ("blocked", S.EXPIRED, None),
    ],
)
def test_message_state_after_report(
    current: str, report: MessageState, after: MessageState | None
) -> None:
    assert state_after_report(current, report) == after


def test_message_a_report_never_moves_a_message_to_a_lower_rank() -> None:
    for current in MessageState:
        for report in REPORTS:
            after = state_after_report(current, report)
            if after is not None:
                assert can_move(current, after)
                assert REPORT_RANK[after] >= REPORT_RANK.get(current, 0)


def test_message_outcome_event_data_and_outgoing_domain() -> None:
    sent = DeliveryOutcome("<m@x>", "c", "V1", MessageState.SENT, 2, 250, "ok", queue_id="Q1")
    assert sent.event_data() == {"attempt": 2, "code": 250, "reply": "ok", "queue_id": "Q1"}
    skipped = DeliveryOutcome("<m@x>", "c", "V1", MessageState.SUPPRESSED, 0, reason="hard bounce")
    assert skipped.event_data() == {
        "attempt": 0,
        "code": None,
        "reply": "",
        "reason": "hard bounce",
    }
    outgoing = OutgoingMessage("<m@x>", "c", "V1", "b+t@x", "t", "Jane@Example.COM", b"x")
    assert outgoing.domain == "example.com"
