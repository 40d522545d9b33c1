"""Files and folders written for the user: owner-only, checked before the work, one line
when they cannot be written.

Reports, previews, rejected rows, exports and a sink's Maildir all carry personal data,
like the ledger itself, so files are created with mode 0600. A path that cannot be
written (a missing folder, a file where a folder should be, no permission, a full disk)
is an OutputError naming it, never a traceback; commands check their outputs with
`require_writable_file` / `prepare_folder` before the work starts, so an import or a
preview run is not done for nothing.

CSV files written to a path start with a UTF-8 byte-order mark (`write_csv`): without it
Excel reads UTF-8 as the machine's legacy code page and shows 井上 as mojibake. Text sent
to standard output never gets one (it would be a stray character in a pipe).
"""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from notifier.errors import OutputError

BOM = "\ufeff"
_HINT = "check the folder exists, that you may write there and that it has room"


def cannot_write(path: Path, exc: OSError, *, what: str = "write") -> OutputError:
    """The one-line error for a path that cannot be written."""
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot {what} ({reason})", file=path, hint=_HINT)


def require_writable_file(path: Path) -> None:
    """Refuse (OutputError) an output file that could not be written, before any work:
    its folder missing or not a folder, the path a folder, or no permission to write.

    Nothing is created: a file that is written later replaces nothing until then.
    """
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError("cannot write (it is a folder)", file=path, hint="give a file name")
    if path.exists() or path.is_symlink():
        if not os.access(path, os.W_OK):
            raise cannot_write(path, PermissionError(13, "Permission denied"))
        return
    if not folder.exists():
        raise cannot_write(path, FileNotFoundError(2, "the folder does not exist"))
    if not folder.is_dir():
        raise cannot_write(path, NotADirectoryError(20, f"{folder} is not a folder"))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise cannot_write(path, PermissionError(13, "Permission denied"))


def prepare_folder(path: Path) -> Path:
    """Make sure the output folder `path` is there and may be written to (made, with its
    parents, if missing); OutputError saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file (or a link to one) where the folder should be
        raise cannot_write(path, NotADirectoryError(exc.errno, "it is not a folder")) from exc
    except OSError as exc:
        raise cannot_write(path, exc, what="create the folder") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise cannot_write(path, PermissionError(13, "Permission denied"))
    return path


_MAILDIR_PARTS = ("tmp", "new", "cur")


def prepare_maildir(path: Path) -> Path:
    """A Maildir at `path` to store messages in: made if missing; an existing empty folder
    is made one (its tmp, new and cur folders); a folder holding something else is refused,
    so a wrong path never fills someone's folder with mail."""
    prepare_folder(path)
    if not all((path / part).is_dir() for part in _MAILDIR_PARTS):
        if any(path.iterdir()) and not any((path / part).is_dir() for part in _MAILDIR_PARTS):
            raise OutputError(
                "cannot use this folder as a Maildir: it is not empty and has no cur, new"
                " and tmp folders",
                file=path,
                hint="give an empty or new folder",
            )
        for part in _MAILDIR_PARTS:
            try:
                (path / part).mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise cannot_write(path / part, exc, what="create the folder") from exc
    return path


def write_csv(path: Path, data: str | Iterable[str], *, bom: bool = True) -> None:
    """Write a CSV file the user asked for (write_private), starting with a UTF-8
    byte-order mark unless `bom` is False, so a spreadsheet opens it as UTF-8."""
    if not bom:
        write_private(path, data)
    elif isinstance(data, str):
        write_private(path, BOM + data)
    else:
        write_private(path, itertools.chain([BOM], data))


def write_private(path: Path, data: str | bytes | Iterable[str]) -> None:
    """Write an output the user asked for, readable by its owner only.

    `data` may come a piece of text at a time (an output too long to hold whole): then it
    is written beside `path` and moved into place once whole, so a failure halfway (a full
    disk) never leaves a file that looks complete. A FIFO, a device (`/dev/stdout`) or a
    symbolic link is written in place, as it is.
    """
    try:
        if isinstance(data, str | bytes):
            _write_in_place(path, [data.encode("utf-8") if isinstance(data, str) else data])
            return
        pieces = (text.encode("utf-8") for text in data)
        partial = None
        if not path.is_symlink() and (path.is_file() or not path.exists()):
            partial = _partial_beside(path)
        if partial is None:
            _write_in_place(path, pieces)
            return
        try:
            _write_in_place(partial, pieces)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise cannot_write(path, exc) from exc


def _partial_beside(path: Path) -> Path | None:
    """A new, empty, owner-only file of our own beside `path`, or None where none can be
    made (a folder we may not write to, though the file itself may be written)."""
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name[:40]}.", suffix=".partial", dir=path.parent
        )
    except OSError:
        return None
    os.close(fd)
    return Path(name)


def _write_in_place(path: Path, pieces: Iterable[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            os.fchmod(fd, 0o600)  # a file that was there keeps no wider mode
        handle.writelines(pieces)
        if regular:
            handle.flush()
            os.fsync(fd)  # whole on disk before it is moved into place
