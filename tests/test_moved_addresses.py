"""Nobody gets someone else's notice: addresses swapped by a re-import, end to end.

The first notice goes out; then a roster whose email column was sorted on its own swaps
Oliver's and Mia's addresses. The import warns naming both; `check`, `approve` and
`send` of the update refuse (it would put "Dear Oliver Hall, Update..." in Mia's mailbox,
threaded under her own notice's thread); importing the right roster again clears it, and
so does an approval that confirms the addresses really moved.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Notifier, write_org_config

from notifier.sink import Sink

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
FAST = ("--max-attempts", "1", "--backoff", "0", "--timeout", "5")
HEADER = "volunteer_id,email,family_name,given_name,locale,exposure,data_held"
RIGHT = [
    "V001,oliver@example.com,Hall,Oliver,en,screened,id_documents",
    "V002,mia@example.net,Clark,Mia,en,screened,health_questionnaire",
    "V003,sato@example.jp,佐藤,花子,ja,database_only,",
]
# The email column sorted on its own: Oliver's and Mia's addresses swapped.
SWAPPED = [
    "V001,mia@example.net,Hall,Oliver,en,screened,id_documents",
    "V002,oliver@example.com,Clark,Mia,en,screened,health_questionnaire",
    RIGHT[2],
]


def roster_file(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def first_sent(notifier: Notifier, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The right roster imported and the first notice sent: address -> its Message-ID."""
    write_org_config(notifier.ledger_path.parent)
    imported = notifier("roster", "import", str(roster_file(tmp_path, "right.csv", RIGHT)))
    assert imported.exit_code == 0, imported.output
    for campaign in (FIRST, UPDATE):
        approved = notifier("approve", campaign, "--by", "Jane Doe, DPO")
        assert approved.exit_code == 0, approved.output
    with Sink() as sink:
        sent = notifier("send", FIRST, "--yes", "--smtp", sink.url, *FAST)
        assert sent.exit_code == 0, sent.output
        yield {m.rcpt_tos[0]: parsed(m.data)["Message-ID"] for m in sink.messages}


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def send_update(notifier: Notifier) -> dict[str, email.message.EmailMessage]:
    """Send the update into a sink: what each address received."""
    with Sink() as sink:
        sent = notifier("send", UPDATE, "--yes", "--smtp", sink.url, *FAST)
        assert sent.exit_code == 0, sent.output
        return {m.rcpt_tos[0]: parsed(m.data) for m in sink.messages}


def plain_text(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_a_swap_warns_then_check_approve_and_send_refuse_until_undone(
    notifier: Notifier, tmp_path: Path, first_sent: dict[str, str]
) -> None:
    swap = notifier("roster", "import", str(roster_file(tmp_path, "swapped.csv", SWAPPED)))
    assert swap.exit_code == 0, swap.output
    assert (
        "Warning: the address mia@example.net went from volunteer V002 to volunteer V001"
        in swap.stdout
    )
    assert (
        "Warning: the address oliver@example.com went from volunteer V001 to volunteer V002"
        in swap.stdout
    )

    checked = notifier("check", UPDATE)
    assert checked.exit_code == 1, checked.output
    for now, other in (("V001", "V002"), ("V002", "V001")):
        said = (
            f"volunteer {now} now has the address 2020-03-breach was sent to for volunteer {other}"
        )
        assert said in checked.stdout, checked.stdout
    assert "--confirm-moved-addresses" in checked.stdout

    with Sink() as sink:
        # Approved before the swap: the send checks again against the roster now.
        refused = notifier("send", UPDATE, "--yes", "--smtp", sink.url, *FAST)
        assert refused.exit_code == 1, refused.output
        assert sink.messages == []
    again = notifier("approve", UPDATE, "--by", "Jane Doe, DPO")
    assert again.exit_code == 1, again.output
    assert "nothing was approved" in again.output

    undo = notifier("roster", "import", str(roster_file(tmp_path, "right-again.csv", RIGHT)))
    assert undo.exit_code == 0, undo.output
    assert notifier("check", UPDATE).exit_code == 0
    assert notifier("approve", UPDATE, "--by", "Jane Doe, DPO").exit_code == 0
    received = send_update(notifier)
    assert "Dear Mia Clark" in plain_text(received["mia@example.net"])
    for address, message in received.items():
        assert message["In-Reply-To"] == first_sent[address]


def test_an_approval_confirming_the_moved_addresses_lets_the_update_go(
    notifier: Notifier, tmp_path: Path, first_sent: dict[str, str]
) -> None:
    swap = notifier("roster", "import", str(roster_file(tmp_path, "swapped.csv", SWAPPED)))
    assert swap.exit_code == 0, swap.output
    confirmed = notifier("approve", UPDATE, "--by", "Jane Doe, DPO", "--confirm-moved-addresses")
    assert confirmed.exit_code == 0, confirmed.output
    assert "Confirmed: V001's address mia@example.net" in confirmed.stdout
    assert "Confirmed: V002's address oliver@example.com" in confirmed.stdout
    assert notifier("check", UPDATE).exit_code == 0  # the approval's confirmation holds

    received = send_update(notifier)
    assert "Dear Oliver Hall" in plain_text(received["mia@example.net"])


def test_an_address_reused_after_its_owner_moved_on_is_named_too(
    notifier: Notifier, tmp_path: Path, first_sent: dict[str, str]
) -> None:
    """Mia gives a new address; a later roster gives her old one to Oliver. Nobody holds
    it at that import, but her first notice went there: the import warns, check names
    both."""
    moved_on = [RIGHT[0], RIGHT[1].replace("mia@example.net", "mia.clark@example.org"), RIGHT[2]]
    first = notifier("roster", "import", str(roster_file(tmp_path, "mia.csv", moved_on)))
    assert first.exit_code == 0, first.output
    assert "Warning: the address" not in first.stdout  # a new address of her own
    reused = [moved_on[0].replace("oliver@example.com", "mia@example.net"), *moved_on[1:]]
    second = notifier("roster", "import", str(roster_file(tmp_path, "reused.csv", reused)))
    assert second.exit_code == 0, second.output
    assert (
        "Warning: the address mia@example.net went from volunteer V002 to volunteer V001"
        " (V002 was sent 2020-03-breach at it)."
    ) in second.stdout
    checked = notifier("check", UPDATE)
    assert checked.exit_code == 1
    said = "volunteer V001 now has the address 2020-03-breach was sent to for volunteer V002"
    assert said in checked.stdout
