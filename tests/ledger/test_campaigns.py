"""Campaigns in the ledger: registered once, when first sent."""

from __future__ import annotations

import hashlib
import logging

import pytest

from notifier.ledger import CampaignRecord, Ledger


def test_campaign_is_registered_once_with_an_event(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    assert ledger.campaign("c") is None and not ledger.campaign_is_registered("c")
    assert ledger.register_campaign(
        "c", title="First", follows=None, definition={"b": 1, "a": [2]}, templates_sha256="ab"
    )
    record = ledger.campaign("c")
    assert record is not None
    assert record == CampaignRecord("c", "First", None, "ab", record.registered_at)
    assert ledger.campaign_is_registered("c")
    (event,) = ledger.events(campaign_id="c")
    assert (event.kind, event.at) == ("campaign_registered", record.registered_at)
    # Everything the row holds is in the event: an edit of the row is found by verify.
    definition = hashlib.sha256(b'{"a":[2],"b":1}').hexdigest()
    assert event.data == {
        "title": "First",
        "follows": None,
        "templates_sha256": "ab",
        "definition_sha256": definition,
    }

    with caplog.at_level(logging.WARNING):
        again = ledger.register_campaign(
            "c", title="Renamed", follows=None, definition={}, templates_sha256="cd"
        )
    assert not again
    assert "templates changed" in caplog.text
    assert ledger.campaign("c") == record  # the first registration stands
    assert ledger.count("events") == 1


def test_follow_up_names_the_campaign_it_follows(ledger: Ledger) -> None:
    ledger.register_campaign("first", title="1", follows=None, definition={}, templates_sha256="")
    ledger.register_campaign(
        "update", title="2", follows="first", definition={}, templates_sha256=""
    )
    update = ledger.campaign("update")
    assert update is not None and update.follows == "first"
    assert update.templates_sha256 is None  # nothing recorded reads as None
