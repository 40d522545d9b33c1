"""VERP return paths with an authenticated token: `bounces+TOKEN@sender-domain`.

A bounce comes back to the envelope sender, so giving every message its own return
path tells us which message bounced without trusting anything in the bounce body. The
token is a lookup part plus an HMAC of it under the ledger's VERP key (`Ledger.verp_key`,
derived from the key file kept outside the ledger: notifier.secret), so a forged bounce
(someone guessing addresses to get people suppressed) can be recognised and refused.

The lookup part is a number the ledger issues in the order it queues messages
(`numbered_token`): the ledger's index of tokens then grows at one end as a send queues
its messages, instead of taking each new token at a random place (on a ledger of
millions that was a page written, and checkpointed again, for nearly every message).
The numbers start at a keyed offset, so a token does not tell how many notices a ledger
has sent. Tokens made before were a hash of the Message-ID (`make_token`); they are kept
and still match, and both kinds share one index.

Tokens use only lowercase letters and digits: some MTAs change the case of local parts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

VERP_PREFIX = "bounces"
LOOKUP_CHARS = 16
MAC_CHARS = 16
# A numbered token's lookup part: this mark, then the number in NUMBER_DIGITS decimal
# digits. Base32 has no "1", so no hashed lookup part (make_token) starts with it, and
# the numbered ones sort together, in number order, between "1" and "2".
NUMBERED_MARK = "1"
NUMBER_DIGITS: int = LOOKUP_CHARS - len(NUMBERED_MARK)
NUMBERED_RANGE = (NUMBERED_MARK, chr(ord(NUMBERED_MARK) + 1))
_FIRST_NUMBER_SPAN: int = 10 ** (NUMBER_DIGITS - 1)  # a tenth of the room: 9e14 tokens left


# Base32 (RFC 4648 alphabet, lowercase, unpadded) without base64.b32encode, which is
# pure Python in 3.11 (about 4 µs a SHA-256 digest, paid for every message's token and
# Message-ID):
# a few big-integer steps move each 5-bit group into a byte of its own, then one
# translate names them.
_B32_NAMES = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[i % 32] for i in range(256))


@functools.lru_cache(maxsize=64)  # one entry per data length: SHA-256 in practice
def _b32_steps(groups: int) -> tuple[tuple[int, int], ...]:
    """(mask, shift) steps spreading `groups` 5-bit groups of an integer to 8 bits apart.

    Group i (from the least significant end) must move left by 3 * i bits: one step per
    bit of i, the highest first, moves the groups with that bit set; nothing overlaps.
    """
    steps = []
    for bit in reversed(range(max(groups - 1, 1).bit_length())):
        mask = 0
        for i in range(groups):
            if i >> bit & 1:
                done = (i >> (bit + 1)) << (bit + 1)  # the part of i already moved
                mask |= 31 << (8 * done + 5 * (i - done))
        steps.append((mask, 3 << bit))
    return tuple(steps)


def base32(data: bytes) -> str:
    """base64.b32encode(data).decode().rstrip("=").lower(), the same string."""
    bits = len(data) * 8
    chars = -(-bits // 5)
    number = int.from_bytes(data, "big") << (chars * 5 - bits)  # padding adds zero bits
    for mask, shift in _b32_steps(chars):
        moving = number & mask
        number = (number ^ moving) | (moving << shift)
    return number.to_bytes(chars, "big").translate(_B32_NAMES).decode("ascii")


def _mac(key: bytes, lookup: str) -> str:
    return base32(hmac.new(key, lookup.encode("ascii"), hashlib.sha256).digest())[:MAC_CHARS]


def make_token(key: bytes, message_id: str) -> str:
    """A token of the earlier kind: a hash of the Message-ID. The ledger still matches
    these (its messages keep the tokens they were sent with); new messages are given
    numbered ones (`numbered_token`)."""
    lookup = base32(hashlib.sha256(message_id.encode("utf-8")).digest())[:LOOKUP_CHARS]
    return lookup + _mac(key, lookup)


def first_number(key: bytes) -> int:
    """Where a ledger's token numbers start: a keyed offset, so the number in a token
    someone receives says nothing about how many were sent before it."""
    digest = hmac.new(key, b"notifier verp first number", hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % _FIRST_NUMBER_SPAN


def numbered_token(key: bytes, number: int) -> str:
    """The token with lookup part number `number` (the ledger issues each number once)."""
    if not 0 <= number < 10**NUMBER_DIGITS:
        raise ValueError(f"VERP token number out of range: {number}")
    lookup = f"{NUMBERED_MARK}{number:0{NUMBER_DIGITS}d}"
    return lookup + _mac(key, lookup)


def token_number(token: str) -> int | None:
    """The number of a numbered token (authentic or not), None for any other string."""
    lookup = token[:LOOKUP_CHARS]
    if len(token) != LOOKUP_CHARS + MAC_CHARS or not lookup.startswith(NUMBERED_MARK):
        return None
    digits = lookup[len(NUMBERED_MARK) :]
    return int(digits) if digits.isascii() and digits.isdigit() else None


def token_is_authentic(key: bytes, token: str) -> bool:
    """True when the token's HMAC part was made with this key."""
    token = token.lower()
    if len(token) != LOOKUP_CHARS + MAC_CHARS or not token.isalnum():
        return False
    lookup, mac = token[:LOOKUP_CHARS], token[LOOKUP_CHARS:]
    return hmac.compare_digest(mac, _mac(key, lookup))


def verp_address(token: str, domain: str) -> str:
    return f"{VERP_PREFIX}+{token}@{domain}"


def token_from_address(address: str) -> str | None:
    """The token in a `bounces+TOKEN@domain` address, or None if it is not one of ours."""
    address = address.strip().strip("<>").strip()
    local, _, _domain = address.rpartition("@")
    prefix, plus, token = local.partition("+")
    if not plus or prefix.lower() != VERP_PREFIX or not token:
        return None
    return token.lower()
