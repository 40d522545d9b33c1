"""The HTML report read on a screen: a real headless Chromium at 1,000 px shows it with no
sideways scrolling, states in words, times to the second with their zone, the latest
attempt's reply only, and a print stylesheet."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import chromium
from report_scenario import C1, SOFT_DIAG, append, at, build

from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger
from notifier.message import STATE_WORDS, MessageState
from notifier.report import CampaignReport, campaign_report
from notifier.report_formats import report_as_html

WIDTH = 1000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium(WIDTH, 800)


def long_cells(report: CampaignReport) -> CampaignReport:
    """The report with the longest cells a real roster and server produce: an address
    with no place to break, a long server reply and diagnostic."""
    first, *rest = report.recipients
    wide = dataclasses.replace(
        first,
        email="anna-louise.nibhriain-fitzgerald-montgomery@very-long-subdomain.example.org",
        smtp_reply="250 2.0.0 Ok: queued as 4Lk9Zq0Yx1z2A3b4C5d6E7f8G9h0 " * 3,
        diagnostic="smtp; 550 5.1.1 <anna-louise@example.org>: Recipient address rejected",
    )
    return dataclasses.replace(report, recipients=(wide, *rest))


def opened(browser: Any, html: str, path: Path) -> Any:
    path.write_text(html, encoding="utf-8")
    os.chmod(path, 0o600)
    browser.get(path.as_uri())
    return browser.execute_script


def test_report_fits_a_1000px_window(browser: Any, ledger: Ledger, tmp_path: Path) -> None:
    build(ledger)
    html = report_as_html(long_cells(campaign_report(ledger, C1)), time_zone="Europe/London")
    run = opened(browser, html, tmp_path / "report.html")
    assert run("return window.innerWidth") == WIDTH
    # No sideways scrolling: the page is no wider than the window, and no table is either.
    assert run("return document.documentElement.scrollWidth") <= WIDTH
    widest = run(
        "return Math.max(...Array.from(document.querySelectorAll('table'))"
        ".map(t => t.getBoundingClientRect().right))"
    )
    assert widest <= WIDTH
    # Every cell of the recipients table is shown whole: none is cut off by overflow.
    cut = run(
        "return Array.from(document.querySelectorAll('table.recipients td'))"
        ".filter(td => td.scrollWidth > td.clientWidth + 1).length"
    )
    assert cut == 0
    text = run("return document.body.innerText")
    assert STATE_WORDS[MessageState.BOUNCED_HARD] in text  # "bounced: address does not exist"
    assert "bounced_hard" not in text
    # Times to the second in the organisation's zone, labelled (April in London: BST).
    assert "2020-04-01 11:03:00 BST" in text
    assert ".000000" not in text and "T10:03" not in text


def test_sent_row_shows_only_its_own_attempt(browser: Any, ledger: Ledger, tmp_path: Path) -> None:
    build(ledger)
    # v04 was soft-bounced ("452 4.2.2 Mailbox full"); resent, the new attempt went out.
    ledger.claim_for_sending([f"<{C1}.v04@example.org>"], claimable={MessageState.BOUNCED_SOFT})
    report = campaign_report(ledger, C1)
    v04 = next(r for r in report.recipients if r.volunteer_id == "v04")
    assert v04.diagnostic == "" and v04.smtp_reply == ""
    run = opened(browser, report_as_html(report), tmp_path / "report.html")
    assert SOFT_DIAG.split("; ")[1] not in run("return document.body.innerText")


def test_report_has_a_print_stylesheet(browser: Any, ledger: Ledger, tmp_path: Path) -> None:
    build(ledger)
    run = opened(browser, report_as_html(campaign_report(ledger, C1)), tmp_path / "report.html")
    rules = run(
        "return Array.from(document.styleSheets[0].cssRules)"
        ".filter(r => r.media && r.media.mediaText === 'print').map(r => r.cssText).join(' ')"
    )
    assert "@page" in rules and "table-header-group" in rules
    # Column headings repeat on every printed page.
    assert run("return document.querySelectorAll('table.recipients thead').length") == 1


# Each word of the text inside the elements `arguments[0]` selects, where it is laid out on
# more than one line: a word broken inside ("campaig/n", "19/6", "volunteers-/ja@").
SPLIT_WORDS = """
const split = [];
for (const element of document.querySelectorAll(arguments[0])) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      const lines = new Set(Array.from(range.getClientRects())
        .filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (lines.size > 1) split.push(word[0]);
    }
  }
}
return split;
"""


def test_headers_and_numbers_never_break_inside_a_word(
    browser: Any, ledger: Ledger, tmp_path: Path
) -> None:
    build(ledger)
    append(
        ledger,
        [
            EventDraft(
                EventKind.TEST_SENT,
                campaign_id=C1,
                data={"to": "volunteers-ja@hmr.test", "as": "v02", "reply": "250 2.0.0 Ok"},
            )
        ],
        at("10:30"),
    )
    report = long_cells(campaign_report(ledger, C1))
    # Wide figures, and an address with hyphens, where the columns are narrowest.
    counts = {state: n * 1000 + 196 for state, n in report.counts.items()}
    by_exposure = {
        k: {s: n * 1000 + 196 for s, n in v.items()} for k, v in report.counts_by_exposure.items()
    }
    first, second, *rest = report.recipients
    hyphens = dataclasses.replace(second, email="margaret.vaughan-williams@volunteers-ja.example")
    report = dataclasses.replace(
        report,
        counts=counts,
        counts_by_exposure=by_exposure,
        recipients=(first, hyphens, *rest),
    )
    html = report_as_html(report, time_zone="Europe/London")
    run = opened(browser, html, tmp_path / "report.html")
    assert run("return window.innerWidth") == WIDTH
    assert run("return document.documentElement.scrollWidth") <= WIDTH
    checked = run("return document.querySelectorAll('th, td.n, .time, .nw').length")
    assert checked > 100
    # Headings (every table's), numbers, times and the parts of addresses: whole words.
    assert run(SPLIT_WORDS, "th, td.n, .time, .nw") == []
    # ... each heading inside its own cell, not spilling over the next.
    spilled = run(
        "return Array.from(document.querySelectorAll('th'))"
        ".filter(th => th.scrollWidth > th.clientWidth + 1).map(th => th.innerText)"
    )
    assert spilled == []
    text = run("return document.body.innerText")
    assert "volunteers-ja@hmr.test" in text.replace("\n", "")
    assert "only in the volunteer database" in text and "database_only" not in text
