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
from report_scenario import C1, SOFT_DIAG, build

from notifier.ledger import Ledger
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
