"""VERP tokens and addresses, and the one policy for the key they are made with."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from conftest import fact
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier import verp
from notifier.config import load_settings
from notifier.errors import KeyFileError
from notifier.ledger import Ledger

KEY = bytes(range(32))


def test_verp_token_is_stable_lowercase_and_authentic() -> None:
    token = verp.make_token(KEY, "<abc@example.org>")
    assert token == verp.make_token(KEY, "<abc@example.org>")
    assert token != verp.make_token(KEY, "<abd@example.org>")
    assert len(token) == verp.LOOKUP_CHARS + verp.MAC_CHARS
    assert token.isalnum() and token == token.lower()
    assert verp.token_is_authentic(KEY, token)
    assert verp.token_is_authentic(KEY, token.upper())  # some MTAs change the case


def test_verp_forged_or_damaged_tokens_are_not_authentic() -> None:
    token = verp.make_token(KEY, "<abc@example.org>")
    other_key = bytes(32)
    assert not verp.token_is_authentic(other_key, token)
    flipped = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert not verp.token_is_authentic(KEY, flipped)
    for bad in ("", token[:-1], token + "a", token[:-1] + "-"):
        assert not verp.token_is_authentic(KEY, bad)


def test_verp_address_round_trip() -> None:
    token = verp.make_token(KEY, "<abc@example.org>")
    address = verp.verp_address(token, "example.org")
    assert address == f"bounces+{token}@example.org"
    assert verp.token_from_address(address) == token
    assert verp.token_from_address(f"<BOUNCES+{token.upper()}@Example.org>") == token
    for other in ("someone@example.org", "bounces@example.org", "other+x@example.org"):
        assert verp.token_from_address(other) is None


def test_numbered_tokens_are_authentic_and_sort_in_number_order() -> None:
    numbers = [0, 7, 10, 99, 100, 123_456_789, 10**verp.NUMBER_DIGITS - 1]
    tokens = [verp.numbered_token(KEY, n) for n in numbers]
    assert sorted(tokens) == tokens  # the index of tokens grows at its end
    for number, token in zip(numbers, tokens, strict=True):
        assert len(token) == verp.LOOKUP_CHARS + verp.MAC_CHARS
        assert token.isalnum() and token == token.lower()
        assert verp.token_is_authentic(KEY, token)
        assert not verp.token_is_authentic(bytes(32), token)
        assert verp.token_number(token) == number
        assert verp.NUMBERED_RANGE[0] <= token < verp.NUMBERED_RANGE[1]
    for bad in (-1, 10**verp.NUMBER_DIGITS):
        with pytest.raises(ValueError, match="out of range"):
            verp.numbered_token(KEY, bad)


def test_a_guessed_number_is_not_an_authentic_token() -> None:
    """Numbers are guessable; the HMAC is not: the next number with a MAC copied from a
    token someone received, or with any other MAC, is refused."""
    received = verp.numbered_token(KEY, 1_000)
    lookup = received[: verp.LOOKUP_CHARS]
    guessed = lookup[:-1] + "1" + received[verp.LOOKUP_CHARS :]
    assert verp.token_number(guessed) == 1_001
    assert not verp.token_is_authentic(KEY, guessed)
    assert verp.token_is_authentic(KEY, verp.numbered_token(KEY, 1_001))


def test_token_numbers_start_at_a_keyed_offset() -> None:
    starts = {verp.first_number(bytes([n]) * 32) for n in range(20)}
    assert len(starts) == 20  # not a count from zero that tells how many were sent
    assert all(0 <= s < 10 ** (verp.NUMBER_DIGITS - 1) for s in starts)
    assert verp.first_number(KEY) == verp.first_number(KEY)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_hashed_tokens_are_never_mistaken_for_numbered_ones(message_id: str) -> None:
    """Tokens made before (a hash of the Message-ID) share the ledger's index with the
    numbered ones: no hashed token falls among them or reads as a number."""
    token = verp.make_token(KEY, message_id)
    assert verp.token_number(token) is None
    assert not verp.NUMBERED_RANGE[0] <= token < verp.NUMBERED_RANGE[1]
    assert verp.token_is_authentic(KEY, token)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=70))
def test_verp_base32_matches_the_standard_library(data: bytes) -> None:
    expected = base64.b32encode(data).decode("ascii").rstrip("=").lower()
    assert verp.base32(data) == expected


# --- the key: one key file per ledger (notifier.secret), the VERP key derived from it ------


def test_verp_key_is_derived_from_the_key_made_with_the_ledger(tmp_path: Path) -> None:
    with Ledger(tmp_path / "notifier.db") as led:
        key = led.verp_key()
    path = tmp_path / "notifier.db.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key != bytes.fromhex(path.read_text(encoding="ascii"))  # derived, not the raw key
    with Ledger(tmp_path / "notifier.db") as led:
        assert led.verp_key() == key  # made once, then read


def test_verp_key_follows_the_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secrets" / "ledger.key"
    monkeypatch.chdir(tmp_path)  # no notifier.toml here
    settings = load_settings(env={"NOTIFIER_SECRET_FILE": str(secret)}, ledger=tmp_path / "x.db")
    assert settings.secret_file == secret
    with Ledger(settings.ledger, key_file=settings.secret_file) as led:
        key = led.verp_key()
    assert secret.exists() and not (tmp_path / "x.db.key").exists()
    with Ledger(settings.ledger, key_file=secret) as led:
        assert led.verp_key() == key


def test_a_missing_key_is_never_replaced(tmp_path: Path) -> None:
    with Ledger(tmp_path / "notifier.db") as led:
        led.record([fact("test")])
    (tmp_path / "notifier.db.key").unlink()
    with Ledger(tmp_path / "notifier.db") as led, pytest.raises(KeyFileError, match="restore"):
        led.verp_key()  # bounces are never judged with a new key: it would match nothing
    assert not (tmp_path / "notifier.db.key").exists()
