"""The report and the unreachable list written as they are read from the ledger (a chunk of
people at a time, figures counted by the database) say exactly what today's builder, which
held everything in memory, said: the same JSON, CSV and lists, on a ledger with every kind
of outcome (bounces, deferrals, uncertain, suppressed, test sends, rejected rows, a moved
address, a person gone from the roster, a tampered state), read in chunks small enough that
every chunk boundary is crossed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import report_reference as today
from conftest import Notifier
from report_scenario import C1, C2, append, at, build, mid, tamper

from notifier import report
from notifier.campaign import load_campaign
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, reports
from notifier.message import MessageState
from notifier.outputs import json_record_text, json_text
from notifier.report import open_campaign_report, unreachable, unreachable_people
from notifier.report_formats import (
    report_csv_lines,
    report_html_pieces,
    report_json_pieces,
    unreachable_csv_lines,
    unreachable_json_pieces,
)


def eventful(ledger: Ledger) -> None:
    """The scenario, then what a long campaign adds: test sends, an address moved since
    the send, a person gone from the roster, a state no event backs."""
    build(ledger)
    append(
        ledger,
        [
            EventDraft(
                EventKind.TEST_SENT,
                campaign_id=C1,
                data={"to": "dpo@hmr.test", "as": "v02", "reply": "250 2.0.0 Ok"},
            ),
            EventDraft(
                EventKind.TEST_REFUSED,
                campaign_id=C1,
                data={"to": "dpo@hmr.test", "as": "v03", "reply": "550 5.7.1 no"},
            ),
        ],
        at("10:30"),
    )
    tamper(
        ledger.path, "UPDATE volunteers SET email = 'alice@new.example' WHERE volunteer_id = 'v01'"
    )
    tamper(ledger.path, "DELETE FROM volunteers WHERE volunteer_id = 'v07'")
    tamper(
        ledger.path,
        "UPDATE messages SET state = 'delivered' WHERE message_id = ?",
        (mid(C1, "v09"),),
    )


@pytest.fixture(params=["scenario", "eventful"])
def scenario(request: pytest.FixtureRequest, ledger: Ledger) -> Ledger:
    (build if request.param == "scenario" else eventful)(ledger)
    return ledger


@pytest.fixture(params=[1000, 3, 1], ids=["chunk1000", "chunk3", "chunk1"])
def chunked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Read the people a few at a time, so every chunk boundary is crossed."""
    monkeypatch.setattr(reports, "CHUNK", request.param)
    monkeypatch.setattr(report, "_STATES_CHUNK", request.param)
    return int(request.param)


def same_moment(text: str, like: str) -> str:
    """`text` with the generation time of `like` (each report is made at its own second)."""
    made = json.loads(like)["generated_at"]
    return re.sub(r'"generated_at": "[^"]*"', f'"generated_at": "{made}"', text, count=1)


@pytest.mark.parametrize("campaign", [C1, C2])
@pytest.mark.parametrize("audience_from", ["messages", "campaign file"])
def test_json_and_csv_are_todays(
    scenario: Ledger, chunked: int, campaign: str, audience_from: str
) -> None:
    now = (
        load_campaign(campaign.replace("update", "29-update"))
        if audience_from != "messages"
        else None
    )
    expected = today.campaign_report(scenario, campaign, campaign_now=now)
    with open_campaign_report(scenario, campaign, campaign_now=now) as streamed:
        json_text = "".join(report_json_pieces(streamed))
        csv_text = "".join(report_csv_lines(streamed))
    want = today.report_as_json(expected)
    data, wanted = json.loads(json_text), json.loads(want)
    del data["generated_at"], wanted["generated_at"]
    assert data == wanted
    assert data["recipients"] and data["owed_people"] is not None
    # ... and the very same text, key for key and line for line.
    assert json_text == same_moment(want, json_text)
    assert csv_text == today.report_as_csv(expected)
    assert csv_text.count("\r\n") == 1 + len(data["recipients"])


def test_the_tampered_state_and_moved_address_come_through(ledger: Ledger) -> None:
    eventful(ledger)
    with open_campaign_report(ledger, C1) as streamed:
        assert streamed.state_mismatches == (mid(C1, "v09"),)
        data = json.loads("".join(report_json_pieces(streamed)))
    people = {r["volunteer_id"]: r for r in data["recipients"]}
    assert people["v01"]["email"] == "alice@new.example"
    assert (people["v07"]["name"], people["v07"]["state"]) == ("", "uncertain")
    assert [t["to"] for t in data["test_sends"]] == ["dpo@hmr.test", "dpo@hmr.test"]


def test_unreachable_is_todays(scenario: Ledger, chunked: int) -> None:
    expected = today.unreachable(scenario)
    assert expected  # the scenario has people to write to
    with scenario.reading():
        csv_text = "".join(unreachable_csv_lines(unreachable_people(scenario)))
    with scenario.reading():
        json_text = "".join(unreachable_json_pieces(unreachable_people(scenario)))
    assert csv_text == today.unreachable_as_csv(expected)
    assert json_text == today.unreachable_as_json(expected)
    assert unreachable(scenario) == [
        report.UnreachablePerson(**vars(person)) for person in expected
    ]


def test_empty_lists_are_todays(ledger: Ledger) -> None:
    with ledger.reading():
        assert "".join(unreachable_json_pieces(unreachable_people(ledger))) == "[]\n"
        assert "".join(unreachable_csv_lines(unreachable_people(ledger))) == (
            today.unreachable_as_csv([])
        )


def test_rejected_rows_are_todays(scenario: Ledger, chunked: int) -> None:
    expected = [vars(row) for row in today.rejected_rows(scenario)]
    assert [vars(row) for row in report.rejected_rows(scenario)] == expected


def test_the_cli_writes_todays_report_and_list(notifier: Notifier, tmp_path: Path) -> None:
    with Ledger(notifier.ledger_path) as led:
        eventful(led)
        expected = today.campaign_report(led, C1, campaign_now=load_campaign(C1))
        people = today.unreachable(led)
    for fmt in ("json", "csv"):
        out = tmp_path / f"report.{fmt}"
        result = notifier("report", C1, "--format", fmt, "--out", str(out), "--no-bom")
        assert result.exit_code == 1, result.output  # the tampered ledger fails verification
        text = out.read_bytes().decode("utf-8")
        if fmt == "json":
            assert text == same_moment(today.report_as_json(expected), text)
        else:
            assert text == today.report_as_csv(expected)
    result = notifier("report", C1, "--format", "json")
    assert (
        json.loads(result.stdout)["recipients"]
        == json.loads(today.report_as_json(expected))["recipients"]
    )
    result = notifier(
        "export", "unreachable", "--format", "json", "--out", str(tmp_path / "u.json")
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "u.json").read_text(encoding="utf-8") == today.unreachable_as_json(people)
    assert f"wrote {len(people)} people to" in result.stderr
    result = notifier("export", "unreachable")
    # (click's test runner reads standard output with its line ends as \n)
    assert result.stdout == today.unreachable_as_csv(people).replace("\r\n", "\n")


# --- the HTML: every recipient for a small campaign, a summary for a large one ---------


def html_of(ledger: Ledger, **options: Any) -> str:
    with open_campaign_report(ledger, C1, campaign_now=load_campaign(C1)) as streamed:
        return "".join(report_html_pieces(streamed, time_zone="Europe/London", **options))


def rows_of(html: str, table: str) -> int:
    found = re.search(rf'<table class="{table}">(.*?)</table>', html, re.S)
    return 0 if found is None else found.group(1).count("<tr><td")


def test_a_small_campaign_lists_everyone(ledger: Ledger) -> None:
    eventful(ledger)
    html = html_of(ledger, lists_up_to=10)  # ten recipients: at the threshold, listed
    assert rows_of(html, "recipients") == 10
    assert "This report lists every recipient below." in html
    assert "The first" not in html


def test_a_large_campaign_is_a_summary_saying_where_the_rest_is(ledger: Ledger) -> None:
    eventful(ledger)
    with open_campaign_report(ledger, C1, campaign_now=load_campaign(C1)) as streamed:
        head = streamed.ledger_head
        owed = streamed.owed
        assert owed is not None and owed.count == 4
        html = "".join(report_html_pieces(streamed, lists_up_to=9, limit=2))
        csv_heads = {line.rsplit(",", 1)[1] for line in list(report_csv_lines(streamed))[1:]}
    assert rows_of(html, "recipients") == 0 and 'class="recipients"' not in html
    where = html[html.index("<h2>Where each part is</h2>") : html.index("<h2>Outcome by state")]
    assert "summary of a large campaign" in where and "10 recipients" in where
    assert "--format csv" in where and "notifier export unreachable" in where
    # The anchor that ties the parts together: the same head in the page and every CSV row.
    assert f"<code>{head}</code>" in where and csv_heads == {head + "\r\n"}
    # The counts are all there; the long lists are cut at `limit`, saying how many there are.
    assert '<tr><th>Total</th><th class="n">10</th></tr>' in html
    assert rows_of(html, "owed") == 2
    assert "The first 2 of the 4 people still owed the notice" in html
    assert "The first 2 of the 4 rows refused" in html


def test_the_page_stops_growing_with_the_campaign(ledger: Ledger) -> None:
    eventful(ledger)
    everyone = html_of(ledger)
    summary = html_of(ledger, lists_up_to=0, limit=1)
    assert len(summary) < len(everyone)
    assert rows_of(everyone, "recipients") == 10 and rows_of(summary, "recipients") == 0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from chromium import chromium

    yield from chromium(1000, 800)


def test_the_summary_reads_in_a_browser(browser: Any, ledger: Ledger, tmp_path: Path) -> None:
    eventful(ledger)
    page = tmp_path / "summary.html"
    page.write_text(html_of(ledger, lists_up_to=5, limit=3), encoding="utf-8")
    browser.get(page.as_uri())
    run = browser.execute_script
    assert run("return document.documentElement.scrollWidth") <= 1000
    headings = run("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert "Where each part is" in headings and "Recipients" in headings
    assert run("return document.querySelectorAll('table.recipients').length") == 0
    assert run("return document.querySelectorAll('table.owed tr').length") == 1 + 3
    text = run("return document.body.innerText")
    assert "notifier report 2020-03-breach --format csv" in text
    assert "The first 3 of the 4 people still owed the notice" in text


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"name": "井上 \x1b[31mred\x1b[0m", "dir": "abc\u202edef", "nbsp": "a\u00a0b\u200d"},
        {"n": 3, "x": 2.5, "yes": True, "none": None, "quote": 'say "hi"\\\n\t'},
        {"nested": {"a": [1, "\x9b"]}, "s": "\x7f"},
        {"state": MessageState.SENT, "kind": EventKind.SENT, "attempts": 2},
    ],
)
def test_a_record_is_written_as_json_text_writes_it(record: dict[str, Any]) -> None:
    for depth in (0, 1, 2):
        assert json_record_text(record, depth=depth) == json_text(record).replace(
            "\n", "\n" + "  " * depth
        )
