"""The open ledger: one SQLite connection, its transactions, and the API the rest of notifier uses.

`Ledger` is the only way into the file from outside this package. Its methods are thin:
the SQL for each kind of record lives in that record's module (volunteers, campaigns,
messages, bounces, suppressions, events, chain), which this class calls with its
connection inside the transaction the method needs.

Writes go through `transaction()`, which takes SQLite's write lock up front
(BEGIN IMMEDIATE) so that the chain head read at the start cannot move underneath us
while another process (say, `notifier send` and `notifier bounces ingest`) writes too.
Several reads that must agree go through `reading()`, one read transaction; `snapshot()`
is a read transaction over a checkpointed file, with that file's sha256.

The ledger's sha256. SQLite in WAL mode keeps recent writes in the `-wal` file next to the
ledger, so the ledger file alone may not hold everything. Before hashing, `snapshot()`
checkpoints (`PRAGMA wal_checkpoint(TRUNCATE)`, which copies the WAL into the file and
empties it), then opens a read transaction and checks that the WAL is still empty. While
that read transaction is open no checkpoint can change the file, so the sha256 is of
exactly the bytes read inside it, and equals `sha256sum` of the file afterwards as long as
nothing writes to it. If a send keeps writing, it retries a few times and otherwise says
in `LedgerDigest.note` that the hash covers the file without the writes still in its WAL.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlite_utils

from notifier.config import (
    DEFAULT_LEDGER,
    ROSTER_CHUNK_ROWS,
)
from notifier.errors import (
    KeyFileError,
    LedgerError,
    LedgerTampered,
    LedgerUnkeyed,
    SendInProgress,
    VolunteerNotFound,
)
from notifier.event import RECORD_KINDS
from notifier.ledger import (
    bounces,
    campaigns,
    chain,
    checkpoint,
    cohorts,
    events,
    lease,
    opening,
    parallel,
    projections,
    reports,
    schema,
    suppressions,
    upgrade,
    volunteers,
)
from notifier.ledger import messages as message_table
from notifier.ledger.bounces import MatchedMessage, RecordedReport, ReportEvent
from notifier.ledger.campaigns import CampaignRecord
from notifier.ledger.chain import Event, EventDraft, VerifyResult
from notifier.ledger.cohorts import UpdatedSince
from notifier.ledger.lease import Holder
from notifier.ledger.messages import Move, Settled
from notifier.ledger.suppressions import Suppression
from notifier.ledger.volunteers import ImportPlan, ImportRecord, ImportSummary, VolunteerQuery
from notifier.message import (
    CLAIMED_STATES,
    RESUMABLE_STATES,
    DeliveryOutcome,
    MessageRow,
    MessageState,
    NewMessage,
)
from notifier.roster import RosterSource, RowProblem
from notifier.secret import LedgerSecret, Purpose, key_path_for, secret_for_ledger
from notifier.volunteer import Volunteer

_EVERYONE = VolunteerQuery()

_SNAPSHOT_TRIES = 3
_CHECKPOINT_BUSY_MS = 2000
# An import inserts into the volunteers' and events' indexes at random places: past a few
# hundred thousand rows those pages no longer fit SQLite's default 2 MB cache, and every
# insert would read them back from the WAL (the 300,000-row bench ran a quarter slower).
_IMPORT_CACHE_KIB = 32 * 1024
# A send's connections (the run's, queueing and checking each chunk, and the journal's,
# claiming and recording) work at the end of indexes that no longer fit the default
# 2 MB cache on a ledger of a few hundred thousand people. And SQLite checkpoints the WAL
# into the file (copy and fsync) from whichever commit takes it past
# `wal_autocheckpoint` pages (1,000 by default), on the thread that sends or claims. On a
# large ledger every message dirties pages at random places in the indexes by Message-ID
# and VERP token (a keyed hash: no order), each a whole page in the WAL: about 20 KB a
# message, so a 64 MB WAL was checkpointed every second or so. At 64,000 pages (256 MB of
# WAL on disk while a send runs) a page dirtied again and again is copied into the file
# once per checkpoint, not each time: the follow-up of a million-person ledger sends 12 %
# faster (2,570 -> 2,900 messages/s, Japanese notices, bench/scale.py's ledger); a larger
# page cache or WAL gained nothing more. What is written is the same.
_SENDING_CACHE_KIB = 32 * 1024
_SENDING_AUTOCHECKPOINT_PAGES = 64_000


@dataclass(frozen=True)
class LedgerDigest:
    """The sha256 of the ledger file, and whether it covers every committed write."""

    sha256: str
    complete: bool
    note: str = ""


@dataclass(frozen=True)
class Verification:
    """A verification started (Ledger.verify_started): call it for the verdict. `apart`:
    it runs in other processes meanwhile (else it is done here, when called)."""

    verdict: Callable[[], VerifyResult]
    apart: bool

    def __call__(self) -> VerifyResult:
        return self.verdict()


class Ledger:
    """An open ledger file. Use as a context manager, or call close().

    Its key file (`key_file`, default beside the ledger: `notifier.secret`) is made with a
    new ledger and read only when a command needs it (to append events, verify, send or
    judge bounces), so reading a report never needs it. `secret`: the key already read
    (a second connection of the same run).
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_LEDGER,
        *,
        create: bool = True,
        key_file: Path | None = None,
        secret: LedgerSecret | None = None,
        time_zone: str = "UTC",
    ) -> None:
        # The file itself, whatever name reached it: its journal, key, settings and
        # lease are the real file's, never a symlink's or another relative path's.
        self.path = Path(path).resolve()
        self.key_file = key_file or key_path_for(self.path)
        self._secret = secret
        self.time_zone = time_zone  # of the times its errors show (notifier.times)
        self.verify_parts = parallel.Parts()  # how verify() splits a large ledger
        if not self.path.exists():
            if not create:
                raise LedgerError(
                    "no ledger here",
                    file=self.path,
                    hint="import a roster first (notifier roster import FILE), "
                    "or point --ledger / NOTIFIER_LEDGER at an existing ledger",
                )
            _create_private_file(self.path)
        opening.refuse_hard_links(self.path)
        conn, self.read_only = opening.connect(self.path, factory=chain.ChainConnection)
        assert isinstance(conn, chain.ChainConnection)
        conn.row_factory = sqlite3.Row  # every row is read by column name
        conn.chain_key = self._chain_key
        self.conn = conn  # for this package's modules only
        # The same connection through sqlite_utils: for tests that set up rows by hand.
        self.db = sqlite_utils.Database(conn)
        if self.read_only:
            if not schema.READABLE_FROM <= schema.schema_version(conn) <= schema.SCHEMA_VERSION:
                conn.close()
                raise opening.read_only_error(self.path, "bring its schema up to date")
            return
        with self.transaction():
            before = schema.migrate(conn, self.path)
            if before == 0:
                chain.start(conn)
                self.secret()  # the key is made with the ledger, and only then
            elif before < 3 and chain.is_keyed(conn):
                # Reports kept before every report had an event (an unkeyed ledger's are
                # adopted by `ledger upgrade`): the chain vouches for them from now on.
                unbacked = bounces.unbacked_reports(conn)
                if unbacked:
                    chain.append(conn, upgrade.report_adoptions(conn, unbacked))

    # -- the key

    def secret(self) -> LedgerSecret:
        """The ledger's secret, read (or, for a new ledger, made) once; a missing or
        foreign key file is a KeyFileError (exit 2): restore it from backup."""
        if self._secret is not None:
            return self._secret
        conn = self.conn
        fingerprint = schema.read_meta(conn, "key_fingerprint")
        has_events = chain.head(conn)[0] > 0
        if fingerprint is None and has_events and chain.is_keyed(conn):
            raise KeyFileError(
                "the ledger does not name its key (meta.key_fingerprint is gone)",
                file=self.path,
                hint="restore the ledger from backup; it was edited outside notifier",
            )
        secret = secret_for_ledger(
            self.key_file, fingerprint=fingerprint, ledger_is_new=not has_events
        )
        if fingerprint is None and chain.is_keyed(conn):
            with self.transaction():
                schema.write_meta(conn, "key_fingerprint", secret.fingerprint)
        self._secret = secret
        return secret

    def _chain_key(self) -> bytes:
        return self.secret().derive(Purpose.CHAIN)

    def verp_key(self) -> bytes:
        """The key of this ledger's VERP tokens. A ledger upgraded from before keyed
        chains keeps the raw key its tokens were made with, so old bounces still match:
        its `ledger_upgraded` event says so (the chain decides, not a setting)."""
        if upgrade.tokens_use_raw_key(self.conn):
            return self.secret().key
        return self.secret().derive(Purpose.VERP)

    def message_id_key(self) -> bytes:
        """The key Message-IDs are made with (notifier.compose.message_id_for)."""
        return self.secret().derive(Purpose.MESSAGE_ID)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        return schema.schema_version(self.conn)

    def count(self, table: str) -> int:
        """The number of rows in one table."""
        sql = f"SELECT count(*) AS n FROM [{table}]"  # noqa: S608
        return int(self.conn.execute(sql).fetchone()["n"])

    # -- transactions

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, holding the write lock from the start. Nested calls join."""
        if self.conn.in_transaction:
            yield
            return
        if self.read_only:
            raise opening.read_only_error(self.path)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                _rollback(self.conn)
                raise
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # Disk full, I/O error, read-only underneath us: nothing of this transaction
            # was kept, so the ledger is as it was before; say so in one line.
            _rollback(self.conn)
            raise opening.write_error(exc, self.path) from exc

    # -- one sender at a time (notifier.ledger.lease)

    @contextlib.contextmanager
    def lease(self, command: str, subject: str) -> Iterator[Holder]:
        """Hold the ledger's lease for the block, or raise SendInProgress (exit 2) naming
        the live holder. `command`: send, resend, roster import, reconcile, ...; `subject`:
        the campaign, or the roster file."""
        holder = lease.new_holder(command, subject)
        if self.read_only:
            raise opening.read_only_error(self.path, f"run {command}")
        try:
            with self.transaction():
                other = lease.take(self.conn, holder)
        except BaseException:
            lease.forget(holder)  # it was never recorded
            raise
        if other is not None:
            raise _refused(self.path, holder, other, self.time_zone)
        try:
            yield holder
        finally:
            with self.transaction():
                lease.give_up(self.conn, holder)

    def refresh_lease(self, holder: Holder, **changes: object) -> Holder | None:
        """A new heartbeat for `holder` (and `changes`, e.g. its run); None if it lost it."""
        with self.transaction():
            return lease.refresh(self.conn, holder, **changes)

    def running(self) -> Holder | None:
        """Who holds the lease right now (a live send, import or reconcile), or None."""
        return lease.live_holder(self.conn)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Several reads over one consistent state of the ledger. Joins an open transaction."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")  # we only read

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[LedgerDigest]:
        """reading() over a checkpointed ledger, and the sha256 of its file.

        Everything read inside the `with` block sees the same state as the hashed bytes
        (see the module docstring).
        """
        if self.conn.in_transaction:
            # The caller holds a transaction: we cannot checkpoint, so hash what is there.
            yield self._digest(complete=self._wal_is_empty())
            return
        for attempt in range(1, _SNAPSHOT_TRIES + 1):
            self._checkpoint()
            with self.reading():
                # The first read starts the snapshot. If the WAL is empty now, the snapshot
                # is the file itself, and no checkpoint can change the file until we end.
                self.schema_version()
                complete = self._wal_is_empty()
                if complete or attempt == _SNAPSHOT_TRIES:
                    yield self._digest(complete=complete)
                    return

    def _checkpoint(self) -> None:
        """Copy the WAL into the ledger file, waiting only briefly for a writer to pause."""
        previous = self.conn.execute("PRAGMA busy_timeout").fetchone()["timeout"]
        self.conn.execute(f"PRAGMA busy_timeout={_CHECKPOINT_BUSY_MS}")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass  # busy: the caller sees a non-empty WAL and says so
        finally:
            self.conn.execute(f"PRAGMA busy_timeout={int(previous)}")

    def _wal_is_empty(self) -> bool:
        wal = self.path.with_name(self.path.name + "-wal")
        return not wal.exists() or wal.stat().st_size == 0

    def _digest(self, *, complete: bool) -> LedgerDigest:
        sha = hashlib.sha256()
        with self.path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        note = (
            ""
            if complete
            else "the ledger was being written while this report was made: the sha256 "
            "covers the ledger file without the writes still in its -wal file; make the "
            "report again when no send or bounce ingest is running"
        )
        return LedgerDigest(sha.hexdigest(), complete, note)

    # -- events and the chain

    def record(self, drafts: Iterable[EventDraft], at: str | None = None) -> list[Event]:
        """Append facts that build no table (notifier.event.RECORD_KINDS: an approval, a
        test send, a send run starting or ending), in order, in one transaction.

        Every other kind is written by the method that writes its table row with it, so
        nothing appended here can make a sound ledger fail verification. Events appended
        together carry one time: `at`, or now.
        """
        drafts = list(drafts)
        for draft in drafts:
            if draft.kind not in RECORD_KINDS or draft.message_id is not None:
                raise LedgerError(
                    f"{draft.kind!r} events are written with their records, not appended"
                    " alone" + (" (and never about a message)" if draft.message_id else ""),
                    hint="use the Ledger method that records what it is about",
                )
        with self.transaction():
            return chain.append(self.conn, drafts, at).events()

    def move_messages(self, moves: Sequence[Move], at: str | None = None) -> list[Event]:
        """The one transition function: append each move's event and move its message, if
        the lifecycle allows every move (else IllegalTransition, and nothing is written).
        Claims go through claim_for_sending."""
        with self.transaction():
            return message_table.move(self.conn, moves, at).events()

    def events(
        self,
        *,
        volunteer_id: str | None = None,
        campaign_id: str | None = None,
        message_id: str | None = None,
        kinds: Sequence[str] | None = None,
        newest_first: bool = False,
        after_seq: int = 0,
    ) -> Iterator[Event]:
        """Events in chain order (or newest first), filtered by any of the attributes
        (`after_seq`: only those after that position in the chain)."""
        return events.events(
            self.conn,
            volunteer_id=volunteer_id,
            campaign_id=campaign_id,
            message_id=message_id,
            kinds=kinds,
            newest_first=newest_first,
            after_seq=after_seq,
        )

    def first_sent(
        self, campaign_id: str, volunteer_ids: Iterable[str]
    ) -> dict[str, tuple[int, str]]:
        """volunteer_id -> (seq, recipient) of the first `sent` event of the campaign's
        message to each of these people (those it was sent to)."""
        return events.first_sent(self.conn, campaign_id, volunteer_ids)

    def sent_recipients(self, campaign_id: str | None = None) -> Iterator[tuple[str, str, str]]:
        """(volunteer_id, campaign_id, recipient) of every `sent` event that recorded its
        recipient (of one campaign, if given), in chain order."""
        return events.sent_recipients(self.conn, campaign_id)

    def latest_seq(self, *, kind: str | None = None, campaign_id: str | None = None) -> int:
        """The position of the latest event of this kind, or naming this campaign (0:
        none): a mark of how far something has moved on."""
        return events.latest_seq(self.conn, kind=kind, campaign_id=campaign_id)

    def volunteer_events(self, volunteer_id: str) -> list[Event]:
        """Every event about one person: naming them, or naming only one of their messages."""
        return events.volunteer_events(self.conn, volunteer_id)

    def campaign_events(self, campaign_id: str) -> list[Event]:
        """Every event about one campaign: naming it, or naming only one of its messages."""
        return events.campaign_events(self.conn, campaign_id)

    # -- what reports read, in bounded memory (notifier.ledger.reports)

    def state_counts_by_group(self, campaign_id: str) -> list[tuple[str, str, str, int]]:
        """(locale, exposure, state, number) of the campaign's messages, counted by the
        database; "" for a message whose volunteer is not on the roster."""
        return [
            (row["locale"], row["exposure"], row["state"], int(row["n"]))
            for row in reports.state_counts_by_group(self.conn, campaign_id)
        ]

    def events_per_hour(
        self, campaign_id: str, leave_out: Collection[str]
    ) -> list[tuple[str | None, str, int, str, str]]:
        """(hour, kind, number, first at, last at) of the campaign's events but the
        `leave_out` kinds, per UTC hour ("2020-04-01T10:00Z"), counted by the database."""
        return [
            (row["hour"], row["kind"], int(row["n"]), row["first"], row["last"])
            for row in reports.events_per_hour(self.conn, campaign_id, leave_out)
        ]

    def campaign_events_of_kinds(self, campaign_id: str, kinds: Collection[str]) -> list[Event]:
        """The events of these kinds naming the campaign, in chain order."""
        return list(reports.campaign_events_of_kinds(self.conn, campaign_id, kinds))

    def unbacked_messages(
        self, campaign_id: str, state_of_kind: Mapping[str, str], leave_out: Collection[str]
    ) -> list[str]:
        """The campaign's messages whose stored state none of their events backs."""
        return reports.unbacked_messages(self.conn, campaign_id, state_of_kind, leave_out)

    def messages_with_events(
        self, campaign_id: str, leave_out: Collection[str], *, chunk: int | None = None
    ) -> Iterator[reports.MessageWithEvents]:
        """The campaign's messages in volunteer order, each with its volunteer and its
        events, read a chunk at a time: use them inside reading() or snapshot()."""
        return reports.messages_with_events(self.conn, campaign_id, leave_out, chunk=chunk)

    def volunteers_in_chunks(self, *, chunk: int | None = None) -> Iterator[list[Volunteer]]:
        """Every volunteer in volunteer_id order, a chunk at a time."""
        return reports.volunteers_in_chunks(self.conn, chunk=chunk)

    def outcome_events_of(
        self, volunteer_ids: Sequence[str], kinds: Collection[str]
    ) -> list[reports.OutcomeEvent]:
        """Events of these kinds naming one of these people and a message, chain order."""
        return reports.outcome_events_of(self.conn, volunteer_ids, kinds)

    def outcome_events_naming_no_volunteer(
        self, kinds: Collection[str]
    ) -> list[reports.OutcomeEvent]:
        """Events of these kinds naming a message and no volunteer, chain order."""
        return reports.outcome_events_naming_no_volunteer(self.conn, kinds)

    def events_naming_no_campaign(self, kinds: Collection[str]) -> Iterator[Event]:
        """Events of these kinds naming no campaign (a roster import's), chain order."""
        return reports.events_naming_no_campaign(self.conn, kinds)

    def verify(self, anchors: Sequence[str] = ()) -> VerifyResult:
        """Walk the chain, check each anchor (`SEQ:HASH` written down earlier), and rebuild
        the tables that decide sending from the events; the first thing that does not hold.
        A large ledger is verified in parts by other processes (`verify_parts`,
        notifier.ledger.parallel): the same verdict, on every core.
        """
        if chain.is_keyed(self.conn):
            self.secret()  # read (and checked) before the read transaction starts
        with self.reading():
            return self.verify_started(anchors)()

    def verify_started(self, anchors: Sequence[str] = ()) -> Verification:
        """verify(), started in other processes when the ledger is large enough, so this
        one can go on meanwhile (a report reads its recipients); the returned function
        gives the verdict, verifying here whatever the others could not vouch for. Call
        both inside one read transaction: the verdict is of its snapshot."""
        pending = None
        if chain.is_keyed(self.conn):
            key = self.secret().derive(Purpose.CHAIN)
            pending = parallel.start(
                self.path, key, self.conn, zone=self.time_zone, parts=self.verify_parts
            )

        def verdict() -> VerifyResult:
            found = None if pending is None else pending.result(self.conn)
            if found is None:
                return self._verify_here(anchors)
            result, difference = found
            return self._verdict(result, anchors, lambda: difference)

        return Verification(verdict, apart=pending is not None)

    def _verify_here(self, anchors: Sequence[str]) -> VerifyResult:
        # The large tables merge-joined with their events after the walk: flat memory.
        replay = projections.Replay(streamed=True)
        result = chain.verify(self.conn, replay.visit, zone=self.time_zone)
        return self._verdict(result, anchors, lambda: replay.first_difference(self.conn))

    def _verdict(
        self, result: VerifyResult, anchors: Sequence[str], difference: Callable[[], str | None]
    ) -> VerifyResult:
        """The chain's verdict, then the anchors', then the tables' (only when the chain
        holds, as each needs what came before it)."""
        if not result.ok:
            return result
        for anchor in anchors:
            problem = self._anchor_problem(anchor)
            if problem:
                return replace(result, ok=False, reason=problem)
        found = difference()
        if found:
            return replace(result, ok=False, reason=found)
        return result

    def _anchor_problem(self, anchor: str) -> str:
        seq_text, _, wanted = anchor.strip().partition(":")
        if not seq_text.isdigit() or len(wanted) != 64:
            raise LedgerError(
                f"not an anchor: {anchor!r}",
                hint="give SEQ:HASH as notifier ledger head printed it",
            )
        stored = chain.event_hash_at(self.conn, int(seq_text))
        if stored is None:
            return (
                f"anchor {seq_text}:{wanted[:12]}...: the ledger holds no event {seq_text}"
                " (events were removed, or this is an older copy)"
            )
        if stored != wanted.lower():
            return (
                f"anchor {seq_text}:{wanted[:12]}...: event {seq_text} has another hash"
                f" ({stored[:12]}...): the history up to it was rewritten or replaced"
            )
        return ""

    def head(self) -> str:
        """`SEQ:HASH` of the last event: worth writing down outside the ledger (an anchor)."""
        return chain.head_text(self.conn)

    def require_intact(self, *, since_checkpoint: bool = False) -> VerifyResult:
        """Refuse (exit 1) a ledger that fails verification: nothing is sent from it.

        `since_checkpoint`: what a send does: walk the chain only from the latest
        checkpoint on (a full walk when there is none), then record a new checkpoint, so
        a send's start-up does not grow with the ledger. notifier.ledger.checkpoint says
        what that leaves to `notifier ledger verify`, and what the send checks instead.
        """
        result = self.verify_since_checkpoint() if since_checkpoint else self.verify()
        if result.ok:
            return result
        if result.reason == chain.UPGRADE_HINT:
            raise LedgerUnkeyed(
                f"the ledger is {chain.UPGRADE_HINT}",
                file=self.path,
                hint="nothing was sent",
            )
        raise LedgerTampered(
            f"the ledger fails verification: {result.reason}",
            file=self.path,
            hint="run notifier ledger verify; nothing was sent",
        )

    def verify_since_checkpoint(self) -> VerifyResult:
        """The chain verified from its latest checkpoint (the whole ledger, tables
        included, when there is none or the chain is unkeyed); a new checkpoint recorded
        when it holds."""
        if not chain.is_keyed(self.conn):
            return self.verify()
        self.secret()  # read (and checked) before the read transaction starts
        with self.reading():
            point = checkpoint.latest(self.conn)
        if point is None:
            result = self.verify()
        else:
            with self.reading():
                result = checkpoint.verify_since(self.conn, point)
        if result.ok and not self.read_only:
            with self.transaction():
                checkpoint.record(self.conn, result)
        return result

    def rows_differ(
        self,
        volunteer_ids: Collection[str],
        campaign_id: str,
        *,
        queued_now: Collection[str] = (),
    ) -> str | None:
        """Whether these volunteers' rows, and their messages of the campaign, are what
        their events say (None), or the first that is not, in words: what a send checks
        of each chunk before it claims it (notifier.ledger.checkpoint). `queued_now`:
        volunteers whose message this very transaction registered (row and event written
        together under its lock), left out of the messages' check."""
        with self.reading():
            return projections.rows_differ(
                self.conn, volunteer_ids, campaign_id, queued_now=queued_now
            )

    def upgrade(self) -> upgrade.Upgraded | None:
        """Re-key an old unkeyed chain, recorded as an event (None: nothing to do)."""
        with self.transaction():
            done = upgrade.upgrade(self.conn, self.key_file)
        self._secret = None
        return done

    # -- volunteers and roster imports

    def volunteers(self, query: VolunteerQuery = _EVERYONE) -> Iterator[Volunteer]:
        """The volunteers the query selects (default: everyone), in volunteer_id order."""
        return volunteers.select(self.conn, query)

    def volunteer_page(
        self, query: VolunteerQuery = _EVERYONE, *, after: str | None = None, size: int = 1000
    ) -> list[Volunteer]:
        """The next `size` volunteers the query selects after `after`, in volunteer_id
        order: a roster read a page at a time, in bounded memory."""
        return volunteers.select_page(self.conn, query, after, size)

    def count_volunteers(self, query: VolunteerQuery = _EVERYONE) -> Counter[tuple[str, str]]:
        """How many volunteers the query selects, by (locale, exposure)."""
        return volunteers.count_by_locale_and_exposure(self.conn, query)

    def volunteers_with_states(
        self, query: VolunteerQuery, campaigns: Sequence[str]
    ) -> Iterator[tuple[Volunteer, tuple[str | None, ...]]]:
        """The volunteers the query selects, in volunteer_id order, each with the state of
        their message in each of `campaigns` (None: none), streamed (ledger.cohorts)."""
        return cohorts.with_states(self.conn, query, campaigns)

    def count_with_states(
        self,
        query: VolunteerQuery,
        campaigns: Sequence[str],
        *,
        suppressed: Collection[str] = (),
        ids: Collection[str] | None = None,
    ) -> list[cohorts.StateGroup]:
        """The volunteers the query selects, counted by exposure, locale, their messages'
        states in `campaigns`, suppressed and named in `ids` (ledger.cohorts)."""
        return cohorts.count_with_states(
            self.conn, query, campaigns, suppressed=suppressed, ids=ids
        )

    def updated_since_sent(self, campaign_id: str, after_seq: int) -> Iterator[UpdatedSince]:
        """Each person's roster updates after `after_seq`, with the campaign's first `sent`
        to them, in volunteer_id order, streamed (ledger.cohorts)."""
        return cohorts.updated_since_sent(self.conn, campaign_id, after_seq)

    def get_volunteer(self, id_or_email: str) -> Volunteer:
        """Find one volunteer by id, or by address (case-insensitive)."""
        found = volunteers.find(self.conn, id_or_email)
        if found is None:
            raise VolunteerNotFound(
                f"no volunteer with id or address {id_or_email.strip()!r}",
                file=self.path,
                hint="list them with: notifier roster list",
            )
        return found

    def record_import(
        self,
        roster: RosterSource,
        *,
        mapping_sha256: str = "",
        strict: bool = False,
        chunk_rows: int = ROSTER_CHUNK_ROWS,
    ) -> ImportSummary:
        """Record one roster import: the import, its rejected rows, volunteer changes, events.

        All in one transaction: what changes is decided (notifier.roster_diff) against the
        volunteers as this transaction reads them. Re-importing the file last imported,
        when that would change no volunteer, writes nothing and says so (already_imported).
        `roster` may be read as it goes (notifier.roster.open_roster): it is compared and
        written a chunk of rows at a time, so memory does not grow with the file.
        """
        try:
            with self.transaction(), self._page_cache(_IMPORT_CACHE_KIB), _collector_paused():
                return volunteers.import_roster(
                    self.conn,
                    roster,
                    mapping_sha256=mapping_sha256,
                    strict=strict,
                    spool_dir=self.path.parent,
                    chunk_rows=chunk_rows,
                )
        except OSError as exc:  # the rows waiting in their file beside the ledger
            if exc.errno == errno.ENOSPC:
                raise opening.disk_full_error(exc, self.path) from exc
            raise

    @staticmethod
    def plan_first_import(roster: RosterSource, *, strict: bool = False) -> ImportPlan:
        """plan_import() where there is no ledger yet: against nobody, creating nothing
        (a preview must not make a ledger, or its key, in the folder it looked at)."""
        return volunteers.plan_import(None, roster, strict=strict)

    def plan_import(self, roster: RosterSource, *, strict: bool = False) -> ImportPlan:
        """What record_import() would decide for `roster`, from one consistent read of the
        volunteers, writing nothing (the console's preview of an import)."""
        with self.reading():
            return volunteers.plan_import(self.conn, roster, strict=strict)

    @contextlib.contextmanager
    def tuned_for_sending(self) -> Iterator[None]:
        """This connection set for a send's many small chunked writes (a larger page cache,
        rarer WAL checkpoints: see _SENDING_CACHE_KIB) for the block, then as it was. What
        is written is the same; only when SQLite copies it into the file changes."""
        previous = int(self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self.conn.execute(f"PRAGMA wal_autocheckpoint={_SENDING_AUTOCHECKPOINT_PAGES}")
        try:
            with self._page_cache(_SENDING_CACHE_KIB):
                yield
        finally:
            self.conn.execute(f"PRAGMA wal_autocheckpoint={previous}")

    @contextlib.contextmanager
    def _page_cache(self, kib: int) -> Iterator[None]:
        """SQLite's page cache at `kib` KiB for the block's duration, then as it was."""
        previous = int(self.conn.execute("PRAGMA cache_size").fetchone()[0])
        self.conn.execute(f"PRAGMA cache_size=-{int(kib)}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA cache_size={previous}")

    def latest_import(self) -> ImportRecord | None:
        """The most recent roster import recorded, if any."""
        return volunteers.latest_import(self.conn)

    def rejected_rows(self, import_id: int | None = None) -> Iterator[RowProblem]:
        """The problems recorded for one import (default: the latest), in row order, read
        as they are used: use them while the ledger is open."""
        return volunteers.rejected_rows(self.conn, import_id)

    # -- campaigns

    def register_campaign(
        self,
        campaign_id: str,
        *,
        title: str,
        follows: str | None,
        definition: dict[str, Any],
        templates_sha256: str,
    ) -> bool:
        """Record a campaign the first time it is sent; True if it was new."""
        with self.transaction():
            return campaigns.register(
                self.conn,
                campaign_id,
                title=title,
                follows=follows,
                definition=definition,
                templates_sha256=templates_sha256,
            )

    def campaign(self, campaign_id: str) -> CampaignRecord | None:
        """The campaign as registered, or None if it was never sent."""
        return campaigns.find(self.conn, campaign_id)

    def campaign_ids(self) -> list[str]:
        """Every campaign registered (sent at least once), in id order."""
        return campaigns.ids(self.conn)

    def campaign_is_registered(self, campaign_id: str) -> bool:
        return self.campaign(campaign_id) is not None

    # -- messages and delivery (notifier.ledger.messages explains the write-ahead intent)

    def ensure_messages(self, campaign_id: str, messages: Iterable[NewMessage]) -> list[NewMessage]:
        """Register each message as pending (a `queued` event) unless it exists; returns
        the ones it registered, with their VERP tokens (numbered ones issued here for
        those given without). LedgerTampered, and nothing written, for a message whose row
        was deleted behind the chain's back (its person would be mailed twice)."""
        try:
            with self.transaction():
                return message_table.ensure(self.conn, campaign_id, messages, self.verp_key)
        except LedgerTampered as exc:
            raise LedgerTampered(exc.message, file=self.path, hint=exc.hint) from None

    def claim_for_sending(
        self,
        message_ids: Sequence[str],
        wire: dict[str, tuple[str, str]] | None = None,
        *,
        claimable: Collection[MessageState] = RESUMABLE_STATES,
    ) -> dict[str, int]:
        """Mark `sending`, in one committed transaction, each message that is still in one
        of the `claimable` states (default: still to go, as a plain send takes them);
        returns the attempt of each one claimed (a message not in the result was taken or
        moved on by someone else: do not send it).

        Call it before the bytes go out: a crash after this leaves the messages `sending`,
        which the next run reports as uncertain rather than sending them twice. `wire`:
        message_id -> (recipient, sha256 of the bytes), recorded in the `sending` events.
        """
        with self.transaction():
            return message_table.claim(self.conn, message_ids, claimable, wire)

    def record_outcomes(self, outcomes: Iterable[DeliveryOutcome]) -> int:
        """Append one event per outcome (kind = new state) and keep the server's reply."""
        with self.transaction():
            return message_table.record_outcomes(self.conn, list(outcomes))

    def mark_uncertain(self, campaign_id: str) -> list[MessageRow]:
        """Messages left `sending` by a run that died: move them to `uncertain`, with an event."""
        with self.transaction():
            return message_table.mark_uncertain(self.conn, campaign_id)

    def settle_uncertain(
        self, campaign_id: str, found: Mapping[str, Mapping[str, str]], searched: str
    ) -> list[Settled]:
        """Settle uncertain messages from evidence (notifier.reconcile), in one transaction:
        found -> sent with the evidence, not found -> pending. See messages.settle_uncertain."""
        with self.transaction():
            return message_table.settle_uncertain(self.conn, campaign_id, found, searched)

    def campaign_messages(
        self,
        campaign_id: str,
        *,
        states: Sequence[str] | None = None,
        volunteer_ids: Collection[str] | None = None,
    ) -> list[MessageRow]:
        """A campaign's messages with their recipients, in volunteer order (of these
        volunteers only, when given)."""
        return message_table.campaign_messages(
            self.conn, campaign_id, states=states, volunteer_ids=volunteer_ids
        )

    def claimed_messages(self, campaign_id: str) -> list[MessageRow]:
        """Messages claimed and without an outcome (`sending`, `uncertain`): in flight while
        a send of the campaign is live, else uncertain (notifier.message.is_uncertain)."""
        return self.campaign_messages(campaign_id, states=CLAIMED_STATES)

    def messages(self, campaign_id: str | None = None) -> list[MessageRow]:
        """The messages of one campaign (default: of every campaign), as stored."""
        return message_table.messages(self.conn, campaign_id)

    def message_states(
        self, campaign_id: str, *, volunteer_ids: Collection[str] | None = None
    ) -> dict[str, MessageState]:
        """volunteer_id -> state of the campaign's messages (volunteers without one left
        out), of these volunteers only when given."""
        return message_table.message_states(self.conn, campaign_id, volunteer_ids)

    def state_counts(self, campaign_id: str) -> dict[str, int]:
        """Number of the campaign's messages in each state (states with none are left out)."""
        return message_table.state_counts(self.conn, campaign_id)

    def message_ids(
        self,
        campaign_id: str,
        *,
        states: Collection[str] | None = None,
        volunteer_ids: Collection[str] | None = None,
    ) -> dict[str, str]:
        """volunteer_id -> Message-ID of the campaign's messages (in one of `states`, if
        given), as the ledger issued them (what a follow-up's In-Reply-To names: looked
        up, never recomputed)."""
        return message_table.message_ids(self.conn, campaign_id, states, volunteer_ids)

    def has_messages(self, campaign_id: str) -> bool:
        """True when the ledger holds any message of this campaign (it has been sent)."""
        return message_table.has_messages(self.conn, campaign_id)

    # -- delivery reports

    def message_by_verp_token(self, token: str) -> MatchedMessage | None:
        return bounces.message_by_verp_token(self.conn, token)

    def message_by_message_id(self, message_id: str) -> MatchedMessage | None:
        """The message with this Message-ID, with or without its angle brackets."""
        return bounces.message_by_message_id(self.conn, message_id)

    def bounce_report_recorded(self, sha256: str) -> bool:
        return bounces.is_recorded(self.conn, sha256)

    def record_report(
        self,
        sha256: str,
        source: str,
        *,
        message: MatchedMessage | None,
        events: Sequence[ReportEvent],
        detail: dict[str, Any],
    ) -> RecordedReport:
        """Keep one delivery report, received now, with the events it makes: for a report
        tied to `message`, what it says about it (each moves the message as far as the
        lifecycle and REPORT_RANK allow; a hard bounce also suppresses the address it
        bounced from); else one event saying why it was kept unmatched. One transaction."""
        with self.transaction():
            return bounces.record(
                self.conn, sha256, source, message=message, events=events, detail=detail
            )

    def bounce_reports(self, *, matched: bool | None = None) -> list[RecordedReport]:
        """The delivery reports kept (only the matched, or unmatched, ones if asked)."""
        return bounces.reports(self.conn, matched=matched)

    # -- suppressions

    def suppressed(self, email: str) -> bool:
        """True when the address is on the suppression list (hard bounce), any case."""
        return suppressions.address_is_suppressed(self.conn, email)

    def suppressed_addresses(self) -> set[str]:
        """The whole suppression list, as address_key() (lowercase), to check many at once."""
        return suppressions.suppressed_addresses(self.conn)

    def suppressions(self) -> list[Suppression]:
        return suppressions.suppressions(self.conn)


def _refused(path: Path, holder: Holder, other: Holder, zone: str) -> SendInProgress:
    """The one line for a command refused while another holds the lease."""
    doing = "sent" if holder.is_sending else "changed"
    if other.is_sending:
        what = f"another send is running on this ledger: {other.describe(zone)}"
        hint = (
            f"wait for it to finish (watch it with: notifier status {other.subject});"
            f" nothing was {doing} by this run"
        )
    else:
        what = f"a {other.command} is running on this ledger: {other.describe(zone)}"
        hint = f"wait for it to finish, then run this again; nothing was {doing} by this run"
    return SendInProgress(what, file=path, hint=hint)


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (after SQLITE_FULL, for one).
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _create_private_file(path: Path) -> None:
    """Create the ledger readable by its owner only: it holds personal data. A folder it
    cannot be made in is one LedgerError (exit 2) naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        reason = "a file is where a folder should be" if exc.errno == errno.EEXIST else None
        raise LedgerError(
            f"cannot create the ledger ({reason or exc.strerror})",
            file=path,
            hint="run where you may write, or point --ledger / NOTIFIER_LEDGER at a"
            " folder you may write to",
        ) from exc
    os.close(fd)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block (as it was, after).

    An import makes a few objects a row and keeps every address and id it has seen (to
    find duplicates): each full collection walks them all again, and at 300,000 rows those
    walks were a sixth of the import. The rows make no reference cycles (the collections
    found none), so nothing is left for the collector that it would have freed sooner.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
