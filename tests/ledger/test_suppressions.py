"""The suppression list: one rule for comparing addresses, whichever way it is asked."""

from __future__ import annotations

from smtp_helpers import suppress

from notifier.ledger import Ledger, Suppression, address_key


def test_address_key_ignores_case_in_any_script() -> None:
    assert address_key("Alice@Example.ORG") == "alice@example.org"
    assert address_key("ÉLODIE@例え.JP") == address_key("élodie@例え.jp")


def test_suppressed_whatever_the_case(ledger: Ledger) -> None:
    assert not ledger.suppressed("alice@example.org")
    assert ledger.suppressions() == []
    added = suppress(ledger, "Alice@Example.org", "bounced_hard 5.1.1", event_seq=7)
    suppress(ledger, "ÉLODIE@example.fr", "asked by phone", event_seq=None)
    assert added == Suppression("Alice@Example.org", "bounced_hard 5.1.1", added.at, 7)
    assert ledger.suppressions()[0] == added
    assert ledger.suppressed("alice@EXAMPLE.org")
    assert ledger.suppressed("élodie@example.fr")  # beyond ASCII too
    assert not ledger.suppressed("bob@example.org")
    assert ledger.suppressed_addresses() == {"alice@example.org", "élodie@example.fr"}
    assert {s.key for s in ledger.suppressions()} == ledger.suppressed_addresses()
