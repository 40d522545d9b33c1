"""The proof sheet: one self-contained page with every distinct shape of a campaign once,
English and Japanese side by side, with counts and an example volunteer id; opened in a
real headless Chromium to prove it loads nothing and shows everything."""

from __future__ import annotations

import base64
import io
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import chromium
from conftest import REPO, Notifier, with_contact, write_org_config
from pypdf import PdfReader
from selenium.webdriver.common.print_page_options import PrintOptions
from selenium.webdriver.remote.webdriver import WebDriver
from test_check import roster

from notifier.audience import reached_variants
from notifier.campaign import load_campaign
from notifier.check import LINK_PATTERN, CheckReport, check_campaign
from notifier.ledger import Ledger, volunteer_to_row
from notifier.proof import group_shapes, proof_sheet

CAMPAIGNS = ("2020-03-breach", "2020-04-29-update")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Anything that would make a page fetch, run or link to something.
FORBIDDEN = re.compile(
    r"<script|<link|<img|<iframe|<object|<embed|<form|<base|<a\b|\bsrc\s*=|\bhref\s*=|"
    r"url\(|@import|https?://",
    re.IGNORECASE,
)


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in roster()])
    return ledger


def checked(ledger: Ledger, campaign_id: str) -> tuple[str, CheckReport]:
    campaign = with_contact(load_campaign(campaign_id))
    report = check_campaign(ledger, campaign)
    return proof_sheet(campaign, report), report


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_proof_shows_every_shape_once_side_by_side(filled: Ledger, campaign_id: str) -> None:
    page, report = checked(filled, campaign_id)
    assert report.ok
    groups = group_shapes(report.shapes)
    # 120 people: both locales × three exposures × the data sets of the test roster; the
    # update before the first notice has gone out, in both its wordings (the first
    # notice reached them, or expired on the way).
    wordings = len(reached_variants(load_campaign(campaign_id)))
    assert wordings == (2 if campaign_id == "2020-04-29-update" else 1)
    assert len(report.shapes) == 2 * len(groups)
    assert report.volunteers == 120
    assert sum(s.volunteers for s in report.shapes) == 120 * wordings
    if wordings == 2:
        assert page.count("(earlier notice not received)") == len(groups)  # index, sections
    assert page.count('<section class="shape"') == len(groups)
    for shape in report.shapes:
        wording = {None: "only", True: "earlier-notice-reached"}.get(
            shape.reached, "earlier-notice-not-received"
        )
        cell = (
            f'data-locale="{shape.locale}" data-volunteers="{shape.volunteers}" '
            f'data-example="{shape.example}" data-wording="{wording}"'
        )
        assert page.count(cell) == 1, cell
    # English and Japanese of one shape sit in one row of one table.
    for section in page.split('<section class="shape"')[1:]:
        assert 'data-locale="en"' in section and 'data-locale="ja"' in section
    assert "notifier check: no problems." in page


def test_proof_is_self_contained_and_shows_no_ones_name(filled: Ledger) -> None:
    page, _report = checked(filled, "2020-03-breach")
    assert not FORBIDDEN.search(page)
    assert not LINK_PATTERN.search(page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for family in ("Smith", "O&#39;Neill", "Dąbrowski", "Nguyen", "鈴木", "田中", "佐藤"):
        assert family not in page
    assert "Dear [Given name] [Family name]," in page
    assert "〔姓〕 〔名〕 様" in page
    # The headers as composed for sending, in every cell.
    assert (
        page.count("<b>From:</b> &#34;Data Protection Officer, HMR&#34; &lt;dpo@hmr.test&gt;") >= 11
    )
    assert "<b>Reply-To:</b> HMR ボランティア窓口 &lt;volunteers-ja@hmr.test&gt;" in page


def test_proof_lists_the_problems_at_the_top(ledger: Ledger) -> None:
    people = roster(12)
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    # No contact point configured, and the shipped campaign's own example addresses.
    campaign = load_campaign("2020-03-breach")
    page = proof_sheet(campaign, check_campaign(ledger, campaign))
    assert re.search(r"found \d+ problems: do not approve", page)
    assert "sender.from is the shipped example&#39;s" in page
    assert "no contact point configured" in page
    assert page.index("do not approve") < page.index('<section class="shape"')
    assert "NOT CONFIGURED" in page


def test_check_cli_writes_the_proof_privately(filled: Ledger, notifier: Notifier) -> None:
    filled.close()
    proof = notifier.cwd / "proof.html"
    without_contact = notifier("check", "2020-03-breach", "--proof", str(proof))
    assert without_contact.exit_code == 1  # no [contact]: the proof is written all the same
    assert "do not approve" in proof.read_text(encoding="utf-8")
    write_org_config(notifier.cwd)
    result = notifier("check", "2020-04-29-update", "--proof", str(proof))
    assert result.exit_code == 0, result.output
    assert f"wrote the proof sheet {proof}" in result.stderr
    assert stat.S_IMODE(proof.stat().st_mode) == 0o600
    assert "Proof sheet: 2020-04-29-update" in proof.read_text(encoding="utf-8")


# --- in a real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from chromium(1200, 900)


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_proof_in_chromium(
    browser: WebDriver, filled: Ledger, tmp_path: Path, campaign_id: str
) -> None:
    page, report = checked(filled, campaign_id)
    path = tmp_path / f"proof-{campaign_id}.html"
    path.write_text(page, encoding="utf-8")
    os.chmod(path, 0o600)
    browser.get(path.as_uri())
    run = browser.execute_script
    assert browser.title == f"Proof: {campaign_id}"
    assert run("return document.readyState") == "complete"
    # Nothing runs, links or loads: no scripts, links, images, frames, fetched resources.
    assert run("return document.scripts.length") == 0
    assert run("return document.links.length") == 0
    assert run("return document.images.length") == 0
    assert run("return document.querySelectorAll('iframe, object, embed, link').length") == 0
    assert run("return performance.getEntriesByType('resource').length") == 0
    # Every shape, once, with its count and example.
    groups = group_shapes(report.shapes)
    assert run("return document.querySelectorAll('section.shape').length") == len(groups)
    cells = run(
        "return Array.from(document.querySelectorAll('td[data-locale]')).map(td => "
        "[td.dataset.locale, Number(td.dataset.volunteers), td.dataset.example, "
        "td.querySelector('.notice').innerText.length])"
    )
    expected = sorted((s.locale, s.volunteers, s.example) for s in report.shapes)
    assert sorted(tuple(c[:3]) for c in cells) == expected
    assert all(length > 1000 for *_, length in cells)  # a whole notice in each
    # ... each with all seven sections of a notice, headed in its own language.
    headings = run(
        "return Array.from(document.querySelectorAll('td[data-locale] .notice'))"
        ".map(n => Array.from(n.querySelectorAll('h2')).map(h => h.innerText))"
    )
    assert len(headings) == len(report.shapes)
    assert all(len(h) == 7 for h in headings)
    first = {tuple(h) for h in headings}
    assert {h[0] for h in first} == {"What happened", "事案の概要"}


# --- on paper -------------------------------------------------------------------------------

A4_POINTS = (595.0, 842.0)  # 210 x 297 mm in PDF points, to within a point


def printed(browser: WebDriver, path: Path) -> PdfReader:
    """The page at `path` as Chromium prints it on A4 (what "Print" in the browser makes):
    a PDF, read back with pypdf."""
    browser.get(path.as_uri())
    options = PrintOptions()
    options.page_width, options.page_height = 21.0, 29.7  # centimetres: A4
    return PdfReader(io.BytesIO(base64.b64decode(browser.print_page(options))))


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_proof_prints_to_one_a4_page_per_version_at_most(
    browser: WebDriver, notifier: Notifier, campaign_id: str
) -> None:
    """The example roster's proof sheet printed from the browser: at most one A4 page per
    version of the notice (language × exposure × data held), every version on paper.
    Each section used to start a page of its own: 107 pages for 26 versions."""
    write_org_config(notifier.cwd)
    imported = notifier("roster", "import", str(REPO / "examples" / "volunteers.csv"))
    assert imported.exit_code == 0, imported.output
    proof = notifier.cwd / "proof.html"
    result = notifier("check", campaign_id, "--proof", str(proof))
    assert result.exit_code == 0, result.output
    versions = int(re.findall(r"\((\d+) versions of the notice\)", result.stderr)[0])
    html = proof.read_text(encoding="utf-8")
    assert html.count("<td lang=") == versions and versions >= 26
    assert f"<th>Versions of the notice</th><td>{versions} (" in html
    # The reader's words, not the code's: no "shape" anywhere the sheet says something.
    said = re.sub(r"<style>.*?</style>|<[^>]+>", " ", html, flags=re.DOTALL)
    assert "shape" not in said.casefold()

    pdf = printed(browser, proof)
    assert all(
        abs(float(page.mediabox.width) - A4_POINTS[0]) < 1
        and abs(float(page.mediabox.height) - A4_POINTS[1]) < 1
        for page in pdf.pages
    )
    assert len(pdf.pages) <= versions, f"{len(pdf.pages)} A4 pages for {versions} versions"
    # ... and nothing was left off the paper to get there: every version is printed, under
    # its language and the people who get it (pypdf reads some CJK as radicals: NFKC).
    text = " ".join(unicodedata.normalize("NFKC", page.extract_text()) for page in pdf.pages)
    text = " ".join(text.split())
    labels = re.findall(
        r'<p class="who"><span class="lang">([^<]+):</span> ([^<]+)</p>', html.replace("&amp;", "&")
    )
    assert len(labels) == versions
    for language, who in labels:
        assert f"{unicodedata.normalize('NFKC', language)}: {who}" in text
    assert text.count("Dear [Given name] [Family name],") == html.count(
        "<p>Dear [Given name] [Family name],</p>"
    )
