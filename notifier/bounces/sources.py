"""Where reports are read from: Maildirs, mboxes, `.eml` files and folders, IMAP.

Each source yields (label, raw bytes): the label says where a report was read (a file,
an mbox message, an IMAP UID), the bytes go to `notifier.bounces.dsn` unchanged.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import mailbox
import os
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from notifier.config import IMAP_PASSWORD_ENV, imap_password
from notifier.errors import BounceError
from notifier.smtp.target import is_certificate_error

log = logging.getLogger(__name__)

MAX_IMAP_MESSAGES = 100_000
IMAP_CA_HINT = (
    "the server's certificate is not trusted: if it comes from your own authority, name "
    "its certificate in [imap] ca_file (or NOTIFIER_IMAP_CA_FILE)"
)


def read_sources(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(source label, raw bytes) for every report in Maildirs, mboxes, .eml files, folders.

    Every path is checked before any is read, so a typo fails the run before it starts.
    """
    for path in paths:
        if not path.exists():
            raise BounceError(
                "no such file or folder",
                file=path,
                hint="give a Maildir, an mbox file, .eml files or a folder of them",
            )
        if not os.access(path, os.R_OK):
            raise BounceError("cannot read this (permission denied)", file=path)
    return _iter_sources(paths)


def _iter_sources(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        if path.is_dir():
            if (path / "cur").is_dir() or (path / "new").is_dir():
                files = [f for sub in ("cur", "new") for f in _files_in(path / sub)]
            else:
                files = [f for f in _files_in(path) if f.suffix.lower() == ".eml"]
            for file in files:
                yield str(file), _read(file)
        elif _is_mbox(path):
            yield from _read_mbox(path)
        else:
            yield str(path), _read(path)


def _files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    # Maildir readers skip dot files (Dovecot's index files, editors' droppings).
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BounceError(f"cannot read this ({exc.strerror or exc})", file=path) from exc


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() == ".eml":
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError as exc:
        raise BounceError(f"cannot read this ({exc.strerror or exc})", file=path) from exc


def _read_mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.keys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
    except OSError as exc:
        raise BounceError(f"cannot read this mbox ({exc})", file=path) from exc
    finally:
        box.close()


def read_imap(
    url: str, password: str | None = None, *, ca_file: Path | None = None
) -> Iterator[tuple[str, bytes]]:
    """Reports in an IMAP folder: `imaps://user@host[:port]/FOLDER` (or imap:// + STARTTLS).

    The password comes from NOTIFIER_IMAP_PASSWORD, never from the URL (it would land in
    shell history and process lists). Messages are fetched read-only with BODY.PEEK, so
    nothing is marked as read or deleted. The server's certificate is always verified;
    `ca_file` (PEM, `[imap] ca_file` / NOTIFIER_IMAP_CA_FILE) adds CAs to trust besides
    the system's, for a server with a private CA.
    """
    expected = "expected an IMAP URL like imaps://user@mail.example.org/INBOX"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed [ of an IPv6 host, say
        raise BounceError(f"{expected} ({exc})", field="--imap") from exc
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise BounceError(expected, field="--imap")
    if parts.password is not None:
        raise BounceError(
            "the password does not belong in the IMAP URL",
            field="--imap",
            hint=f"write imaps://user@host/FOLDER and set {IMAP_PASSWORD_ENV} instead",
        )
    password = password if password is not None else imap_password()
    if not password:
        raise BounceError(
            f"no IMAP password: set {IMAP_PASSWORD_ENV}",
            field="--imap",
            hint="the password is read from the environment, never from the URL",
        )
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    user = unquote(parts.username)
    try:
        port = parts.port
    except ValueError as exc:  # urlsplit checks the port only when asked for it
        raise BounceError("the port is not a number", field="--imap") from exc
    where = f"{parts.hostname}:{port}" if port else parts.hostname
    label = f"{parts.scheme}://{parts.username}@{where}/{folder}"
    context = _imap_tls_context(ca_file)
    return _iter_imap(context, parts.scheme, parts.hostname, port, user, password, folder, label)


def _imap_tls_context(ca_file: Path | None) -> ssl.SSLContext:
    # Checked here, before connecting, so a bad path is its own clear error.
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise BounceError(
                f"cannot load CA certificates from this file ({exc.strerror or exc})",
                file=ca_file,
                field="imap.ca_file",
                hint="set [imap] ca_file (or NOTIFIER_IMAP_CA_FILE) to a PEM file of CA "
                "certificates",
            ) from exc
    return context


def _iter_imap(
    context: ssl.SSLContext,
    scheme: str,
    host: str,
    port: int | None,
    user: str,
    password: str,
    folder: str,
    label: str,
) -> Iterator[tuple[str, bytes]]:
    client: imaplib.IMAP4 | None = None
    try:
        if scheme == "imaps":
            client = imaplib.IMAP4_SSL(host, port or 993, ssl_context=context, timeout=60)
        else:
            client = imaplib.IMAP4(host, port or 143, timeout=60)
            client.starttls(ssl_context=context)  # no password over a plain connection
        client.login(user, password)
    except (OSError, imaplib.IMAP4.error) as exc:
        if client is not None:  # connected but refused: no session to log out of
            with contextlib.suppress(OSError):
                client.shutdown()
        raise BounceError(
            f"cannot log in to IMAP: {_imap_reason(exc)}",
            file=label,
            hint=IMAP_CA_HINT if is_certificate_error(exc) else None,
        ) from exc
    try:
        status, _ = client.select(_imap_quote(folder), readonly=True)
        if status != "OK":
            raise BounceError("no such IMAP folder", file=label)
        status, found = client.uid("SEARCH", "ALL")
        uids = found[0].split() if status == "OK" and found and found[0] else []
        for uid in uids[:MAX_IMAP_MESSAGES]:
            status, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                raise BounceError(f"IMAP fetch of UID {uid.decode()} failed", file=label)
            yield f"{label};UID={uid.decode()}", raw
    except (OSError, imaplib.IMAP4.error) as exc:
        raise BounceError(f"IMAP error: {_imap_reason(exc)}", file=label) from exc
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            log.info("IMAP logout failed; the connection is closed anyway")


def _imap_reason(exc: BaseException) -> str:
    """The server's words: imaplib passes its reply as bytes, which str() shows as b'...'."""
    reply = exc.args[0] if len(exc.args) == 1 else None
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="replace")
    return str(exc)


def _imap_quote(folder: str) -> str:
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
