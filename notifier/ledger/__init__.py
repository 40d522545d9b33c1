"""The ledger: one SQLite file that is the source of truth for who was told what, and when.

Events are append-only and hash-chained (`chain`); the current state of a message is a
cached column, updated in the same transaction as the event that moves it (`messages`).
Every SQL statement of notifier is in this package, one module per kind of record:

    schema         the tables and their forward-only migrations (version in `meta`)
    chain          event hashing, appending, verify()
    events         reading events back (a person's history, a campaign's events)
    volunteers     volunteers, roster imports and their rejected rows
    campaigns      campaigns, registered when first sent
    messages       messages, their states, claims and delivery outcomes
    bounces        delivery reports kept, and the messages they are matched to
    suppressions   the suppression list
    store          `Ledger`: the open file, transactions, snapshots, and the API

Everything outside this package goes through `Ledger` and the records it returns.

Event kinds. For events about one message, the kind is also the state it moves the
message to (EventDraft.state), so "what happened" and "where it stands" never disagree.
  roster:    roster_imported, volunteer_added, volunteer_updated, row_rejected
  campaign:  campaign_registered
  message:   queued (-> pending), sending, sent, deferred, failed_temporary,
             failed_permanent, uncertain, suppressed (skipped: address suppressed),
             pending and sent after reconcile (data: reconciled, the evidence),
             resend_requested
  bounces:   bounced_hard, bounced_soft (a DSN saying "delayed"), delivered, bounce_forged,
             bounce_unmatched, address_suppressed
"""

from notifier.ledger.bounces import MatchedMessage, RecordedReport
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
from notifier.ledger.messages import Settled
from notifier.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from notifier.ledger.store import DEFAULT_LEDGER, Ledger, LedgerDigest
from notifier.ledger.suppressions import Suppression, address_key
from notifier.ledger.volunteers import (
    ImportRecord,
    ImportSummary,
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
    "ImportRecord",
    "ImportSummary",
    "Ledger",
    "LedgerDigest",
    "MatchedMessage",
    "RecordedReport",
    "Settled",
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
