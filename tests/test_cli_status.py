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
    reached = counts.get("sent", 0) + counts.get("delivered", 0)
    # Everyone the campaign is meant for, whom it reached, whom it still owes, and why.
    assert f"Audience now: 10; sent: {reached}; still owed: {10 - reached}" in out
    for reason in (
        "bounced: address does not exist (write to them)",
        "bounced for now: mailbox full or unavailable",
        "refused: our mail was blocked; the address is fine; needs action by the sender",
        "unknown: sending was interrupted; it may or may not have gone",
        "not sent yet",
    ):
        assert f"1 {reason}" in out
    # Not approved: every send it suggests comes after the approval it needs.
    assert out.index(f"notifier approve {C1}") < out.index(f"notifier resend {C1}")
    assert f"notifier resend {C1} --status bounced_soft,failed_temporary --yes" in out
    assert "notifier export unreachable" in out
    assert "1 blocked: our mail was refused; the addresses are fine" in out
    assert f"then: notifier resend {C1} --status blocked --yes" in out
