"""A real headless Chromium (Debian's `chromium` and `chromium-driver`), driven with
Selenium, for the tests that open our HTML pages the way a reader does."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chromium(width: int, height: int) -> Iterator[Any]:
    """A headless Chromium whose window is `width` x `height` CSS pixels; skips the test
    where Chromium or Selenium is not installed."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="notifier-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def waiting(driver: Any, seconds: float) -> Any:
    """A WebDriverWait that looks again when the page reloads under it: a page that
    refreshes itself (the progress page at the end of a send) makes an element found a
    moment ago stale, which is a reason to look again, not a failure."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver,
        seconds,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def save_screenshot(driver: Any, name: str) -> Path:
    """Save what the browser shows as NAME.png in $NOTIFIER_SCREENSHOTS (by default
    build/console-screenshots/ in the repository): the console tests' artefacts."""
    folder = Path(
        os.environ.get("NOTIFIER_SCREENSHOTS")
        or Path(__file__).resolve().parent.parent / "build" / "console-screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
    return path
