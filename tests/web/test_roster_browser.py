"""The roster in a real headless Chromium: sign in with the printed address, upload the
example roster (its rejected rows shown), import it, find a Japanese volunteer and read
their notice in both languages, the HTML part in its sandboxed frame."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import chromium, save_screenshot
from conftest import REPO, write_org_config

from notifier.config import Settings, load_settings
from notifier.service import VolunteerQuery, Workspace
from notifier.web.app import Console
from notifier.web.server import console_in_thread

WAIT = 20.0


@pytest.fixture
def browser() -> Iterator[Any]:
    yield from chromium(1000, 900)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = write_org_config(tmp_path)
    found = load_settings(config, ledger=tmp_path / "notifier.db", env={})
    Workspace(found).ledger(create=True).close()
    return found


@pytest.fixture
def running(settings: Settings) -> Iterator[Console]:
    with console_in_thread(settings) as console:
        yield console


def wait_for(browser: Any, condition: str) -> None:
    """Wait (bounded) until the page's JavaScript `condition` holds."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(lambda b: b.execute_script(f"return {condition}"))


def test_upload_import_and_read_a_japanese_volunteers_notice(
    browser: Any, running: Console, settings: Settings
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(running.address())
    assert "token=" not in browser.current_url  # gone from the address bar
    browser.get(f"{running.origin}/roster")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=roster]").is_displayed()
    browser.find_element(By.ID, "roster").send_keys(str(REPO / "examples" / "volunteers.csv"))
    browser.find_element(By.CSS_SELECTOR, "form[action='/roster/preview'] button").click()
    wait_for_or_show(browser, "document.querySelector('#confirm-import') !== null")
    rejected = browser.find_elements(By.CSS_SELECTOR, "#rejected ~ table tbody tr")
    assert len(rejected) >= 6
    assert "200 rows, 194 valid, 6 rejected" in browser.find_element(By.TAG_NAME, "main").text
    save_screenshot(browser, "roster-preview")

    browser.find_element(By.ID, "confirm-import").click()
    wait_for(browser, "document.body.innerText.includes('194 added')")
    save_screenshot(browser, "roster-imported")

    with Workspace(settings) as ws:
        person = next(v for v in ws.volunteers(VolunteerQuery(locales=("ja",))) if v.family_name)
    browser.get(f"{running.origin}/volunteers")
    search = browser.find_element(By.ID, "q")
    search.send_keys(person.family_name)
    search.submit()
    wait_for(browser, "document.querySelectorAll('tbody th a').length > 0")
    links = browser.find_elements(By.CSS_SELECTOR, "tbody th a")
    next(link for link in links if link.text == person.volunteer_id).click()
    wait_for(browser, "document.querySelectorAll('article.version').length >= 2")

    versions = browser.find_elements(By.CSS_SELECTOR, "article.version")
    languages = [v.get_attribute("lang") for v in versions]
    assert languages[:2] == ["ja", "en"]
    japanese, english = versions[0], versions[1]
    assert japanese.is_displayed() and english.is_displayed()
    assert re.search("[\u3040-\u30ff]", japanese.find_element(By.CSS_SELECTOR, "pre").text)
    assert person.family_name in japanese.text
    # Side by side at 1,000 px.
    assert japanese.location["y"] == english.location["y"]
    assert japanese.location["x"] < english.location["x"]
    download = browser.find_element(By.CSS_SELECTOR, "a[download][href$='.eml']")
    assert download.is_displayed()
    frame = japanese.find_element(By.CSS_SELECTOR, "iframe.html")
    assert frame.is_displayed() and frame.size["height"] > 100
    browser.switch_to.frame(frame)
    try:
        wait_for(browser, "document.body && document.body.innerText.length > 100")
        assert re.search("[\u3040-\u30ff]", browser.find_element(By.TAG_NAME, "body").text)
    finally:
        browser.switch_to.default_content()
    browser.execute_script("arguments[0].scrollIntoView()", japanese)
    save_screenshot(browser, "volunteer-ja")
    # Nothing the console served broke its own policy.
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry.get("message", "")
    ]
    assert errors == []


def wait_for_or_show(browser: Any, condition: str) -> None:
    try:
        wait_for(browser, condition)
    except Exception:
        raise AssertionError(browser.find_element("tag name", "main").text) from None
