"""Files a person uploads (a roster, its mapping): streamed into a private folder beside
the ledger, never held whole in memory, refused as soon as they pass the size limit.

A roster holds personal data, like the ledger: it waits in a folder only its owner may
read (mode 0700, its files 0600), next to the ledger rather than in the system's shared
temporary folder, between the preview a person reads and the import they confirm; it is
deleted after the import, when the person starts again, and when the console stops.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import FormData
from starlette.requests import Request

from notifier.errors import NotifierError
from notifier.web.forms import posted_form
from notifier.web.security import require_csrf

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for the form's own fields (and a mapping file) beyond the file's size limit.
FORM_ALLOWANCE = 1024 * 1024
# A text field of ours holds a token, a name or a choice.
MAX_FIELD_BYTES = 8 * 1024
MAX_PARTS = 20
_PREFIX = ".notifier-upload-"


class UploadRefused(NotifierError):
    """An upload the console will not take (too big, no file, not a form of ours)."""


@dataclass(frozen=True)
class UploadedFile:
    """One uploaded file, as it waits beside the ledger."""

    name: str  # the file's own name, as the browser gave it (no folders)
    path: Path
    size: int
    sha256: str

    def current_sha256(self) -> str:
        """The digest of the file as it is now (to import exactly what was previewed)."""
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
        return digest.hexdigest()


@dataclass
class Upload:
    """One form with files: its text fields, and its files in their private folder."""

    upload_id: str
    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return self.fields.get(name, "")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class Uploads:
    """The uploads waiting for a person to confirm them, by id."""

    def __init__(self) -> None:
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def keep(self, upload: Upload) -> None:
        with self._lock:
            self._uploads[upload.upload_id] = upload

    def get(self, upload_id: str) -> Upload | None:
        with self._lock:
            return self._uploads.get(upload_id)

    def discard(self, upload_id: str) -> None:
        with self._lock:
            upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            upload.remove()

    def discard_all(self) -> None:
        """Delete every upload (the console is stopping)."""
        with self._lock:
            uploads = list(self._uploads.values())
            self._uploads.clear()
        for upload in uploads:
            upload.remove()


def safe_name(name: str) -> str:
    """A file name to show and record: the last part of what the browser sent, without
    control characters, never empty."""
    base = re.split(r"[\\/]", name)[-1]
    cleaned = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip(" .")
    return cleaned[:120] or "upload.csv"


async def received_upload(
    request: Request, folder: Path, max_file_bytes: int, *, file_fields: tuple[str, ...]
) -> Upload:
    """The multipart form this request posts, its files (only `file_fields`) streamed into
    a new private folder in `folder`; its CSRF token checked (a refused token is a 403,
    and nothing is kept).

    A body that says it is bigger than `max_file_bytes` (and the form's allowance) is
    refused before it is read; a file that grows past it while it streams, as soon as it
    does. UploadRefused says why; nothing is kept then either."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        await posted_form(request)  # a form of ours without its file: its token first
        raise UploadRefused("no file was sent", hint="choose a file, then press the button")
    claimed = request.headers.get("content-length")
    if claimed is not None and claimed.isdigit():
        if int(claimed) > max_file_bytes + FORM_ALLOWANCE:
            raise _too_big(max_file_bytes)
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadRefused("the form was not sent whole", hint="send the file again")
    upload = Upload(secrets.token_urlsafe(16), Path(tempfile.mkdtemp(prefix=_PREFIX, dir=folder)))
    try:
        reader = _FormReader(upload, max_file_bytes, file_fields)
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        reader.finish()
        form = FormData(list(upload.fields.items()))
        require_csrf(form, getattr(request.state, "csrf", None))
    except FormParserError as exc:
        upload.remove()
        raise UploadRefused("the form was not sent whole", hint="send the file again") from exc
    except BaseException:
        upload.remove()
        raise
    return upload


def _too_big(max_file_bytes: int) -> UploadRefused:
    return UploadRefused(
        f"the file is over the size limit for a roster ({max_file_bytes:,} bytes):"
        " nothing was imported",
        hint="check that this is the roster; for a roster this big, raise [roster] max_bytes"
        " in notifier.toml",
    )


class _FormReader:
    """The parser's callbacks: text fields kept (small), files written as they come."""

    def __init__(self, upload: Upload, max_file_bytes: int, file_fields: tuple[str, ...]):
        self.upload = upload
        self.max_file_bytes = max_file_bytes
        self.file_fields = file_fields
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._handle: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._digest = hashlib.sha256()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
        }

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadRefused("the form has too many parts: it is not one of ours")
        self._disposition = b""
        self._name = ""
        self._filename = None
        self._data = bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            return
        self._filename = filename.decode("utf-8", "replace")
        if self._name in self.upload.files:
            raise UploadRefused(f"the form sends two files as {self._name!r}: send one")
        if self._name in self.file_fields and self._filename:
            # A folder per field (a name we chose), the file under its own name: what an
            # import records is the name the person knows.
            own = self.upload.folder / self._name
            own.mkdir(mode=0o700, exist_ok=True)
            path = own / safe_name(self._filename)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._handle = os.fdopen(fd, "wb")
            self._path = path
            self._size = 0
            self._digest = hashlib.sha256()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._handle is not None:
            self._size += len(piece)
            if self._size > self.max_file_bytes:
                raise _too_big(self.max_file_bytes)
            self._handle.write(piece)
            self._digest.update(piece)
        elif self._filename is None:
            if len(self._data) + len(piece) > MAX_FIELD_BYTES:
                raise UploadRefused(f"the form's field {self._name!r} is too long")
            self._data.extend(piece)
        # A file in a field we do not take is read past, never kept.

    def part_end(self) -> None:
        if self._handle is not None and self._path is not None and self._filename:
            self._handle.close()
            self._handle = None
            self.upload.files[self._name] = UploadedFile(
                safe_name(self._filename), self._path, self._size, self._digest.hexdigest()
            )
        elif self._filename is None and self._name:
            self.upload.fields[self._name] = self._data.decode("utf-8", "replace")

    def finish(self) -> None:
        if self._handle is not None:  # a body cut off in the middle of a file
            self._handle.close()
            raise UploadRefused("the file was not sent whole", hint="send it again")
