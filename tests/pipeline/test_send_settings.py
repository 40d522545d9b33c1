"""A send's connections are set for many small chunked writes (a larger page cache, rarer
WAL checkpoints: notifier.ledger.store._SENDING_*) while it sends, and put back after:
the run's own (it reads, queues and checks each chunk) and the journal's (claims and
outcomes). What is written stays the same."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from smtp_helpers import add_volunteers, make_volunteers

from notifier.campaign import load_campaign
from notifier.config import Settings
from notifier.delivery import SendOptions
from notifier.journal import ThreadedLedgerJournal
from notifier.ledger import Ledger
from notifier.ledger import store as store_module
from notifier.message import DeliveryOutcome
from notifier.pipeline import SendRequest, send_campaign
from notifier.sink import Sink
from notifier.smtp.session import ServerInfo

TUNED = (-store_module._SENDING_CACHE_KIB, store_module._SENDING_AUTOCHECKPOINT_PAGES)


def settings_of(conn: sqlite3.Connection) -> tuple[int, int]:
    """(cache_size, wal_autocheckpoint) of a connection."""
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    (pages,) = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    return int(cache), int(pages)


def test_tuned_for_sending_sets_both_for_the_block_then_puts_them_back(ledger: Ledger) -> None:
    before = settings_of(ledger.conn)
    assert before != TUNED  # SQLite's defaults: 2 MB, 1,000 pages
    with ledger.tuned_for_sending():
        assert settings_of(ledger.conn) == TUNED
    assert settings_of(ledger.conn) == before
    with pytest.raises(RuntimeError), ledger.tuned_for_sending():
        raise RuntimeError("a send that failed")
    assert settings_of(ledger.conn) == before


def test_the_journal_connection_is_tuned_while_open(ledger: Ledger) -> None:
    async def run() -> tuple[int, int]:
        journal = ThreadedLedgerJournal(ledger.path)
        await journal.open()
        try:
            assert journal._executor is not None and journal._ledger is not None
            conn = journal._ledger.conn  # used on its own thread only: asked there
            future = journal._executor.submit(settings_of, conn)
            return await asyncio.wrap_future(future)
        finally:
            await journal.close()

    assert asyncio.run(run()) == TUNED


class _Watching:
    """An observer that reads the run's connection settings as the first message goes."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.seen: tuple[int, int] | None = None

    def started(self, total: int | None, server: ServerInfo) -> None:
        self.seen = settings_of(self.ledger.conn)

    def counted(self, total: int) -> None:
        pass

    def outcome(self, outcome: DeliveryOutcome) -> None:
        pass


def test_a_send_tunes_its_connection_while_sending_and_puts_it_back(ledger: Ledger) -> None:
    people = make_volunteers(5)
    add_volunteers(ledger, people)
    before = settings_of(ledger.conn)
    campaign = load_campaign("2020-03-breach")
    watching = _Watching(ledger)
    with Sink() as sink:
        request = SendRequest(
            campaign,
            tuple(people),
            options=SendOptions(backoff=0.01, backoff_max=0.05, timeout=5.0),
            compose_workers=0,
        )
        settings = Settings(ledger=ledger.path, smtp_url=sink.url)
        with ledger.lease("send", campaign.campaign_id) as holder:
            ledger.require_intact()
            summary = send_campaign(
                ledger, request, settings, holder=holder, observer=watching, handle_signals=False
            )
        assert len(sink.messages) == 5
    assert summary.counts == {"sent": 5}
    assert watching.seen == TUNED
    assert settings_of(ledger.conn) == before
    assert ledger.verify().ok
