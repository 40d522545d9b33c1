"""Events: the kinds of fact the ledger records, and which message state each one makes.

Every event the ledger holds has one of the kinds below; nothing appends a free-form
kind. They fall into groups by what they may touch:

- `RECORD_KINDS` only record a fact (an approval, a test send, a send run starting or
  ending): no table is built from them, and they never name a message. These are the
  only kinds `Ledger.record` appends for anyone outside the ledger package.
- Everything else is appended by the ledger itself, together with the table row it
  vouches for (a volunteer, a message's state, a suppression, a rejected row, a kept
  delivery report), so the chain and the tables can never disagree.

`state_after_event` is the one answer to "which state does this event put its message
in": the ledger's transition function writes it, `ledger verify` replays it, and the
report checks each stored state against it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from notifier.message import MessageState


class EventKind(StrEnum):
    """What an event records. The value is what the ledger stores."""

    # The roster
    ROSTER_IMPORTED = "roster_imported"
    VOLUNTEER_ADDED = "volunteer_added"
    VOLUNTEER_UPDATED = "volunteer_updated"
    ROW_REJECTED = "row_rejected"
    # Campaigns, and what is done with them before and around a send
    CAMPAIGN_REGISTERED = "campaign_registered"
    CAMPAIGN_APPROVED = "campaign_approved"
    CAMPAIGN_CHECKED = "campaign_checked"
    TEST_SENT = "test_sent"
    TEST_REFUSED = "test_refused"
    SEND_STARTED = "send_started"
    SEND_ENDED = "send_ended"
    # A message (the kind is the state it moves the message to; queued -> pending)
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED_TEMPORARY = "failed_temporary"
    FAILED_PERMANENT = "failed_permanent"
    UNCERTAIN = "uncertain"
    SUPPRESSED = "suppressed"
    PENDING = "pending"  # an uncertain message reconcile found was never received
    # Delivery reports (a report's own kind; `moved_to` says where it moved its message)
    BOUNCED_HARD = "bounced_hard"
    BOUNCED_SOFT = "bounced_soft"
    BLOCKED = "blocked"
    EXPIRED = "expired"  # the mail system gave up when its queue lifetime ran out
    DELIVERED = "delivered"
    BOUNCE_UNCLEAR = "bounce_unclear"  # tied to a message, but says nothing we understand
    DELAY_REPORTED = "delay_reported"  # the mail system is still trying: a note, no move
    BOUNCE_FORGED = "bounce_forged"
    BOUNCE_UNMATCHED = "bounce_unmatched"
    BOUNCE_UNPARSEABLE = "bounce_unparseable"
    ADDRESS_SUPPRESSED = "address_suppressed"
    # The ledger's own upkeep: `ledger upgrade` re-keying an old ledger, adopting its rows
    LEDGER_UPGRADED = "ledger_upgraded"
    VOLUNTEER_ADOPTED = "volunteer_adopted"
    MESSAGE_ADOPTED = "message_adopted"
    SUPPRESSION_ADOPTED = "suppression_adopted"
    REJECTED_ROW_ADOPTED = "rejected_row_adopted"
    BOUNCE_REPORT_ADOPTED = "bounce_report_adopted"
    IMPORT_ADOPTED = "import_adopted"
    CAMPAIGN_ADOPTED = "campaign_adopted"
    # How far the chain was verified (notifier.ledger.checkpoint): a send verifies from here
    LEDGER_VERIFIED = "ledger_verified"


K = EventKind

# Facts that build no table and name no message: what `Ledger.record` appends.
RECORD_KINDS: frozenset[EventKind] = frozenset(
    {
        K.CAMPAIGN_APPROVED,
        K.CAMPAIGN_CHECKED,
        K.TEST_SENT,
        K.TEST_REFUSED,
        K.SEND_STARTED,
        K.SEND_ENDED,
    }
)

# Events whose kind names the state they move their message to (`queued`: pending).
SELF_NAMING_KINDS: frozenset[EventKind] = frozenset(
    {
        K.SENDING,
        K.SENT,
        K.DEFERRED,
        K.FAILED_TEMPORARY,
        K.FAILED_PERMANENT,
        K.UNCERTAIN,
        K.SUPPRESSED,
        K.PENDING,
    }
)

# What a delivery report says about its message, as the event recording it.
REPORT_KINDS: frozenset[EventKind] = frozenset(
    {
        K.BOUNCED_HARD,
        K.BOUNCED_SOFT,
        K.BLOCKED,
        K.EXPIRED,
        K.DELIVERED,
        K.BOUNCE_UNCLEAR,
        K.DELAY_REPORTED,
    }
)
# Of those, the ones that only note what a report said, and never move their message.
NOTE_KINDS: frozenset[EventKind] = frozenset({K.BOUNCE_UNCLEAR, K.DELAY_REPORTED})
# Reports kept without being tied to a message they could say anything about.
UNMATCHED_REPORT_KINDS: frozenset[EventKind] = frozenset(
    {K.BOUNCE_FORGED, K.BOUNCE_UNMATCHED, K.BOUNCE_UNPARSEABLE}
)

# The kinds a ledger written before keyed hashes could hold (the message states, the
# roster, the reports, approvals and test sends were all older). Any other kind (or one of
# these with a field only keyed ledgers write) shows a ledger was written keyed: such a
# ledger can never be "upgraded" from an unkeyed-looking state (notifier.ledger.upgrade).
UNKEYED_ERA_KINDS: frozenset[str] = frozenset(
    {
        K.ROSTER_IMPORTED,
        K.VOLUNTEER_ADDED,
        K.VOLUNTEER_UPDATED,
        K.ROW_REJECTED,
        K.CAMPAIGN_REGISTERED,
        K.CAMPAIGN_APPROVED,
        K.TEST_SENT,
        K.TEST_REFUSED,
        K.QUEUED,
        K.ADDRESS_SUPPRESSED,
        *SELF_NAMING_KINDS,
        *(REPORT_KINDS - NOTE_KINDS - {K.EXPIRED}),
        *UNMATCHED_REPORT_KINDS,
    }
)

# Events recording the ledger's own upkeep, not something that happened to anyone.
BOOKKEEPING_KINDS: frozenset[EventKind] = frozenset(
    {
        K.LEDGER_UPGRADED,
        K.VOLUNTEER_ADOPTED,
        K.MESSAGE_ADOPTED,
        K.SUPPRESSION_ADOPTED,
        K.REJECTED_ROW_ADOPTED,
        K.BOUNCE_REPORT_ADOPTED,
        K.IMPORT_ADOPTED,
        K.CAMPAIGN_ADOPTED,
    }
)


# The state each kind that names one puts its message in (`queued`: pending).
STATE_OF_KIND: Mapping[str, MessageState] = {
    K.QUEUED: MessageState.PENDING,
    **{kind: MessageState(kind) for kind in SELF_NAMING_KINDS},
}


def state_after_event(kind: str, data: str | Mapping[str, Any]) -> MessageState | None:
    """The state an event about one message puts it in, or None when it leaves it as it
    was. `data` is the event's data, as stored (canonical JSON) or read.

    `queued` registers a message as pending; a kind in SELF_NAMING_KINDS is the state;
    any other event about a message (a delivery report, an outcome refused at SMTP time
    whose kind is a report's) names the state in `moved_to`, when it moved it.
    """
    named = STATE_OF_KIND.get(kind)
    if named is not None:
        return named
    if isinstance(data, str):
        if '"moved_to"' not in data:  # cheap: most events carry none
            return None
        read: Mapping[str, Any] = json.loads(data)
    else:
        read = data
    moved = read.get("moved_to")
    return MessageState(moved) if moved in MESSAGE_STATE_VALUES else None


MESSAGE_STATE_VALUES: frozenset[str] = frozenset(MessageState)
