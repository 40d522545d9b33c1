"""Messages: one campaign to one volunteer, as it goes out and what happened when we tried
to deliver it.

This module is the one home of the message lifecycle: `MessageState` names every state
once, and `TRANSITIONS` says which moves are allowed. The ledger (which stores states),
delivery (which produces outcomes), bounce ingestion (which learns more later), reports
and the CLI all read the states and their groups from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class MessageState(StrEnum):
    """Where one message stands. The value is what the ledger stores and events are named."""

    PENDING = "pending"  # registered, not yet handed to a server
    SENDING = "sending"  # claimed: committed just before its bytes go out
    SENT = "sent"  # the server took it (2xx at end of DATA)
    DEFERRED = "deferred"  # 4xx or a network error: will be retried
    FAILED_TEMPORARY = "failed_temporary"  # still 4xx after the last retry
    FAILED_PERMANENT = "failed_permanent"  # 5xx at SMTP time: refused outright
    UNCERTAIN = "uncertain"  # claimed by a run that died: it may or may not have gone
    SUPPRESSED = "suppressed"  # skipped: the address is suppressed (an earlier hard bounce)
    BOUNCED_HARD = "bounced_hard"  # a report said the address cannot receive
    BOUNCED_SOFT = "bounced_soft"  # a report said the mailbox is full or the message too big
    BLOCKED = "blocked"  # a report said our mail was refused for policy or reputation (5.7.x)
    # A report said the mail system gave up when its queue lifetime ran out (`failed` with
    # a 4.x.x status, or X.4.7): a server was down, the address was never refused.
    EXPIRED = "expired"
    DELIVERED = "delivered"  # a report confirmed delivery


S = MessageState

# What a delivery report can say about a message that went out.
_REPORTED = frozenset({S.DELIVERED, S.BOUNCED_SOFT, S.EXPIRED, S.BLOCKED, S.BOUNCED_HARD})

# Every allowed move, from -> to. A state not listed as a source is final. Delivery moves a
# message forward through `sending`; a resend or --resend-uncertain starts a new attempt
# (-> sending). A message that cannot be sent at all (it cannot be composed, or its address
# cannot go to this server) is failed_permanent without an attempt, from any state a run
# may pick up. An outcome settles an uncertain message: it is evidence of what the server
# did. A report is evidence the message went out whatever the sender recorded (it can
# arrive before `sent` is written, or after a crash), so it may move any message but one
# refused outright or never sent; among reports, worse news wins (`REPORT_RANK`).
# The ledger's one transition function (notifier.ledger.messages.move) refuses any other.
_PICKED_UP = frozenset({S.SENDING, S.SUPPRESSED, S.FAILED_PERMANENT})
_MOVES: dict[MessageState, frozenset[MessageState]] = {
    S.PENDING: _PICKED_UP | _REPORTED,
    S.DEFERRED: _PICKED_UP | {S.FAILED_TEMPORARY} | _REPORTED,
    S.SENDING: frozenset(
        {S.SENT, S.DEFERRED, S.FAILED_TEMPORARY, S.FAILED_PERMANENT, S.UNCERTAIN, S.SUPPRESSED}
    )
    | _REPORTED,
    S.UNCERTAIN: _PICKED_UP | {S.SENT, S.PENDING, S.DEFERRED, S.FAILED_TEMPORARY} | _REPORTED,
    S.SENT: _REPORTED,
    S.DELIVERED: _REPORTED,
    S.BOUNCED_SOFT: _PICKED_UP | _REPORTED,
    # Blocked: the address is fine, our mail was refused. Never a suppression; it may be
    # sent again once the sender has fixed what was refused (reputation, SPF, DKIM, ...).
    S.BLOCKED: _PICKED_UP | _REPORTED,
    # Expired: the mail system gave up while a server was down. The address is fine, so
    # it is never suppressed, and the notice may go again.
    S.EXPIRED: _PICKED_UP | _REPORTED,
    S.FAILED_TEMPORARY: _PICKED_UP | _REPORTED,
    S.FAILED_PERMANENT: _PICKED_UP,
    S.BOUNCED_HARD: _REPORTED,
    S.SUPPRESSED: frozenset(),
}
# Staying put is not a move (the transition function records such an event unmoved).
TRANSITIONS: dict[MessageState, frozenset[MessageState]] = {
    state: moves - {state} for state, moves in _MOVES.items()
}


def can_move(current: str, proposed: str) -> bool:
    """True if a message in `current` may move to `proposed` (staying put is not a move)."""
    return MessageState(proposed) in TRANSITIONS[MessageState(current)]


# States that say the message still has to go out (a resumed send picks them up).
RESUMABLE_STATES: tuple[MessageState, ...] = (S.PENDING, S.DEFERRED)
# States `notifier resend` may send again, as a new attempt of the same message. Not
# sent/delivered (that would tell someone twice) nor bounced_hard (suppressed: a letter).
# Blocked is: the refusal was about our mail, not the address, and the sender can fix it;
# so is expired: the mail system gave up while a server was down.
RESENDABLE_STATES: tuple[MessageState, ...] = (
    S.FAILED_TEMPORARY,
    S.FAILED_PERMANENT,
    S.BOUNCED_SOFT,
    S.BLOCKED,
    S.EXPIRED,
)
# Outcomes of one delivery attempt, as classified by the SMTP outcome rule
# (notifier.smtp.outcome): a refusal at SMTP time is judged by the same rule as a
# delivery report's status, so a full mailbox is bounced_soft and a policy refusal
# blocked, whether the server said so at once or in a report later.
ATTEMPT_OUTCOMES: tuple[MessageState, ...] = (
    S.SENT,
    S.DEFERRED,
    S.FAILED_TEMPORARY,
    S.FAILED_PERMANENT,
    S.BOUNCED_SOFT,
    S.BLOCKED,
)
# The states a run may claim a message from (-> sending): those with that move.
CLAIMABLE_STATES: frozenset[MessageState] = frozenset(
    s for s, moves in TRANSITIONS.items() if S.SENDING in moves
)
# Failures at SMTP time (the server never took the message).
FAILED_STATES: tuple[MessageState, ...] = (S.FAILED_PERMANENT, S.FAILED_TEMPORARY)
# A follow-up's default cohort: people whose earlier notice reached them.
REACHED_STATES: tuple[MessageState, ...] = (S.SENT, S.DELIVERED)

# A message a run claimed and has no outcome for: `sending` while that run is alive (in
# flight), or left `sending` by a run that stopped and marked `uncertain` by the next.
CLAIMED_STATES: tuple[MessageState, ...] = (S.SENDING, S.UNCERTAIN)


def is_uncertain(state: str, *, run_is_live: bool) -> bool:
    """Whether nobody knows if this message went: uncertain, or `sending` with no live run
    to finish it (the one rule `status`, `report` and a send's summary use)."""
    return state == S.UNCERTAIN or (state == S.SENDING and not run_is_live)


# Messages whose notice has not reached the person, and that nothing will settle on its
# own: a person left here is on the postal worklist (`export unreachable`) until a later
# message reaches them. Pending and deferred count once their send has stopped.
UNREACHED_STATES: tuple[MessageState, ...] = (
    S.PENDING,
    S.DEFERRED,
    S.FAILED_TEMPORARY,
    S.FAILED_PERMANENT,
    S.SUPPRESSED,
    S.BOUNCED_SOFT,
    S.BLOCKED,
    S.EXPIRED,
    S.BOUNCED_HARD,
)

# Every state in words a reader without the manual understands: the one place the report
# (HTML, terminal), `status` and `export unreachable` take them from.
STATE_WORDS: dict[MessageState, str] = {
    S.PENDING: "not sent yet",
    S.SENDING: "being sent",
    S.SENT: "sent: the mail server accepted it",
    S.DEFERRED: "delayed: the mail server asked us to try again later",
    S.FAILED_TEMPORARY: "not sent: the mail server kept asking us to try later",
    S.FAILED_PERMANENT: "not sent: the mail server refused it",
    S.UNCERTAIN: "unknown: sending was interrupted; it may or may not have gone",
    S.SUPPRESSED: "not sent: this address bounced before",
    S.BOUNCED_HARD: "bounced: address does not exist",
    S.BOUNCED_SOFT: "bounced for now: mailbox full or unavailable",
    S.BLOCKED: "refused: our mail was blocked; the address is fine; needs action by the sender",
    S.EXPIRED: "not delivered: the mail system gave up retrying (a server was down);"
    " the address is fine",
    S.DELIVERED: "delivered: confirmed by the receiving server",
}


def state_words(state: str) -> str:
    """A message state in words; an unknown state as it is."""
    try:
        return STATE_WORDS[MessageState(state)]
    except ValueError:
        return state


# What a delivery report may say about a message: higher is worse news and wins, so a
# report never moves a message to a lower rank (a late "delivered" does not un-bounce it).
# Blocked ranks above delivered and soft: it is a final refusal of this message (a relay
# may say "delivered" and the next hop refuse it; a later soft report would only be a
# retry of the same refused mail), so it must not be hidden by either. Expired is final
# for this message too (the mail system stopped trying), above delivered for the same
# reason, and below blocked: a refusal says the sender must act before trying again. Hard
# ranks highest: "the address does not exist" is the strongest fact, and only it
# suppresses the address.
REPORT_RANK: dict[MessageState, int] = {
    S.BOUNCED_SOFT: 1,
    S.DELIVERED: 2,
    S.EXPIRED: 3,
    S.BLOCKED: 4,
    S.BOUNCED_HARD: 5,
}


def state_after_report(current: str, proposed: MessageState) -> MessageState | None:
    """The state a delivery report moves a message to, or None to leave it as it is.

    A report never regresses a message (`REPORT_RANK`), never overrides a refusal at SMTP
    time or a suppression, and never repeats the state the message already has.
    """
    if current == proposed or not can_move(current, proposed):
        return None
    if REPORT_RANK.get(MessageState(current), 0) > REPORT_RANK[proposed]:
        return None
    return proposed


@dataclass(frozen=True)
class MessageRow:
    """A message as the ledger knows it (with its recipient's address where the query
    joined it, and when its state last moved where the query read that)."""

    message_id: str  # RFC 5322 Message-ID, with angle brackets
    campaign_id: str
    volunteer_id: str
    verp_token: str
    state: MessageState
    attempts: int  # delivery attempts so far: each `sending` event adds one
    email: str = ""
    smtp_reply: str = ""
    queue_id: str = ""
    updated_at: str | None = None  # when the state last moved; None if it never did


@dataclass(frozen=True)
class NewMessage:
    """A message to be registered as pending. Without a VERP token, the ledger issues
    the next numbered one as it registers the message (notifier.verp)."""

    message_id: str
    volunteer_id: str
    verp_token: str = ""


@dataclass(frozen=True)
class DeliveryOutcome:
    """The result of one attempt to hand one message to the SMTP server.

    `state` is one of ATTEMPT_OUTCOMES (or `suppressed` when the message was skipped).
    `code` is the SMTP reply code, None for network errors (refused, reset, timeout).
    """

    message_id: str
    campaign_id: str
    volunteer_id: str
    state: MessageState
    attempt: int
    code: int | None = None
    reply: str = ""
    queue_id: str | None = None
    reason: str = ""  # why, in words, when it was not sent
    recipient: str = ""  # the RCPT TO address, when it was sent
    sha256: str = ""  # of the message's bytes, when it was sent

    def event_data(self) -> dict[str, object]:
        data: dict[str, object] = {"attempt": self.attempt, "code": self.code, "reply": self.reply}
        if self.queue_id:
            data["queue_id"] = self.queue_id
        if self.reason:
            data["reason"] = self.reason
        if self.recipient:
            data["recipient"] = self.recipient
        if self.sha256:
            data["sha256"] = self.sha256
        return data


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready for the wire, with its envelope: what delivery hands a server."""

    message_id: str
    campaign_id: str
    volunteer_id: str
    envelope_from: str  # the VERP address
    envelope_id: str  # the VERP token: ENVID when the server offers DSN
    recipient: str  # the RCPT TO address (Unicode with SMTPUTF8, else A-label form)
    data: bytes
    smtputf8: bool = False  # the envelope or headers need SMTPUTF8
    # `data` as it goes after DATA (notifier.smtp.protocol.wire_form), made where the
    # message was composed, off the sending process; None: made when sending. Often
    # `data` itself.
    wire: bytes | None = None
    sha256: str = ""  # of `data`, recorded in the `sending` and `sent` events ("": made then)

    def digest(self) -> str:
        return self.sha256 or hashlib.sha256(self.data).hexdigest()

    @property
    def domain(self) -> str:
        return self.recipient.rpartition("@")[2].lower()
