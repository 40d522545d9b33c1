"""The send's progress page in a real headless Chromium, with its script: the figures
change in place while the send runs (no reload), the stop button stops it, and the page
shows the end."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from chromium import chromium, save_screenshot, waiting
from smtp_helpers import ScriptedHandler

from notifier.config import Settings
from notifier.service import Workspace
from notifier.sink import Sink
from notifier.web.server import console_in_thread

FIRST = "2020-03-breach"
WAIT = 30.0


@pytest.fixture
def driver() -> Iterator[Any]:
    yield from chromium(1000, 900)


def test_progress_updates_in_place_and_the_stop_button_stops(
    driver: Any, web_settings: Settings
) -> None:
    from selenium.webdriver.common.by import By

    with Workspace(web_settings) as ws:
        everyone = [m.volunteer.email for m in ws.cohort(FIRST) if m.included]
    handler = ScriptedHandler()
    handler.script = {everyone[5].casefold(): ["hold", "ok"]}
    wait = waiting(driver, WAIT)
    with Sink(handler=handler) as sink:
        settings = dataclasses.replace(web_settings, smtp_url=sink.url, rate=50.0)
        with console_in_thread(settings) as console:
            driver.get(console.address())
            campaign_page = f"{console.origin}/campaigns/{FIRST}"
            driver.get(campaign_page)
            driver.find_element(By.ID, "approve-by").send_keys("Jane Doe")
            approve = "//button[normalize-space()='Approve this content']"
            driver.find_element(By.XPATH, approve).click()
            wait.until(lambda d: "approved by Jane Doe" in d.page_source)
            driver.get(f"{campaign_page}/send")
            driver.find_element(By.ID, "confirm-send").click()
            try:
                assert handler.holding.wait(WAIT), "the send never reached the held message"
                # The script took the page over: no meta refresh, the figures updated in
                # place from the JSON twin while the page stayed the same document.
                wait.until(
                    lambda d: d.execute_script(
                        "return document.querySelector('meta[http-equiv=refresh]') === null"
                    )
                )
                marker = driver.execute_script("window.notReloaded = true; return 1")
                assert marker == 1
                sent = (By.CSS_SELECTOR, "[data-figure=sent]")
                wait.until(lambda d: int(d.find_element(*sent).text) >= 5)
                assert driver.execute_script("return window.notReloaded === true")
                save_screenshot(driver, "progress-live")
                driver.find_element(By.ID, "stop-send").click()
            finally:
                handler.release.set()
            wait.until(lambda d: "Stopped." in d.find_element(By.TAG_NAME, "main").text)
            save_screenshot(driver, "progress-stopped")
    with Workspace(web_settings) as ws:
        states = ws.ledger().state_counts(FIRST)
    assert set(states) == {"sent", "pending"} and states["sent"] < len(everyone)
