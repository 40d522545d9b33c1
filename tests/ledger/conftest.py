"""Shared by the ledger's verification tests: a small ledger with a campaign sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from smtp_helpers import add_volunteers, make_volunteers, send, suppress

from notifier.campaign import load_campaign
from notifier.ledger import Ledger
from notifier.sink import Sink


@pytest.fixture(scope="module")
def sent_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty volunteers, one suppressed, the first notice sent to the rest (built once a
    module; tests copy the file before they change it)."""
    path = tmp_path_factory.mktemp("sent") / "notifier.db"
    people = make_volunteers(20)
    with Ledger(path) as ledger:
        add_volunteers(ledger, people)
        suppress(ledger, people[5].email, "hard bounce")
        with Sink() as sink:
            send(ledger, load_campaign("2020-03-breach"), people, sink.url)
    return path
