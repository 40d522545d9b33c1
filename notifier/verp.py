"""VERP return paths with an authenticated token: `bounces+TOKEN@sender-domain`.

A bounce comes back to the envelope sender, so giving every message its own return
path tells us which message bounced without trusting anything in the bounce body. The
token is a lookup part (derived from the Message-ID) plus an HMAC of it under a key kept
outside the ledger, so a forged bounce (someone guessing addresses to get people
suppressed) can be recognised and refused.

Tokens use only lowercase letters and digits: some MTAs change the case of local parts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from notifier.config import Settings
from notifier.errors import ConfigError

VERP_PREFIX = "bounces"
LOOKUP_CHARS = 16
MAC_CHARS = 16
KEY_BYTES = 32


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
    """The token for one message: stable for the same key and Message-ID."""
    lookup = base32(hashlib.sha256(message_id.encode("utf-8")).digest())[:LOOKUP_CHARS]
    return lookup + _mac(key, lookup)


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


# --- the key: where it lives, and when it is made ------------------------------------


def key_path_for(ledger_path: Path) -> Path:
    """Default key file: beside the ledger, never inside it."""
    return ledger_path.with_name(ledger_path.name + ".key")


def key_file(settings: Settings, ledger_path: Path | None = None) -> Path:
    """Where the VERP key is: the configured secret file (`NOTIFIER_SECRET_FILE`, or
    `secret_file` in notifier.toml), else beside the ledger (`notifier.db.key`)."""
    return settings.secret_file or key_path_for(ledger_path or settings.ledger)


def sending_key(settings: Settings, ledger_path: Path | None = None) -> bytes:
    """The key to make tokens with when sending: created (mode 0600) on first use."""
    return load_or_create_key(key_file(settings, ledger_path))


def existing_key(settings: Settings, ledger_path: Path | None = None) -> bytes:
    """The key the tokens were made with, to authenticate bounces: never created here (a
    new key would match nothing)."""
    path = key_file(settings, ledger_path)
    if not path.exists():
        raise ConfigError(
            "no VERP key: without it no bounce can be authenticated",
            file=path,
            hint="the key is created when the first notice is sent; restore it from "
            "backup, or point NOTIFIER_SECRET_FILE at it",
        )
    return load_or_create_key(path)


def load_or_create_key(path: Path) -> bytes:
    """Read the VERP key, creating it (mode 0600) on first use."""
    if path.exists():
        data = path.read_bytes().strip()
        try:
            key = bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                "the VERP key file is not hex",
                file=path,
                hint="restore it from backup; without it, bounces cannot be authenticated",
            ) from exc
        if len(key) < 16:
            raise ConfigError("the VERP key is too short (under 16 bytes)", file=path)
        return key
    key = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    return key
