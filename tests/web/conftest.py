"""A real console on 127.0.0.1 (uvicorn in a thread of the test process) over a real
ledger file holding the example roster."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, write_org_config
from console_client import Client, signed_in

from notifier.config import Settings, load_settings
from notifier.service import Workspace
from notifier.sink import Sink
from notifier.web.console import Console
from notifier.web.server import console_in_thread

EXAMPLE_ROSTER = REPO / "examples" / "volunteers.csv"


@pytest.fixture
def web_settings(tmp_path: Path) -> Settings:
    """The tests' organisation, its ledger in `tmp_path`, the example roster imported."""
    config = write_org_config(tmp_path)
    settings = load_settings(config, ledger=tmp_path / "notifier.db", env={})
    with Workspace(settings) as ws:
        with ws.import_roster(EXAMPLE_ROSTER) as imported:
            assert imported.summary.added == 194
    return settings


@pytest.fixture
def empty_settings(tmp_path: Path) -> Settings:
    """The tests' organisation, and a ledger with nobody in it yet."""
    config = write_org_config(tmp_path)
    settings = load_settings(config, ledger=tmp_path / "notifier.db", env={})
    Workspace(settings).ledger(create=True).close()
    return settings


@pytest.fixture
def console(web_settings: Settings) -> Iterator[Console]:
    with console_in_thread(web_settings) as running:
        yield running


@pytest.fixture
def client(console: Console) -> Client:
    """A browser signed in with the console's one-time address."""
    return signed_in(console.origin, console.address())


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real SMTP server (aiosmtpd) on a free 127.0.0.1 port, keeping what it receives."""
    with Sink() as server:
        yield server


@pytest.fixture
def sending_console(web_settings: Settings, sink: Sink) -> Iterator[Console]:
    """A console whose settings send into `sink`."""
    with console_in_thread(dataclasses.replace(web_settings, smtp_url=sink.url)) as running:
        yield running


@pytest.fixture
def sending_client(sending_console: Console) -> Client:
    return signed_in(sending_console.origin, sending_console.address())
