"""A comms officer's whole campaign in a real headless Chromium: sign in with the printed
address, the campaign page, the check, the proof sheet, a test send into the local SMTP
server, approval, the send and its progress to completion, the report; then the 29 April
follow-up: its cohort by history, its send. A screenshot at each step (tests/chromium.py
says where)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chromium import chromium, save_screenshot
from smtp_helpers import recipients

from notifier.config import Settings
from notifier.service import Workspace
from notifier.sink import Sink
from notifier.web.app import Console

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
ME = "me@our-office.example"
WAIT = 20.0


@pytest.fixture
def driver() -> Iterator[Any]:
    yield from chromium(1000, 900)


def test_a_campaign_from_check_to_report_then_the_follow_up(
    driver: Any, web_settings: Settings, sending_console: Console, sink: Sink
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)

    def shows(text: str) -> None:
        try:
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), text))
        except Exception:
            save_screenshot(driver, "failed")
            raise AssertionError(f"not shown: {text!r} in {driver.current_url}") from None

    def press(label: str) -> None:
        driver.find_element(By.XPATH, f"//button[normalize-space()={label!r}]").click()

    # Sign in with the printed address: the token leaves the address bar.
    driver.get(sending_console.address())
    assert "token=" not in driver.current_url
    shows("Each campaign")
    save_screenshot(driver, "01-campaigns")

    driver.find_element(By.LINK_TEXT, FIRST).click()
    shows("Not checked in this console yet")
    press("Run the check")
    shows("The check passed")
    save_screenshot(driver, "02-campaign-checked")

    driver.find_element(By.LINK_TEXT, "Open the proof sheet").click()
    wait.until(lambda d: d.title.startswith("Proof"))
    assert driver.execute_script("return document.scripts.length") == 0
    save_screenshot(driver, "03-proof-sheet")
    driver.back()

    driver.find_element(By.ID, "test-to").send_keys(ME)
    press("Send me a test")
    shows("test messages accepted")
    save_screenshot(driver, "04-test-send")
    tests = len(sink.messages)
    assert tests >= 2 and all(m.rcpt_tos == (ME,) for m in sink.messages)
    driver.find_element(By.LINK_TEXT, f"Back to {FIRST}").click()

    driver.find_element(By.ID, "approve-by").send_keys("Jane Doe")
    press("Approve this content")
    shows("approved by Jane Doe")
    save_screenshot(driver, "05-campaign")  # the README's picture of the campaign page

    driver.find_element(By.PARTIAL_LINK_TEXT, "Send…").click()
    shows("What a send would do now")
    save_screenshot(driver, "06-send-plan")
    driver.find_element(By.ID, "confirm-send").click()
    shows("Done.")  # the page polled (or reloaded) until the send ended
    save_screenshot(driver, "07-sent")
    with Workspace(web_settings) as ws:
        everyone = [m.volunteer.email for m in ws.cohort(FIRST) if m.included]
    assert recipients(sink.messages[tests:]) == dict.fromkeys(everyone, 1)

    driver.find_element(By.LINK_TEXT, "The report").click()
    wait.until(lambda d: FIRST in d.page_source and "<script" not in d.page_source)
    save_screenshot(driver, "08-report")

    # The follow-up: the 29 April update, to the Japanese readers the notice reached.
    driver.get(f"{sending_console.origin}/campaigns/{UPDATE}")
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
    save_screenshot(driver, "09-follow-up-cohort")
    driver.find_element(By.ID, "send-cohort").click()
    shows(f"Send {count} messages now")
    before = len(sink.messages)
    driver.find_element(By.ID, "confirm-send").click()
    shows("Done.")
    save_screenshot(driver, "10-follow-up-sent")
    assert len(sink.messages) - before == count
