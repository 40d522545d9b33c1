"""The ledger's one secret, and the keys derived from it for each purpose.

One key file per ledger (`LEDGER.key` beside it, mode 0600, or the file named by
`NOTIFIER_SECRET_FILE` / `secret_file`) holds 32 random bytes. Nothing uses them directly:
each purpose gets its own key, HMAC-SHA256(secret, "notifier/" + purpose), so a key that
leaks through one use (a VERP token is on every envelope) says nothing about another:

- `chain`: event hashes are keyed, so rewriting history and recomputing the hashes
  needs the secret, not just write access to the file;
- `verp`: the HMAC in return-path tokens, so a forged bounce is recognised;
- `message-id`: Message-IDs are a keyed hash of (campaign, volunteer), unguessable to
  anyone who only knows roster ids.

The ledger stores the secret's fingerprint (itself a derived key's hash, so it reveals
nothing). The secret is created only together with a new ledger: a ledger that already
holds events and finds its key file missing, or finds a key with another fingerprint,
stops with one line saying to restore the file from backup. Making a new key silently
would turn every genuine bounce of earlier campaigns into a "forgery".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from notifier.errors import KeyFileError

KEY_BYTES = 32
_MIN_KEY_BYTES = 16


class Purpose(StrEnum):
    CHAIN = "chain"
    VERP = "verp"
    MESSAGE_ID = "message-id"
    FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class LedgerSecret:
    """The secret read from its key file; never printed (repr hides the bytes)."""

    path: Path
    key: bytes = field(repr=False)

    def derive(self, purpose: Purpose) -> bytes:
        return hmac.new(self.key, f"notifier/{purpose}".encode(), hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        """Names this secret in the ledger and in messages; reveals nothing of it."""
        return hashlib.sha256(self.derive(Purpose.FINGERPRINT)).hexdigest()[:32]


def key_path_for(ledger_path: Path) -> Path:
    """Default key file: beside the ledger, never inside it (a copy of one is not both)."""
    return ledger_path.with_name(ledger_path.name + ".key")


def read_secret(path: Path) -> LedgerSecret:
    """Read an existing key file; a missing or damaged one is a KeyFileError (exit 2)."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise KeyFileError(
            "the ledger's key file is missing",
            file=path,
            hint="restore it from backup (it was made with the ledger); without it the"
            " ledger's history and bounces cannot be checked, so nothing is sent",
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file ({exc.strerror})", file=path) from exc
    try:
        key = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(
            "the key file is not hex", file=path, hint="restore it from backup"
        ) from exc
    if len(key) < _MIN_KEY_BYTES:
        raise KeyFileError(
            f"the key is too short (under {_MIN_KEY_BYTES} bytes)",
            file=path,
            hint="restore it from backup",
        )
    return LedgerSecret(path, key)


def create_secret(path: Path) -> LedgerSecret:
    """Make a new secret (mode 0600). Refuses to overwrite a file that is already there."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError too: a file where the folder should be
        raise KeyFileError(
            f"cannot create the key file's folder ({exc.strerror})", file=path
        ) from exc
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(
            "a key file is already there", file=path, hint="use it, or move it away first"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create the key file ({exc.strerror})", file=path) from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return LedgerSecret(path, key)


def secret_for_ledger(path: Path, *, fingerprint: str | None, ledger_is_new: bool) -> LedgerSecret:
    """The secret of a ledger whose stored fingerprint is `fingerprint` (None: not yet set).

    A new ledger (no events yet) gets a new secret when its key file is not there. An
    existing one must find exactly the key it was made with.
    """
    if not path.exists() and ledger_is_new:
        return create_secret(path)
    secret = read_secret(path)
    if fingerprint is not None and not hmac.compare_digest(secret.fingerprint, fingerprint):
        raise KeyFileError(
            "this key file does not belong to this ledger (its fingerprint differs)",
            file=path,
            hint="restore the ledger's own key file from backup; nothing was sent",
        )
    return secret


# git answers in milliseconds; a hung one (a network file system) must not hold a command.
_GIT_TIMEOUT = 10.0


def git_would_commit(path: Path) -> Path | None:
    """The git work tree `path` is in, if git does not ignore it (`git add -A` would commit
    it, or it is tracked already); None when it is ignored, outside any work tree, or git
    is not installed or cannot tell."""
    git = shutil.which("git")
    if git is None:
        return None
    folder = path.resolve().parent
    try:
        top = subprocess.run(
            [git, "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
        if top.returncode != 0:
            return None  # not in a work tree (or one git will not read)
        ignored = subprocess.run(
            [git, "-C", str(folder), "check-ignore", "-q", "--", path.name],
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # check-ignore: 0 ignored, 1 not ignored (a tracked file is never "ignored"), 128 error.
    return Path(top.stdout.strip()) if ignored.returncode == 1 else None


def key_file_warning(path: Path) -> str | None:
    """One line for a key file git would commit (None if there is nothing to say): a key
    in a repository's history is a key anyone with a clone has."""
    if not path.is_file():
        return None
    tree = git_would_commit(path)
    if tree is None:
        return None
    return (
        f"the ledger's key file {path} is inside the git work tree {tree} and git does not"
        f" ignore it (`git add -A` would commit it): add {path.name} to .gitignore, or keep"
        " the ledger and its key outside the repository"
    )
