"""One time zone for every time shown to people (notifier.times): the same approval reads
the same in `approve`, `status` and a refused send; reports, histories and errors say
their zone; JSON keeps UTC ISO 8601."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO, Notifier, write_org_config

from notifier.config import load_settings
from notifier.errors import ConfigError, SendInProgress
from notifier.ledger import Ledger
from notifier.sink import Sink
from notifier.times import shown_time

ROSTER = REPO / "examples" / "volunteers.csv"
FIRST = "2020-03-breach"
# Tokyo: nine hours from UTC and its own label, so a time in UTC cannot pass for it.
IN_TOKYO = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST")


def test_shown_time_is_to_the_second_and_labelled() -> None:
    at = "2020-03-25T10:04:07.123456+00:00"
    assert shown_time(at) == "2020-03-25 10:04:07 UTC"
    assert shown_time(at, "Europe/London") == "2020-03-25 10:04:07 GMT"
    assert shown_time("2020-04-29T10:04:07Z", "Europe/London") == "2020-04-29 11:04:07 BST"
    assert shown_time(at, "Asia/Tokyo", precision="minutes") == "2020-03-25 19:04 JST"
    assert shown_time(datetime(2020, 3, 25, 10, 4, 7), "UTC", precision="clock") == "10:04:07 UTC"
    assert shown_time("2020-03-25T10:00Z", "Asia/Kolkata", precision="minutes") == (
        "2020-03-25 15:30 IST"
    )
    assert shown_time(None) == "" and shown_time("not a time") == "not a time"


def settings_with(tmp_path: Path, text: str) -> Path:
    path = write_org_config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return path


def test_one_setting_with_its_older_name_and_the_environment(tmp_path: Path) -> None:
    path = settings_with(tmp_path, '[display]\ntime_zone = "Asia/Tokyo"\n')
    assert load_settings(path, env={}).time_zone == "Asia/Tokyo"
    assert load_settings(path, env={"NOTIFIER_TIME_ZONE": "Europe/London"}).time_zone == (
        "Europe/London"
    )
    older = settings_with(tmp_path, '[report]\ntime_zone = "Europe/London"\n')
    assert load_settings(older, env={}).time_zone == "Europe/London"
    both = settings_with(
        tmp_path, '[display]\ntime_zone = "Asia/Tokyo"\n[report]\ntime_zone = "Europe/London"\n'
    )
    with pytest.raises(ConfigError, match="two time zones"):
        load_settings(both, env={})
    wrong = settings_with(tmp_path, '[display]\ntime_zone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="unknown time zone") as caught:
        load_settings(wrong, env={})
    assert caught.value.field == "display.time_zone"


def test_one_approval_reads_the_same_everywhere(notifier: Notifier, tmp_path: Path) -> None:
    config = settings_with(tmp_path, '[display]\ntime_zone = "Asia/Tokyo"\n')
    assert notifier("roster", "import", str(ROSTER)).exit_code == 0
    approved = notifier("approve", FIRST, "--by", "Test approver")
    assert approved.exit_code == 0, approved.output
    found = IN_TOKYO.search(approved.stdout)
    assert found, approved.stdout
    when = found.group(0)

    status = notifier("status", FIRST)
    assert f"Approved by Test approver at {when};" in status.stdout
    # JSON keeps the moment itself, in UTC: the same moment.
    at = json.loads(notifier("status", FIRST, "--format", "json").stdout)["approval"]["at"]
    assert at.endswith("+00:00") and "." in at
    assert shown_time(at, "Asia/Tokyo") == when

    # The content changes: the refused send names the approval at the same time.
    config.write_text(
        config.read_text(encoding="utf-8").replace("+44 1632 961 000", "+44 1632 961 001"),
        encoding="utf-8",
    )
    with Sink() as sink:
        refused = notifier("send", FIRST, "--yes", "--smtp", sink.url)
    assert refused.exit_code == 1, refused.output
    assert f"approved it at {when} (" in refused.stderr
    assert "+00:00" not in refused.stderr
    assert f"Approved by Test approver at {when}, but the content has changed" in (
        notifier("status", FIRST).stdout
    )


def test_reports_and_histories_show_the_zone(notifier: Notifier, tmp_path: Path) -> None:
    settings_with(tmp_path, '[display]\ntime_zone = "Asia/Tokyo"\n')
    assert notifier("roster", "import", str(ROSTER)).exit_code == 0
    assert notifier("approve", FIRST, "--by", "Test approver").exit_code == 0
    with Sink() as sink:
        assert notifier("send", FIRST, "--yes", "--smtp", sink.url).exit_code == 0

    summary = notifier("report", FIRST).stdout
    assert re.search(rf"generated at {IN_TOKYO.pattern};", summary), summary
    assert re.search(rf"first send attempt {IN_TOKYO.pattern}, last ", summary)
    assert "Events per hour" in summary and "UTC" not in summary
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:00 JST", summary)  # the timeline's hours

    history = notifier("history", "HMR-0001").stdout
    assert IN_TOKYO.search(history) and "UTC" not in history
    assert IN_TOKYO.search(notifier("status", FIRST).stdout)  # the last send run
    # JSON and CSV keep UTC ISO 8601.
    events = json.loads(notifier("history", "HMR-0001", "--format", "json").stdout)
    assert all(e["at"].endswith("+00:00") for e in events)


def test_a_refusal_naming_a_running_command_shows_its_zone(tmp_path: Path) -> None:
    path = tmp_path / "notifier.db"
    with Ledger(path) as first, first.lease("send", FIRST):
        with Ledger(path, time_zone="Asia/Tokyo") as second:
            with pytest.raises(SendInProgress) as refused:
                with second.lease("send", FIRST):
                    pass
            running = second.running()
    assert running is not None
    since = datetime.fromisoformat(running.since).astimezone(ZoneInfo("Asia/Tokyo"))
    assert f"running since {since:%Y-%m-%d %H:%M:%S} JST" in str(refused.value)
    assert IN_TOKYO.search(running.describe("Asia/Tokyo"))
