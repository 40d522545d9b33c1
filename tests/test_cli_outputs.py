"""Files the CLI writes on request carry personal data: owner-only, and clear errors."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Notifier

from notifier.cli.app import write_private
from notifier.errors import NotifierError


@pytest.fixture
def imported(notifier: Notifier) -> None:
    result = notifier(
        "roster", "import", str(REPO / "examples" / "volunteers.csv"), "--rejects", "rejects.csv"
    )
    assert result.exit_code == 0, result.output


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_output_file_is_owner_only(
    notifier: Notifier, imported: None, tmp_path: Path
) -> None:
    (tmp_path / "previews").mkdir()
    old = tmp_path / "unreachable.csv"
    old.write_text("stale", encoding="utf-8")
    os.chmod(old, 0o644)  # an existing file is tightened too, and truncated
    for args in (
        (
            "preview",
            "2020-03-breach",
            "--volunteer",
            "HMR-0001",
            "--out",
            "one.eml",
            "--format",
            "eml",
        ),
        ("preview", "2020-03-breach", "--all", "--out", "previews"),
        ("export", "unreachable", "--out", "unreachable.csv"),
    ):
        result = notifier(*args)
        assert result.exit_code == 0, result.output
    written = [
        tmp_path / "rejects.csv",
        tmp_path / "one.eml",
        old,
        *sorted((tmp_path / "previews").iterdir())[:3],
    ]
    for path in written:
        assert mode(path) == 0o600, path
    assert old.read_text(encoding="utf-8-sig").startswith("volunteer_id")


def test_unwritable_output_is_one_clean_error(notifier: Notifier, imported: None) -> None:
    result = notifier("export", "unreachable", "--out", "no/such/folder/x.csv")
    assert result.exit_code == 2
    assert "no/such/folder/x.csv: cannot write" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_password_in_a_mistyped_url_is_never_echoed(notifier: Notifier, imported: None) -> None:
    result = notifier("send", "2020-03-breach", "--smtp", "smtpx://bob:s3cret@mail.example.org")
    assert result.exit_code == 2
    assert "s3cret" not in result.output
    assert "smtpx://***@mail.example.org" in result.output


def test_a_long_output_that_fails_halfway_leaves_what_was_there(tmp_path: Path) -> None:
    """A streamed output (the rejects file) is moved into place only once whole."""
    target = tmp_path / "rejects.csv"
    target.write_text("the last complete file\n", encoding="utf-8")

    def lines() -> Iterator[str]:
        yield "row,column,value,reason,warning\r\n"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NotifierError, match="No space left on device") as failed:
        write_private(target, lines())
    assert failed.value.file == str(target)
    assert target.read_text(encoding="utf-8") == "the last complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.csv"]  # no partial file left

    os.chmod(target, 0o644)
    write_private(target, iter(["a\r\n", "b\r\n"]))
    assert target.read_bytes() == b"a\r\nb\r\n" and mode(target) == 0o600


def test_a_streamed_output_through_a_link_or_a_pipe_is_written_in_place(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_private(link, iter(["new\r\n"]))
    assert link.is_symlink() and real.read_bytes() == b"new\r\n"

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_private(fifo, iter(["through ", "a pipe"]))
    reader.join(timeout=10)
    assert received == [b"through a pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_streamed_output_is_written_in_place_where_nothing_can_be_made_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder one may not create files in, holding a file one may write (as root, only
    a refusal of the temporary file shows it): the output is written in place."""
    target = tmp_path / "rejects.csv"
    target.write_text("old", encoding="utf-8")

    def refused(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("notifier.files.tempfile.mkstemp", refused)
    write_private(target, iter(["new\r\n"]))
    assert target.read_bytes() == b"new\r\n" and mode(target) == 0o600
