"""Spool: batches set aside in a temporary file and read back in order (a roster import's
rows, problems and warnings wait there until the whole file is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.errors import NotifierError
from notifier.roster import RowProblem
from notifier.spool import Spool


def test_batches_come_back_in_order_and_can_be_read_again(tmp_path: Path) -> None:
    rows = [(n, f"v-{n}", ("鈴木", "a\x00b", "")) for n in range(2, 12)]
    with Spool(tmp_path) as spool:
        spool.add(rows[:3])
        spool.add([])  # nothing to keep
        spool.add(rows[3:])
        assert spool.count == len(rows)
        assert [len(b) for b in spool.batches()] == [3, 7]
        assert list(spool) == rows
        assert list(spool) == rows  # a second reading sees the same


def test_two_readings_at_once_each_keep_their_place(tmp_path: Path) -> None:
    problems = [
        RowProblem(n, "email", f"x{n}", "bad", "email", (("email", f"x{n}"),)) for n in range(6)
    ]
    with Spool(tmp_path) as spool:
        for n in range(0, 6, 2):
            spool.add(problems[n : n + 2])
        pairs = list(zip(spool, spool, strict=True))
    assert pairs == [(p, p) for p in problems]
    assert [p.who for p, _ in pairs] == [p.who for p in problems]  # `who` is kept too


def test_nothing_is_left_beside_the_ledger(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.add([1, 2, 3])
        # An unnamed file: a crash cannot leave personal data behind in the folder.
        assert list(tmp_path.iterdir()) == []
        assert list(spool) == [1, 2, 3]
    with pytest.raises(ValueError, match="closed"):
        list(spool)


def test_a_folder_that_cannot_hold_it_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with Spool(missing) as spool:
        spool.add([])
        assert list(spool) == []  # nothing set aside: no file was needed
        with pytest.raises(NotifierError, match="cannot make a temporary file") as failed:
            spool.add([1])
    assert failed.value.file == str(missing)
