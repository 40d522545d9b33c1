"""VERP tokens and addresses, and the one policy for the key they are made with."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier import verp
from notifier.config import Settings, load_settings
from notifier.errors import ConfigError

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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=70))
def test_verp_base32_matches_the_standard_library(data: bytes) -> None:
    expected = base64.b32encode(data).decode("ascii").rstrip("=").lower()
    assert verp.base32(data) == expected


# --- the key ---------------------------------------------------------------------------


def test_verp_key_is_created_beside_the_ledger_owner_only(tmp_path: Path) -> None:
    settings = Settings(ledger=tmp_path / "notifier.db")
    path = verp.key_file(settings)
    assert path == tmp_path / "notifier.db.key"
    with pytest.raises(ConfigError, match="no VERP key"):
        verp.existing_key(settings)  # bounces never create it: a new key matches nothing
    key = verp.sending_key(settings)
    assert len(key) == verp.KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verp.sending_key(settings) == key  # made once, then read
    assert verp.existing_key(settings) == key


def test_verp_key_follows_the_ledger_passed_or_the_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(ledger=tmp_path / "notifier.db")
    elsewhere = tmp_path / "other" / "campaign.db"
    assert verp.key_file(settings, elsewhere) == elsewhere.with_name("campaign.db.key")
    secret = tmp_path / "secrets" / "verp.key"
    configured = Settings(ledger=tmp_path / "notifier.db", secret_file=secret)
    assert verp.key_file(configured, elsewhere) == secret
    key = verp.sending_key(configured, elsewhere)
    assert secret.read_text(encoding="ascii").strip() == key.hex()
    assert not (tmp_path / "notifier.db.key").exists()
    monkeypatch.chdir(tmp_path)  # no notifier.toml here
    from_env = load_settings(env={"NOTIFIER_SECRET_FILE": str(secret)}, ledger=elsewhere)
    assert verp.existing_key(from_env) == key


def test_verp_unusable_key_files_are_clean_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("not hex\n", encoding="ascii")
    with pytest.raises(ConfigError, match="not hex"):
        verp.load_or_create_key(path)
    path.write_text("00ff\n", encoding="ascii")
    with pytest.raises(ConfigError, match="too short"):
        verp.load_or_create_key(path)
