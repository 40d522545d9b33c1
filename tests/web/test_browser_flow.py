"""A comms officer's whole week in a real headless Chromium, on a fresh ledger: sign in
with the printed address; upload the example roster and see its rejected rows; import
it; check the first notice and read its proof sheet; read a Japanese volunteer's notice
in both languages; send a test to themselves into the local SMTP server; approve; send
and watch it to completion; open the report; then the 29 April follow-up: its cohort by
history, its send. A screenshot at each step (tests/chromium.py says where)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from chromium import chromium, save_screenshot, waiting
from conftest import REPO
from smtp_helpers import recipients

from notifier.config import Settings
from notifier.service import VolunteerQuery, Workspace
from notifier.sink import Sink
from notifier.web.console import Console
from notifier.web.server import console_in_thread

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
ME = "me@our-office.example"
WAIT = 30.0


@pytest.fixture
def driver() -> Iterator[Any]:
    yield from chromium(1000, 900)


@pytest.fixture
def fresh_settings(empty_settings: Settings, sink: Sink) -> Settings:
    """The tests' organisation, sending into `sink`, with an empty ledger."""
    return dataclasses.replace(empty_settings, smtp_url=sink.url)


@pytest.fixture
def fresh_console(fresh_settings: Settings) -> Iterator[Console]:
    with console_in_thread(fresh_settings) as running:
        yield running


def test_the_whole_flow_from_upload_to_the_follow_up(
    driver: Any, fresh_settings: Settings, fresh_console: Console, sink: Sink
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait = waiting(driver, WAIT)
    origin = fresh_console.origin

    def shows(text: str) -> None:
        try:
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), text))
        except Exception:
            save_screenshot(driver, "failed")
            raise AssertionError(f"not shown: {text!r} in {driver.current_url}") from None

    def press(label: str) -> None:
        driver.find_element(By.XPATH, f"//button[normalize-space()={label!r}]").click()

    # Sign in with the printed address: the token leaves the address bar.
    driver.get(fresh_console.address())
    assert "token=" not in driver.current_url

    # The roster: upload, every rejected row shown, then the import.
    driver.get(f"{origin}/roster")
    driver.find_element(By.ID, "roster").send_keys(str(REPO / "examples" / "volunteers.csv"))
    driver.find_element(By.CSS_SELECTOR, "form[action='/roster/preview'] button").click()
    shows("200 rows, 194 valid, 6 rejected")
    rejected = driver.find_elements(By.CSS_SELECTOR, "#rejected ~ table tbody tr")
    assert len(rejected) >= 6
    save_screenshot(driver, "01-roster-preview")
    driver.find_element(By.ID, "confirm-import").click()
    shows("194 added")
    save_screenshot(driver, "02-roster-imported")

    # The first notice: its check and proof sheet.
    driver.get(f"{origin}/campaigns")
    shows("Each campaign")
    driver.find_element(By.LINK_TEXT, FIRST).click()
    shows("Not checked in this console yet")
    press("Run the check")
    shows("The check passed")
    save_screenshot(driver, "03-campaign-checked")
    driver.find_element(By.LINK_TEXT, "Open the proof sheet").click()
    wait.until(lambda d: d.title.startswith("Proof"))
    assert driver.execute_script("return document.scripts.length") == 0
    save_screenshot(driver, "04-proof-sheet")

    # A Japanese volunteer's notice, in both languages, its HTML part in a sandboxed frame.
    with Workspace(fresh_settings) as ws:
        person = next(v for v in ws.volunteers(VolunteerQuery(locales=("ja",))) if v.family_name)
    driver.get(f"{origin}/volunteers")
    search = driver.find_element(By.ID, "q")
    search.send_keys(person.family_name)
    search.submit()
    wait.until(lambda d: d.find_elements(By.LINK_TEXT, person.volunteer_id))
    driver.find_element(By.LINK_TEXT, person.volunteer_id).click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.version")) >= 2)
    japanese, english = driver.find_elements(By.CSS_SELECTOR, "article.version")[:2]
    assert (japanese.get_attribute("lang"), english.get_attribute("lang")) == ("ja", "en")
    assert re.search("[\u3040-\u30ff]", japanese.find_element(By.CSS_SELECTOR, "pre").text)
    assert person.family_name in japanese.text
    assert japanese.location["y"] == english.location["y"]  # side by side at 1,000 px
    assert driver.find_element(By.CSS_SELECTOR, "a[download][href$='.eml']").is_displayed()
    frame = japanese.find_element(By.CSS_SELECTOR, "iframe.html")
    driver.switch_to.frame(frame)
    try:
        wait.until(lambda d: re.search("[\u3040-\u30ff]", d.find_element(By.TAG_NAME, "body").text))
    finally:
        driver.switch_to.default_content()
    driver.execute_script("arguments[0].scrollIntoView()", japanese)
    save_screenshot(driver, "05-volunteer-ja")

    # A test to myself, then the approval.
    driver.get(f"{origin}/campaigns/{FIRST}")
    driver.find_element(By.ID, "test-to").send_keys(ME)
    press("Send me a test")
    shows("test messages accepted")
    save_screenshot(driver, "06-test-send")
    tests = len(sink.messages)
    assert tests >= 2 and all(m.rcpt_tos == (ME,) for m in sink.messages)
    driver.find_element(By.LINK_TEXT, f"Back to {FIRST}").click()
    driver.find_element(By.ID, "approve-by").send_keys("Jane Doe")
    press("Approve this content")
    shows("approved by Jane Doe")
    driver.get(f"{origin}/campaigns/{FIRST}")
    shows("approved by Jane Doe")
    save_screenshot(driver, "07-campaign")  # the README's picture of the campaign page

    # The send: the dry run, then progress to completion; everyone once.
    driver.find_element(By.PARTIAL_LINK_TEXT, "Send…").click()
    shows("What a send would do now")
    save_screenshot(driver, "08-send-plan")
    driver.find_element(By.ID, "confirm-send").click()
    shows("Done.")
    save_screenshot(driver, "09-sent")
    with Workspace(fresh_settings) as ws:
        everyone = [m.volunteer.email for m in ws.cohort(FIRST) if m.included]
    assert len(everyone) == 194
    assert recipients(sink.messages[tests:]) == dict.fromkeys(everyone, 1)

    driver.find_element(By.LINK_TEXT, "The report").click()
    wait.until(lambda d: FIRST in d.page_source and "<script" not in d.page_source)
    save_screenshot(driver, "10-report")

    # The follow-up: the 29 April update, to the Japanese readers the notice reached.
    driver.get(f"{origin}/campaigns/{UPDATE}")
    driver.find_element(By.ID, "approve-by").send_keys("Jane Doe")
    press("Approve this content")
    shows("approved by Jane Doe")
    driver.find_element(By.LINK_TEXT, "Choose the cohort by history").click()
    shows("volunteers are in the cohort")
    driver.find_element(By.CSS_SELECTOR, "input[name=locale][value=ja]").click()
    status = driver.find_element(By.ID, "cohort-status")
    status.clear()
    status.send_keys("sent")
    press("Show this cohort")
    shows("Left out, and why")
    count = int(driver.find_element(By.CSS_SELECTOR, "#cohort-count strong").text)
    assert count > 0
    assert driver.find_element(By.CSS_SELECTOR, "#members td[lang=ja]").text
    save_screenshot(driver, "11-follow-up-cohort")
    driver.find_element(By.ID, "send-cohort").click()
    shows(f"Send {count} messages now")
    before = len(sink.messages)
    driver.find_element(By.ID, "confirm-send").click()
    shows("Done.")
    save_screenshot(driver, "12-follow-up-sent")
    assert len(sink.messages) - before == count

    # Nothing the console served broke its own policy.
    policy_errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry.get("message", "")
    ]
    assert policy_errors == []
