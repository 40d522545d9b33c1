"""The ledger's key never slips into a repository: the project's .gitignore covers what
the demo and the README's steps write, and notifier warns (one line) when the key file
sits in a git work tree that does not ignore it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, Notifier

from notifier.secret import git_would_commit, key_file_warning

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")
ROSTER = REPO / "examples" / "volunteers.csv"


def git(folder: Path, *args: str) -> str:
    assert GIT is not None
    done = subprocess.run(
        [GIT, "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "key file" in line]


@needs_git
def test_a_key_file_git_would_commit_is_warned_about_once(
    notifier: Notifier, tmp_path: Path
) -> None:
    git(tmp_path, "init", "-q")
    result = notifier("roster", "import", str(ROSTER))
    assert result.exit_code == 0, result.output
    key = tmp_path / "notifier.db.key"
    (line,) = warnings_in(result.stderr)  # once, though the command opens the ledger twice
    assert line.startswith(f"Warning: the ledger's key file {key} is inside the git work tree")
    assert "add notifier.db.key to .gitignore" in line
    assert key.stat().st_mode & 0o777 == 0o600

    # Every later command says it too, until git ignores the file.
    assert warnings_in(notifier("roster", "rejects").stderr)
    (tmp_path / ".gitignore").write_text("*.db.key\n", encoding="utf-8")
    quiet = notifier("roster", "rejects")
    assert quiet.exit_code == 0 and not warnings_in(quiet.stderr)
    assert git_would_commit(key) is None


@needs_git
def test_a_key_file_already_committed_is_warned_about(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    key = tmp_path / "notifier.db.key"
    key.write_text("00" * 32 + "\n", encoding="ascii")
    git(tmp_path, "add", "notifier.db.key")
    git(tmp_path, "commit", "-q", "-m", "oops")
    (tmp_path / ".gitignore").write_text("*.db.key\n", encoding="utf-8")  # too late
    assert git_would_commit(key) == tmp_path.resolve()
    assert key_file_warning(key) is not None


def test_no_warning_outside_a_work_tree_or_without_git(
    notifier: Notifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = notifier("roster", "import", str(ROSTER))
    assert outside.exit_code == 0 and not warnings_in(outside.stderr)
    if GIT is not None:
        git(tmp_path, "init", "-q")
    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # git absent: nothing to ask, nothing to say
    assert git_would_commit(tmp_path / "notifier.db.key") is None
    result = notifier("roster", "rejects")
    assert result.exit_code == 0 and not warnings_in(result.stderr)


@needs_git
def test_the_demo_leaves_nothing_for_git_to_add(notifier: Notifier, tmp_path: Path) -> None:
    """In a clone with the project's .gitignore, the demo and the README's outputs are
    all ignored: `git add -A` after them adds nothing (least of all the key)."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "the project")
    result = notifier("demo")
    assert result.exit_code == 0, result.output
    assert not warnings_in(result.stderr)
    for args in (
        ("roster", "import", str(ROSTER), "--rejects", "rejected.csv"),
        ("check", "2020-04-29-update", "--proof", "proof.html"),
        ("report", "2020-03-breach", "--format", "html", "--out", "report.html"),
        ("report", "2020-03-breach", "--format", "csv", "--out", "recipients.csv"),
        ("export", "unreachable", "--out", "letters.csv"),
        ("preview", "2020-03-breach", "--all", "--out", "previews"),
    ):
        notifier(*args)  # (the update's check may find problems: the file is written)
    assert (tmp_path / "notifier.db.key").exists() and (tmp_path / "demo-sink").is_dir()
    for name in ("rejected.csv", "proof.html", "report.html", "letters.csv", "previews"):
        assert (tmp_path / name).exists(), name
    assert git(tmp_path, "status", "--porcelain", "--untracked-files=all") == ""
