"""The ledger: one SQLite file that is the source of truth for who was told what, and when.

Events are append-only and hash-chained (`chain`); the current state of a message is a
cached column, updated in the same transaction as the event that moves it (`messages`).
Every SQL statement of notifier is in this package, one module per kind of record:

    schema         the tables and their forward-only migrations (version in `meta`)
    chain          event hashing, appending, verify()
    events         reading events back (a person's history, a campaign's events)
    volunteers     volunteers, roster imports and their rejected rows
    cohorts        volunteers with their messages' states: streamed, or counted by SQL
    campaigns      campaigns, registered when first sent
    messages       messages, their states, claims and delivery outcomes
    bounces        delivery reports kept, and the messages they are matched to
    suppressions   the suppression list
    lease          one sender at a time: the lease row, its holder and heartbeat
    projections    the tables rebuilt from the events, for verify()
    reports        what a report and the unreachable list read, a chunk at a time
    upgrade        carrying a ledger written before keyed hashes forward
    store          `Ledger`: the open file, transactions, snapshots, and the API

Everything outside this package goes through `Ledger` and the records it returns.

Event kinds are `notifier.event.EventKind`; which ones anyone may append, and which the
ledger writes with their table rows, is said there. A message's state moves only through
the one transition function, `messages.move` (`Ledger.move_messages`), which refuses
what `notifier.message.TRANSITIONS` does not allow.
"""

from notifier.config import DEFAULT_LEDGER
from notifier.ledger.bounces import MatchedMessage, RecordedReport, ReportEvent
from notifier.ledger.campaigns import CampaignRecord
from notifier.ledger.chain import (
    GENESIS_HASH,
    Event,
    EventDraft,
    VerifyResult,
    canonical_json,
    event_hash,
    utc_now,
)
from notifier.ledger.cohorts import StateGroup
from notifier.ledger.lease import Holder
from notifier.ledger.messages import Move, Settled
from notifier.ledger.reports import EventStep, MessageWithEvents, OutcomeEvent
from notifier.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from notifier.ledger.store import Ledger, LedgerDigest
from notifier.ledger.suppressions import Suppression, address_key
from notifier.ledger.volunteers import (
    ImportPlan,
    ImportRecord,
    ImportSummary,
    PlannedUpdate,
    VolunteerQuery,
    volunteer_from_row,
    volunteer_to_row,
)

__all__ = [
    "DEFAULT_LEDGER",
    "GENESIS_HASH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CampaignRecord",
    "Event",
    "EventDraft",
    "EventStep",
    "Holder",
    "ImportPlan",
    "ImportRecord",
    "ImportSummary",
    "Ledger",
    "LedgerDigest",
    "MatchedMessage",
    "MessageWithEvents",
    "Move",
    "OutcomeEvent",
    "PlannedUpdate",
    "RecordedReport",
    "ReportEvent",
    "Settled",
    "StateGroup",
    "Suppression",
    "VerifyResult",
    "VolunteerQuery",
    "address_key",
    "canonical_json",
    "event_hash",
    "utc_now",
    "volunteer_from_row",
    "volunteer_to_row",
]
