"""`notifier status` says in words what each state means, how many people the campaign
has not reached yet and which command reaches them; blocked is shown apart."""

from __future__ import annotations

from conftest import Notifier
from report_scenario import C1, build

from notifier.ledger import Ledger


def test_status_names_the_unreached_and_the_commands(notifier: Notifier) -> None:
    with Ledger(notifier.ledger_path) as led:
        build(led)
        led.db.execute(
            "UPDATE messages SET state = 'blocked' WHERE volunteer_id = 'v08' AND campaign_id = ?",
            [C1],
        )
        led.db.conn.commit()
        counts = led.state_counts(C1)
    result = notifier("status", C1)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "bounced: address does not exist" in out
    unreached = sum(
        counts.get(s, 0)
        for s in (
            "pending",
            "deferred",
            "failed_temporary",
            "failed_permanent",
            "suppressed",
            "bounced_soft",
            "blocked",
            "bounced_hard",
        )
    )
    assert f"{unreached} people not reached yet by {C1}:" in out
    assert f"notifier resend {C1} --status bounced_soft,failed_temporary --yes" in out
    assert "notifier export unreachable" in out
    assert "1 blocked: our mail was refused; the addresses are fine" in out
    assert f"notifier resend {C1} --status blocked --yes" in out
