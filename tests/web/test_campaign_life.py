"""A campaign's life in the console, over HTTP: the check and its problems, the proof
sheet, approval (refused while the check fails; stale once the content changes), a test
send, the dry run before the confirm, the send to completion, a stop mid-send, one send at
a time (console or command line), the report, the ledger's head and its verification.

A real console, a real ledger file holding the example roster, a real SMTP server
(aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from console_client import Client, csrf_of, signed_in
from processes import run_notifier
from smtp_helpers import ScriptedHandler, add_volunteers, recipients

from notifier.config import Settings, load_settings
from notifier.ledger import Ledger
from notifier.service import SendSpec, Workspace, cohort_filter
from notifier.sink import Sink
from notifier.volunteer import Volunteer
from notifier.web.console import Console
from notifier.web.jobs import Job
from notifier.web.security import DOCUMENT_POLICY
from notifier.web.server import console_in_thread

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
ME = "me@our-office.example"
WAIT = 60.0


def finished(console: Console, kind: str, subject: str) -> Job:
    job = console.jobs.latest(kind, subject)
    assert job is not None, f"no {kind} of {subject} was started"
    assert console.jobs.wait(job, WAIT), f"the {kind} of {subject} did not finish"
    return job


def approve(client: Client, campaign_id: str = FIRST, by: str = "Jane Doe") -> None:
    reply = client.post(f"/campaigns/{campaign_id}/approve", {"by": by})
    assert reply.status == 303, reply.text


def audience(settings: Settings, campaign_id: str = FIRST) -> list[str]:
    with Workspace(settings) as ws:
        return [m.volunteer.email for m in ws.cohort(campaign_id) if m.included]


def contradicting() -> Volunteer:
    """Someone never screened with screening records: their notice would be untrue."""
    return Volunteer(
        volunteer_id="HMR-90000",
        email="hmr-90000@example.org",
        email_ascii="hmr-90000@example.org",
        family_name="Lee",
        given_name="Kim",
        locale="en",
        exposure="database_only",
        data_held=("id_documents",),
    )


# --- the check, the proof sheet, approval ----------------------------------------------


def test_the_check_runs_in_the_background_and_its_result_is_on_the_page(
    sending_console: Console, sending_client: Client
) -> None:
    page = sending_client.get(f"/campaigns/{FIRST}").text
    assert "Not checked in this console yet" in page and "Run the check" in page
    reply = sending_client.post(f"/campaigns/{FIRST}/check", {})
    assert reply.status == 303 and reply.header("Location") == f"/campaigns/{FIRST}#check"
    job = finished(sending_console, "check", FIRST)
    assert job.error is None
    page = sending_client.get(f"/campaigns/{FIRST}").text
    assert f"The check passed: the notices of {job.result.volunteers} people" in page
    assert job.result.volunteers > 100


def test_a_failing_check_lists_every_problem_and_refuses_approval(
    web_settings: Settings, sending_console: Console, sending_client: Client
) -> None:
    with Ledger(web_settings.ledger) as led:
        add_volunteers(led, [contradicting()])
    sending_client.post(f"/campaigns/{FIRST}/check", {})
    finished(sending_console, "check", FIRST)
    page = sending_client.get(f"/campaigns/{FIRST}").text
    assert "The check found" in page and 'id="problems"' in page
    problems = page.split('id="problems"', 1)[1].split("</table>", 1)[0]
    assert "HMR-90000" in problems and "database_only" in problems
    # Approving runs the whole check again, and refuses with the command line's words.
    refused = sending_client.post(f"/campaigns/{FIRST}/approve", {"by": "Jane Doe"})
    assert refused.status == 400
    assert "fails its check" in refused.text and "nothing was approved" in refused.text
    assert "HMR-90000" in refused.text
    with Workspace(web_settings) as ws:
        assert ws.approval_status(FIRST).approval is None


def test_the_proof_sheet_is_served_whole_with_no_script_allowed(
    web_settings: Settings, sending_client: Client
) -> None:
    reply = sending_client.get(f"/campaigns/{FIRST}/proof")
    assert reply.status == 200
    assert reply.header("Content-Security-Policy") == DOCUMENT_POLICY
    assert "script-src" not in DOCUMENT_POLICY and "sandbox" in DOCUMENT_POLICY
    assert reply.header("X-Frame-Options") == "DENY"
    with Workspace(web_settings) as ws:
        title = ws.campaign(FIRST).title
    assert "<style" in reply.text and "<script" not in reply.text.lower()
    assert title.split(":")[0] in reply.text
    # Other pages keep the console's own policy.
    assert "script-src 'self'" in sending_client.get("/campaigns").header("Content-Security-Policy")


def test_approval_by_name_then_stale_once_the_content_changes(
    web_settings: Settings, sending_client: Client, sink: Sink
) -> None:
    approve(sending_client)
    page = sending_client.get(f"/campaigns/{FIRST}").text
    assert "approved by Jane Doe" in page
    # The organisation's settings change (a new phone number): the content differs.
    config = web_settings.ledger.parent / "notifier.toml"
    config.write_text(config.read_text().replace("961 000", "961 999"), encoding="utf-8")
    changed = dataclasses.replace(
        load_settings(config, ledger=web_settings.ledger, env={}), smtp_url=sink.url
    )
    with console_in_thread(changed) as restarted:
        browser = signed_in(restarted.origin, restarted.address())
        assert "approval no longer current" in browser.get(f"/campaigns/{FIRST}").text
        plan = browser.get(f"/campaigns/{FIRST}/send").text
        assert "its content changed since it was approved" in plan
        assert "confirm-send" not in plan
        refused = browser.post(f"/campaigns/{FIRST}/send", {})
        assert refused.status == 400
        assert "changed since Jane Doe approved it" in refused.text
        assert "nothing was sent" in refused.text
        assert restarted.jobs.latest("send", FIRST) is None
    assert sink.messages == []


# --- a test send ---------------------------------------------------------------------------


def test_a_test_send_goes_to_me_only_and_lists_every_message(
    web_settings: Settings, sending_client: Client, sink: Sink
) -> None:
    reply = sending_client.post(f"/campaigns/{FIRST}/test", {"to": ME, "as": "HMR-0001"})
    assert reply.status == 200, reply.text
    rows = reply.text.split('id="test-results"', 1)[1].split("</table>", 1)[0]
    assert rows.count("accepted") == 1 and "HMR-0001" in rows
    assert [m.rcpt_tos for m in sink.messages] == [(ME,)]
    assert b"[TEST" in sink.messages[0].data
    with Workspace(web_settings) as ws:
        assert ws.ledger().state_counts(FIRST) == {}  # nobody's state changed
    # A mistyped address: a clear refusal, nothing sent.
    refused = sending_client.post(f"/campaigns/{FIRST}/test", {"to": "not an address"})
    assert refused.status == 400 and "Error" not in refused.text.split("<main", 1)[0]
    assert len(sink.messages) == 1


# --- the send --------------------------------------------------------------------------------


def test_the_plan_is_shown_before_the_confirm_then_the_send_completes(
    web_settings: Settings, sending_console: Console, sending_client: Client, sink: Sink
) -> None:
    approve(sending_client)
    everyone = audience(web_settings)
    plan = sending_client.get(f"/campaigns/{FIRST}/send").text
    figures = plan.split('id="plan-figures"', 1)[1].split("</dl>", 1)[0]
    assert f"<dt>Would send</dt><dd>{len(everyone)}</dd>" in figures
    assert 'id="plan-groups"' in plan and "ja" in plan and "database_only" in plan
    assert f"Send {len(everyone)} messages now" in plan
    assert sink.messages == []  # the plan sends nothing

    reply = sending_client.post(f"/campaigns/{FIRST}/send", {}, page=f"/campaigns/{FIRST}/send")
    assert reply.status == 303 and reply.header("Location") == f"/campaigns/{FIRST}/sending"
    job = finished(sending_console, "send", FIRST)
    assert job.error is None, job.error
    page = sending_client.get(f"/campaigns/{FIRST}/sending").text
    assert "Done." in page and 'http-equiv="refresh"' not in page
    progress = sending_client.get(f"/campaigns/{FIRST}/sending.json")
    assert progress.header("Content-Type").startswith("application/json")
    data = progress.text
    assert '"running":false' in data and f'"sent":{len(everyone)}' in data
    assert recipients(sink.messages) == dict.fromkeys(everyone, 1)
    with Workspace(web_settings) as ws:
        assert ws.ledger().state_counts(FIRST) == {"sent": len(everyone)}
        assert ws.status(FIRST).owed.count == 0
        assert ws.verify().ok


@pytest.fixture
def held() -> Iterator[tuple[Sink, ScriptedHandler]]:
    """An SMTP server that holds one message until told (`handler.release`)."""
    handler = ScriptedHandler()
    with Sink(handler=handler) as server:
        yield server, handler


def test_stop_mid_send_leaves_the_rest_owed_and_one_send_at_a_time(
    web_settings: Settings, held: tuple[Sink, ScriptedHandler]
) -> None:
    sink, handler = held
    everyone = audience(web_settings)
    handler.script = {everyone[4].casefold(): ["hold", "ok"]}
    # One connection at 50 a second: the stop lands while most are still owed.
    settings = dataclasses.replace(web_settings, smtp_url=sink.url, rate=50.0)
    with console_in_thread(settings) as console:
        client = signed_in(console.origin, console.address())
        approve(client)
        try:
            assert client.post(f"/campaigns/{FIRST}/send", {}).status == 303
            assert handler.holding.wait(WAIT), "the send never reached the held message"
            # Running: shown as such, and a second send is refused, saying who holds it.
            assert "Running now: send of 2020-03-breach" in client.get(f"/campaigns/{FIRST}").text
            page = client.get(f"/campaigns/{FIRST}/sending").text
            assert 'http-equiv="refresh"' in page and "/static/progress.js" in page
            assert "Stop the send" in page
            second = client.post(f"/campaigns/{FIRST}/send", {})
            assert second.status == 409 and "is running on this ledger" in second.text
            assert client.post(f"/campaigns/{FIRST}/stop", {}).status == 303
        finally:
            handler.release.set()
        job = finished(console, "send", FIRST)
        assert job.error is None, job.error
        assert job.result.stopped
        page = client.get(f"/campaigns/{FIRST}/sending").text
        assert "Stopped." in page and "the rest are still owed" in page
    with Workspace(settings) as ws:
        states = ws.ledger().state_counts(FIRST)
        sent = states["sent"]
        assert 5 <= sent < len(everyone)  # the held one, in flight, was finished
        assert states == {"sent": sent, "pending": len(everyone) - sent}
        assert ws.status(FIRST).owed.count == len(everyone) - sent
        # The next send sends the rest: nobody twice.
        ws.send(FIRST, SendSpec(smtp_url=sink.url), handle_signals=False)
    assert recipients(sink.messages) == dict.fromkeys(everyone, 1)


def test_a_send_from_elsewhere_shows_as_running_and_the_console_refuses_another(
    web_settings: Settings, sending_client: Client, sink: Sink
) -> None:
    approve(sending_client)
    other = Ledger(web_settings.ledger)  # another process's hold, in effect (a CLI send)
    try:
        with other.lease("send", FIRST):
            page = sending_client.get(f"/campaigns/{FIRST}").text
            assert re.search(r"Running now: send of 2020-03-breach by process \d+", page)
            progress = sending_client.get(f"/campaigns/{FIRST}/sending").text
            assert "not from this console" in progress and "by process" in progress
            refused = sending_client.post(f"/campaigns/{FIRST}/send", {})
            assert refused.status == 409
            assert "a send is running on this ledger: send of 2020-03-breach by process" in (
                refused.text
            )
            assert "nothing was sent" in refused.text
    finally:
        other.close()
    assert sink.messages == []


def test_a_cli_send_in_another_process_is_refused_beside_a_console_send(
    web_settings: Settings, held: tuple[Sink, ScriptedHandler]
) -> None:
    """`notifier send` in a terminal while the console sends: the lease refuses it."""
    sink, handler = held
    everyone = audience(web_settings)
    handler.script = {everyone[2].casefold(): ["hold", "ok"]}
    settings = dataclasses.replace(web_settings, smtp_url=sink.url)
    with console_in_thread(settings) as console:
        client = signed_in(console.origin, console.address())
        approve(client)
        try:
            assert client.post(f"/campaigns/{FIRST}/send", {}).status == 303
            assert handler.holding.wait(WAIT)
            cli = run_notifier(web_settings.ledger, "send", FIRST, "--yes", "--smtp", sink.url)
        finally:
            handler.release.set()
        finished(console, "send", FIRST)
    assert cli.returncode == 2, cli.stderr
    assert "another send is running on this ledger" in cli.stderr
    assert recipients(sink.messages) == dict.fromkeys(everyone, 1)


# --- the follow-up ----------------------------------------------------------------------------


def test_the_follow_up_cohort_is_chosen_by_history_and_sent(
    web_settings: Settings, sending_console: Console, sending_client: Client, sink: Sink
) -> None:
    with Workspace(web_settings) as ws:
        ws.approve(FIRST, "Jane Doe")
        ws.send(FIRST, SendSpec(smtp_url=sink.url), handle_signals=False)
        ws.approve(UPDATE, "Jane Doe")
        ja_sent = ws.cohort_summary(UPDATE, cohort_filter(locales=["ja"], statuses="sent")).included
    page = sending_client.get(f"/campaigns/{UPDATE}/cohort").text
    assert re.search(r"<strong>\d+</strong> of 194 volunteers are in the cohort", page)
    narrowed = sending_client.get(f"/campaigns/{UPDATE}/cohort?locale=ja&status=sent").text
    assert f"<strong>{ja_sent}</strong> of 194 volunteers" in narrowed
    assert 'lang="ja"' in narrowed  # Japanese names marked as such
    left_out = sending_client.get(f"/campaigns/{UPDATE}/cohort?locale=ja&status=sent&show=out")
    assert "Left out" in left_out.text and "locale" in left_out.text
    rows = left_out.text.split('id="members"', 1)[1].split("</table>", 1)[0]
    assert rows.count("<tr>") - 1 <= 50  # a page at a time, never everyone
    plan = sending_client.get(f"/campaigns/{UPDATE}/send?locale=ja&status=sent").text
    assert f"Send {ja_sent} messages now" in plan
    assert '<input type="hidden" name="locale" value="ja">' in plan
    before = len(sink.messages)
    reply = sending_client.post(
        f"/campaigns/{UPDATE}/send", {"locale": "ja", "status": "sent"}, page=f"/campaigns/{UPDATE}"
    )
    assert reply.status == 303
    job = finished(sending_console, "send", UPDATE)
    assert job.error is None, job.error
    assert len(sink.messages) - before == ja_sent
    with Workspace(web_settings) as ws:
        run = ws.last_run(UPDATE)
        assert run is not None and run.data["selection"]["locales"] == ["ja"]
        assert run.data["selection"]["statuses"] == ["sent"]


# --- the report and the ledger -----------------------------------------------------------


def test_the_report_page_is_the_report_of_the_command_line(
    web_settings: Settings, sending_client: Client, sink: Sink
) -> None:
    with Workspace(web_settings) as ws:
        ws.approve(FIRST, "Jane Doe")
        ws.send(FIRST, SendSpec(smtp_url=sink.url), handle_signals=False)
    reply = sending_client.get(f"/campaigns/{FIRST}/report")
    assert reply.status == 200
    assert reply.header("Content-Security-Policy") == DOCUMENT_POLICY
    cli = run_notifier(web_settings.ledger, "report", FIRST, "--format", "html")
    assert cli.returncode == 0, cli.stderr
    assert _without_time(reply.text) == _without_time(cli.stdout)
    assert "2020-03-breach" in reply.text


def _without_time(html: str) -> str:
    """The report but the time it was made."""
    return re.sub(r"(Report generated at</th><td>)[^<]*", r"\1", html)


def test_a_report_of_a_campaign_not_sent_is_a_clear_refusal(sending_client: Client) -> None:
    reply = sending_client.get(f"/campaigns/{FIRST}/report")
    assert reply.status == 400
    assert "has not been sent yet, so there is nothing to report" in reply.text


def test_the_ledger_page_shows_the_head_and_verifies(
    web_settings: Settings, sending_console: Console, sending_client: Client
) -> None:
    with Workspace(web_settings) as ws:
        head = ws.head()
    page = sending_client.get("/ledger").text
    assert f'<code class="head" id="ledger-head">{head}</code>' in page
    assert sending_client.post("/ledger/verify", {}, page="/ledger").status == 303
    job = finished(sending_console, "verify", "ledger")
    assert job.error is None
    page = sending_client.get("/ledger").text
    verdict = page.split('id="verify"', 1)[1]
    assert "The ledger verifies:" in verdict, verdict
    assert head.rpartition(":")[2] in verdict


@pytest.mark.parametrize("part", ["", "/send", "/sending", "/cohort", "/report", "/proof"])
def test_an_unknown_campaign_is_a_404_with_the_closest_ids(client: Client, part: str) -> None:
    reply = client.get(f"/campaigns/2020-03-breech{part}")
    assert reply.status == 404, part
    assert "did you mean 2020-03-breach" in reply.text


@pytest.mark.parametrize(
    "path", ["/ledger", f"/campaigns/{FIRST}/send", f"/campaigns/{FIRST}/sending.json"]
)
def test_the_new_pages_refuse_a_browser_without_the_session(console: Console, path: str) -> None:
    assert Client(console.origin).get(path).status == 403


def test_a_browsers_own_form_under_no_referrer_is_taken_and_a_foreign_one_refused(
    client: Client,
) -> None:
    """Under `Referrer-Policy: no-referrer` Chromium posts our own forms with `Origin: null`
    and `Sec-Fetch-Site: same-origin`; a sandboxed page elsewhere also says `null`, but
    its fetch metadata says cross-site."""
    token = csrf_of(client.get("/ledger").text)
    body = urlencode({"csrf": token}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"}
    for site in ("cross-site", "same-site", "none"):
        refused = client.request("POST", "/ledger/verify", body, {**form, "Sec-Fetch-Site": site})
        assert refused.status == 403, site
    ours = client.request("POST", "/ledger/verify", body, {**form, "Sec-Fetch-Site": "same-origin"})
    assert ours.status == 303
