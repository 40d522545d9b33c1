"""What an earlier notice told each person, and what the roster has changed since.

A follow-up is written from the roster as it is now, and threaded under the notice it
follows. Both are only right while the roster still says what that notice was written
from: the same exposure and data held (else "as we told you" tells them something the
notice never said), and the same address (else the follow-up reaches someone else's
mailbox: two people's addresses swapped by mistake put "Dear Oliver Hall, Update..." in
Mia's). This module compares the two, from the chain alone:

- the address a notice went to is the recipient its `sent` event recorded;
- what it was written from is the value each field had at that event: the `old` side of
  the first `volunteer_updated` after it, else the value now.

So re-importing the right file after a wrong one clears everything the wrong one caused:
nothing is remembered but what the chain says the notice was, and the roster now.

`moved_addresses` says, for one import, which addresses it moved from one person to
another (a swap, or an address someone else had or was written to at), so the import can
warn naming both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from notifier.event import EventKind
from notifier.ledger import Ledger, address_key
from notifier.volunteer import TEXT_FIELDS, Volunteer

# What a notice says differently for someone: their exposure, and what was held on them.
WHAT_A_NOTICE_SAYS: tuple[str, ...] = ("exposure", "data_held")
_TRACKED = (*WHAT_A_NOTICE_SAYS, "email")


@dataclass(frozen=True)
class SinceNotice:
    """How one person's roster entry differs from what an earlier notice was sent from."""

    volunteer_id: str
    corrected: tuple[str, ...]  # of WHAT_A_NOTICE_SAYS, the fields now different
    address_told: str  # where the notice went ("" when the chain did not record it)
    address_now: str
    # Other people whose notice of the same campaign went to the address this person has
    # now: a follow-up to this person would reach their mailbox.
    address_was_told_to: tuple[str, ...] = ()

    @property
    def address_moved(self) -> bool:
        return bool(self.address_was_told_to)


@dataclass(frozen=True)
class AddressMove:
    """An address an import gave to `volunteer_id` that belonged to someone else before."""

    address: str
    volunteer_id: str  # who has it now
    previous: str  # who had it, or was written to at it
    how: str  # "held it" (until this import) or "was sent CAMPAIGN at it"


def since_notice(
    ledger: Ledger, followed: str, moved: Iterable[SinceNotice] | None = None
) -> Iterator[SinceNotice]:
    """What changed since `followed`'s notice reached each person, for everyone whose
    exposure, data held or address the roster changed after it (changed back counts as
    unchanged), in volunteer_id order: streamed from the chain, never held whole.

    `moved`: `moved_since_notice`'s answer (at least the changes in it that name other
    people), when the caller has it already.
    """
    first = _first_sent_seq(ledger, followed)
    if first is None:
        return iter(())
    known = moved_since_notice(ledger, followed) if moved is None else moved
    owners = {change.volunteer_id: change for change in known}
    return (
        owners.get(change.volunteer_id, change)
        for change, same_address in _changes(ledger, followed, first)
        if change.corrected or not same_address
    )


def moved_since_notice(ledger: Ledger, followed: str) -> list[SinceNotice]:
    """`since_notice` for the people whose address is not the one `followed`'s notice
    went to (few: one pass to find them), each with whom else that notice went to at
    the address they have now (a second pass, over the campaign's sends)."""
    first = _first_sent_seq(ledger, followed)
    if first is None:
        return []
    moved = [change for change, same in _changes(ledger, followed, first) if not same]
    others = _notified_at(ledger, followed, {c.volunteer_id: c.address_now for c in moved})
    return [_with_owners(c, others.get(c.volunteer_id, ())) for c in moved]


def _first_sent_seq(ledger: Ledger, followed: str) -> int | None:
    first = next(iter(ledger.events(campaign_id=followed, kinds=[EventKind.SENT])), None)
    return None if first is None else first.seq


def _changes(ledger: Ledger, followed: str, first_sent: int) -> Iterator[tuple[SinceNotice, bool]]:
    """Each person the roster updated (a tracked field) after `followed`'s first `sent`
    and who was sent it, compared with what their notice was written from; and whether
    their address now is the one it went to."""
    for found in ledger.updated_since_sent(followed, first_sent - 1):
        updates = [
            (seq, changes)
            for seq, data in found.updates
            if any(f in (changes := _changes_of(json.loads(data))) for f in _TRACKED)
        ]
        if not updates:
            continue
        volunteer = found.volunteer
        told = _values_at(found.sent_seq, updates)
        now = dict(zip(TEXT_FIELDS, volunteer.texts(), strict=True))
        corrected = tuple(f for f in WHAT_A_NOTICE_SAYS if f in told and told[f] != now[f])
        address_told = found.recipient or told.get("email", volunteer.email)
        change = SinceNotice(volunteer.volunteer_id, corrected, address_told, volunteer.email)
        yield change, _same_address(volunteer, address_told)


def moved_addresses(
    ledger: Ledger, import_seq: int, *, keep: int = 1000
) -> tuple[list[AddressMove], int]:
    """The addresses the import recorded at `import_seq` gave to someone other than who
    had them: held by another volunteer until this import (a swap), or an address a
    notice to another volunteer went to (an address reused). Updated people first, then
    added ones, each in the order the chain recorded them.

    Reads the import's address changes first: a first import (nobody gave an address up,
    nothing was ever sent) costs one look at the chain, however many people it added.
    Returns the first `keep` moves, to show, and how many there are.
    """
    new_address: dict[str, str] = {}  # volunteer_id -> the address this import gave them
    gave_up: dict[str, str] = {}  # address_key -> who held it until this import
    for event in ledger.events(kinds=[EventKind.VOLUNTEER_UPDATED], after_seq=import_seq):
        email = _changes_of(event.data).get("email")
        if event.volunteer_id is None or not isinstance(email, Mapping):
            continue
        new_address[event.volunteer_id] = str(email.get("new") or "")
        if email.get("old"):
            gave_up[address_key(str(email["old"]))] = event.volunteer_id
    ever_sent = next(iter(ledger.events(kinds=[EventKind.SENT])), None) is not None
    if gave_up or ever_sent:
        for event in ledger.events(kinds=[EventKind.VOLUNTEER_ADDED], after_seq=import_seq):
            address = str(event.data.get("email") or "")
            if event.volunteer_id is not None and (ever_sent or address_key(address) in gave_up):
                new_address[event.volunteer_id] = address
    moves: list[AddressMove] = []
    count = 0
    for vid, address in new_address.items():
        holder = gave_up.get(address_key(address), vid)
        if holder != vid:
            count += 1
            if len(moves) < keep:
                moves.append(AddressMove(address, vid, holder, "held it"))
    if ever_sent:
        for vid, others in _notified_at(ledger, None, new_address).items():
            first_notice = dict(reversed(others))  # each other person once, the first notice
            for other, campaign_id in first_notice.items():
                if gave_up.get(address_key(new_address[vid])) == other:
                    continue  # the same move, already counted
                count += 1
                if len(moves) < keep:
                    how = f"was sent {campaign_id} at it"
                    moves.append(AddressMove(new_address[vid], vid, other, how))
    return moves, count


def _values_at(sent_seq: int, updates: Iterable[tuple[int, Mapping[str, Any]]]) -> dict[str, str]:
    """The tracked fields as they were at `sent_seq`, for those an update changed after:
    the `old` side of the first such update."""
    told: dict[str, str] = {}
    for seq, changes in updates:
        if seq <= sent_seq:
            continue
        for name in _TRACKED:
            change = changes.get(name)
            if name not in told and isinstance(change, Mapping):
                told[name] = str(change.get("old") or "")
    return told


def _changes_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    changes = data.get("changes")
    return changes if isinstance(changes, Mapping) else {}


def _same_address(volunteer: Volunteer, address: str) -> bool:
    forms = {address_key(volunteer.email), address_key(volunteer.email_ascii or volunteer.email)}
    return address_key(address) in forms


def _notified_at(
    ledger: Ledger, campaign_id: str | None, addresses: Mapping[str, str]
) -> dict[str, list[tuple[str, str]]]:
    """volunteer_id -> (another volunteer, campaign) for each notice (of `campaign_id`, or
    of any campaign) that went to the address in `addresses` for them: one pass over the
    chain's sends, comparing in Python (SQLite's lower() folds ASCII only)."""
    wanted: dict[str, str] = {address_key(a): vid for vid, a in addresses.items() if a}
    found: dict[str, list[tuple[str, str]]] = {}
    if not wanted:
        return found
    for other, campaign, recipient in ledger.sent_recipients(campaign_id):
        vid = wanted.get(address_key(recipient))
        if vid is not None and other != vid and (other, campaign) not in found.get(vid, []):
            found.setdefault(vid, []).append((other, campaign))
    return found


def _with_owners(change: SinceNotice, others: Iterable[tuple[str, str]]) -> SinceNotice:
    return SinceNotice(
        change.volunteer_id,
        change.corrected,
        change.address_told,
        change.address_now,
        tuple(sorted({other for other, _campaign in others})),
    )
