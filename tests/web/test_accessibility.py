"""The console's pages as people with different needs use them, in a real headless
Chromium: every control labelled, text contrast at least WCAG AA, nothing wider than the
window at 1,000 px or at 200 % zoom, and every control reachable with the Tab key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chromium import chromium

from notifier.web.console import Console

PAGES = (
    "/campaigns",
    "/campaigns/2020-03-breach",
    "/campaigns/2020-03-breach/send",
    "/campaigns/2020-04-29-update/cohort",
    "/roster",
    "/volunteers",
    "/volunteers/HMR-0005",
    "/bounces",
    "/ledger",
)

# Every visible form control and its accessible name (a <label>, aria-label or
# aria-labelledby; a button its text).
UNLABELLED = """
return [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby')
               && !(e.tagName === 'BUTTON' && e.innerText.trim()))
  .map(e => e.outerHTML.slice(0, 120));
"""

# Text whose contrast with what is behind it is under WCAG AA: 4.5:1, or 3:1 for large
# text (24 px, or 18.66 px bold).
LOW_CONTRAST = """
function rgba(text) {
  const m = text.match(/rgba?\\(([^)]+)\\)/);
  const p = m[1].split(',').map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
function luminance([r, g, b]) {
  const c = [r, g, b].map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
function background(e) {
  for (; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) return c;
  }
  return [255, 255, 255, 1];
}
const low = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const e = n.parentElement;
  if (!n.textContent.trim() || !e || e.offsetParent === null) continue;
  const style = getComputedStyle(e);
  const fg = rgba(style.color), bg = background(e);
  const [l1, l2] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
  const ratio = (l1 + 0.05) / (l2 + 0.05);
  const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
  const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  const text = n.textContent.trim().slice(0, 40);
  if (ratio < needed) low.push(`${e.tagName} "${text}" ${ratio.toFixed(2)}`);
}
return low;
"""

OVERFLOW = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"


@pytest.fixture
def driver() -> Iterator[Any]:
    yield from chromium(1000, 900)


def test_every_page_is_labelled_readable_and_fits_at_1000_px_and_200_percent(
    driver: Any, console: Console
) -> None:
    driver.get(console.address())
    problems = []
    for zoom in (1, 2):
        # 200 % zoom: the same window, half as many CSS pixels across.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": 1000 // zoom,
                "height": 900 // zoom,
                "deviceScaleFactor": zoom,
                "mobile": False,
            },
        )
        for path in PAGES:
            driver.get(console.origin + path)
            assert driver.find_element("tag name", "h1").text, path
            where = f"{path} at {zoom * 100} %"
            problems += [f"{where}: unlabelled {e}" for e in driver.execute_script(UNLABELLED)]
            problems += [f"{where}: contrast {e}" for e in driver.execute_script(LOW_CONTRAST)]
            wider = driver.execute_script(OVERFLOW)
            if wider > 0:
                problems.append(f"{where}: {wider} px wider than the window")
    assert problems == [], "\n".join(problems)


def test_the_keyboard_reaches_every_control_of_a_campaigns_page(
    driver: Any, console: Console
) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(console.address())
    driver.get(console.origin + "/campaigns/2020-03-breach")
    controls = driver.execute_script(
        "return [...document.querySelectorAll('a[href], button, input, select, textarea')]"
        ".filter(e => e.type !== 'hidden' && e.offsetParent !== null)"
    )
    assert controls
    reached = []
    for _ in range(len(controls) + 5):  # bounded: once round, and a little more
        driver.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(driver.switch_to.active_element)
    missed = [c.get_attribute("outerHTML")[:80] for c in controls if c not in reached]
    assert missed == []
