"""The ledger's one secret: created once, never replaced silently, one key per purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.errors import ExitCode, KeyFileError
from notifier.secret import (
    Purpose,
    create_secret,
    key_path_for,
    read_secret,
    secret_for_ledger,
)


def test_created_private_and_read_back(tmp_path: Path) -> None:
    path = key_path_for(tmp_path / "notifier.db")
    assert path.name == "notifier.db.key"
    made = create_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret(path) == made
    assert made.key.hex() not in repr(made)


def test_purposes_get_different_keys(tmp_path: Path) -> None:
    secret = create_secret(tmp_path / "k")
    keys = {secret.derive(p) for p in Purpose}
    assert len(keys) == len(Purpose)
    assert secret.key not in keys
    assert secret.fingerprint not in {k.hex()[:32] for k in keys}


def test_fingerprints_differ_between_secrets(tmp_path: Path) -> None:
    assert create_secret(tmp_path / "a").fingerprint != create_secret(tmp_path / "b").fingerprint


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = create_secret(path)
    with pytest.raises(KeyFileError, match="already there"):
        create_secret(path)
    assert read_secret(path) == first


def test_new_ledger_gets_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "k"
    secret = secret_for_ledger(path, fingerprint=None, ledger_is_new=True)
    assert read_secret(path) == secret


def test_missing_key_of_an_existing_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    with pytest.raises(KeyFileError, match="missing") as caught:
        secret_for_ledger(path, fingerprint="ab" * 16, ledger_is_new=False)
    assert caught.value.exit_code == ExitCode.UNUSABLE
    assert "restore it from backup" in str(caught.value)
    assert not path.exists()  # nothing made in its place


def test_foreign_key_is_refused(tmp_path: Path) -> None:
    mine = create_secret(tmp_path / "mine")
    other = create_secret(tmp_path / "other")
    assert secret_for_ledger(mine.path, fingerprint=mine.fingerprint, ledger_is_new=False) == mine
    with pytest.raises(KeyFileError, match="does not belong to this ledger"):
        secret_for_ledger(other.path, fingerprint=mine.fingerprint, ledger_is_new=False)


@pytest.mark.parametrize(("content", "problem"), [(b"zz\n", "not hex"), (b"abcd\n", "too short")])
def test_damaged_key_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=problem):
        read_secret(path)
