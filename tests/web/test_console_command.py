"""`notifier console` as a person runs it: a real process that prints its one-time
address, serves it, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from console_client import Client, signed_in
from processes import clean_env, finished, notifier_command, start_notifier
from smtp_helpers import ScriptedHandler, recipients

from notifier.config import Settings
from notifier.service import SendSpec, Workspace
from notifier.sink import Sink

WAIT_LINES = 50  # lines of output read, at most, looking for the address
WAIT_SECONDS = 30.0
FIRST = "2020-03-breach"


def read_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for _ in range(WAIT_LINES):
        line = proc.stdout.readline()
        if line.startswith("http://"):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no address printed; exit {proc.poll()}")


def test_the_console_prints_its_address_serves_it_and_stops_on_ctrl_c(
    web_settings: Settings,
) -> None:
    proc = start_notifier(web_settings.ledger, "console", "--port", "0")
    try:
        address = read_address(proc)
        origin = address.split("/?", 1)[0]
        assert origin.startswith("http://127.0.0.1:")
        browser = signed_in(origin, address)
        page = browser.get("/campaigns")
        assert page.status == 200 and "2020-03-breach" in page.text
        assert Client(origin).get("/campaigns").status == 403
    finally:
        proc.send_signal(signal.SIGINT)
    code, out, err = finished(proc)
    assert code == 0, err
    assert "The console has stopped." in out
    assert "Traceback" not in err


def test_another_address_than_loopback_is_warned_about(web_settings: Settings) -> None:
    """An address of the documentation range, which this machine does not have: the
    warning comes before the attempt (no test server listens beyond 127.0.0.1)."""
    proc = start_notifier(web_settings.ledger, "console", "--port", "0", "--host", "192.0.2.1")
    code, _out, err = finished(proc)
    assert "Warning: listening on 192.0.2.1: other machines" in err
    assert code == 2
    assert "cannot listen on 192.0.2.1:0" in err


def test_a_taken_port_is_refused_with_what_to_do(web_settings: Settings, tmp_path: Path) -> None:
    first = start_notifier(web_settings.ledger, "console", "--port", "0")
    try:
        port = read_address(first).split("/?", 1)[0].rsplit(":", 1)[1]
        second = start_notifier(web_settings.ledger, "console", "--port", port)
        code, _out, err = finished(second)
        assert code == 2
        assert f"cannot listen on 127.0.0.1:{port}" in err
        assert "choose one with --port" in err
    finally:
        first.send_signal(signal.SIGINT)
        finished(first)


def test_ctrl_c_on_a_console_mid_send_finishes_what_is_in_flight_and_leaves_the_rest_owed(
    web_settings: Settings,
) -> None:
    """The person stops the console while it sends: the message in flight is finished and
    recorded, the rest stay owed (none left in flight), and the next send reaches
    everyone else once."""
    handler = ScriptedHandler()
    with Workspace(web_settings) as ws:
        everyone = [m.volunteer.email for m in ws.cohort(FIRST) if m.included]
    handler.script = {everyone[3].casefold(): ["hold", "ok"]}
    with Sink(handler=handler) as sink:
        env = {**clean_env(), "NOTIFIER_SMTP_URL": sink.url, "NOTIFIER_RATE": "50"}
        proc = subprocess.Popen(
            notifier_command(web_settings.ledger, "console", "--port", "0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=web_settings.ledger.parent,
            env=env,
        )
        try:
            address = read_address(proc)
            browser = signed_in(address.split("/?", 1)[0], address)
            assert browser.post(f"/campaigns/{FIRST}/approve", {"by": "Jane Doe"}).status == 303
            assert browser.post(f"/campaigns/{FIRST}/send", {}).status == 303
            assert handler.holding.wait(WAIT_SECONDS), "the send never reached the held message"
        finally:
            proc.send_signal(signal.SIGINT)
            handler.release.set()
        code, out, err = finished(proc)
        assert code == 0, err
        assert "The console has stopped." in out and "Traceback" not in err
        with Workspace(web_settings) as ws:
            states = ws.ledger().state_counts(FIRST)
            assert set(states) == {"sent", "pending"}  # nothing left in flight, or unknown
            assert 4 <= states["sent"] < len(everyone)
            ws.send(FIRST, SendSpec(smtp_url=sink.url), handle_signals=False)
        assert recipients(sink.messages) == dict.fromkeys(everyone, 1)
