"""Records set aside in a temporary file while a long file is read, then read back in order.

A roster import decides what to write only once the whole file is read (its counts head
its events; `--strict` refuses everything for one bad row), and a roster may have hundreds
of thousands of rows, all of them bad or all of them changed. What waits, waits here, a
batch at a time, so memory stays flat however long the file is.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from notifier.errors import NotifierError


class Spool:
    """Batches of records in a temporary file (deleted on close), read back in order.

    Only this process writes the file, and only what `add` was given: pickle reads back
    nothing it did not write itself.
    """

    def __init__(self, directory: Path | None = None) -> None:
        # Beside the ledger when given: personal data stays where the ledger is kept, and
        # a full disk there is the ledger's full disk.
        self._directory = directory
        self._file: IO[bytes] | None = None  # made by the first batch: most spools get none
        self._batches = 0
        self.count = 0  # records added
        self._closed = False

    def add(self, batch: Sequence[Any]) -> None:
        """Set a batch of records aside (an empty one is not kept)."""
        if batch:
            pickle.dump(list(batch), self._opened(), pickle.HIGHEST_PROTOCOL)
            self._batches += 1
            self.count += len(batch)

    def _opened(self) -> IO[bytes]:
        if self._closed:
            raise ValueError("I/O operation on a closed spool")
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(dir=self._directory)
            except OSError as exc:
                raise NotifierError(
                    f"cannot make a temporary file ({exc.strerror})",
                    file=self._directory or Path(tempfile.gettempdir()),
                    hint="check that the folder exists, may be written to and has room",
                ) from exc
        return self._file

    def batches(self) -> Iterator[list[Any]]:
        """The batches added, in order; may be read any number of times, even two
        readings at once (each keeps its own place)."""
        if self._closed:
            raise ValueError("I/O operation on a closed spool")
        if self._file is None:
            return
        self._file.flush()
        offset = 0
        for _ in range(self._batches):
            self._file.seek(offset)
            # Our own temporary file, written by add() above: nothing else writes to it.
            batch = pickle.load(self._file)  # noqa: S301
            offset = self._file.tell()
            yield batch

    def __iter__(self) -> Iterator[Any]:
        """Every record added, in order."""
        for batch in self.batches():
            yield from batch

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
