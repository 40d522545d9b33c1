"""A campaign before it is sent: its check (every problem, with example ids), its proof
sheet, a test send to oneself, and approval by name (the same rules and words as
`notifier check`, `send --test-to` and `approve`: the service's)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier.service import Campaign, CheckReport, TestSends
from notifier.web.campaigns import known_campaign
from notifier.web.console import console_of
from notifier.web.forms import posted_form, text_field
from notifier.web.jobs import Job
from notifier.web.rendering import document, page


def campaign_address(campaign_id: str, part: str = "") -> str:
    """The address of a campaign's page (or one of its parts)."""
    return f"/campaigns/{campaign_id}{part}"


def latest_check(request: Request, campaign_id: str) -> Job | None:
    return console_of(request).jobs.latest("check", campaign_id)


async def start_check(request: Request) -> Response:
    """Run the whole-campaign check in the background (it renders every notice); the
    campaign page shows how far it got, then its result."""
    await posted_form(request)
    campaign_id = request.path_params["campaign_id"]
    console = console_of(request)

    def require_known() -> None:  # reads the ledger: not on the event loop
        with console.workspace() as ws:
            known_campaign(ws, campaign_id)

    await run_in_threadpool(require_known)
    if not console.jobs.running("check", campaign_id):

        def check(job: Job) -> CheckReport:
            checked = 0

            def one_more() -> None:
                nonlocal checked
                checked += 1
                if checked % 100 == 0:
                    job.update(checked=checked)

            with console.workspace() as ws:
                report = ws.check(campaign_id, progress=one_more)
            job.update(checked=report.volunteers)
            return report

        console.jobs.start("check", campaign_id, check)
    return RedirectResponse(campaign_address(campaign_id, "#check"), status_code=303)


def proof(request: Request) -> Response:
    """The proof sheet of the campaign as last checked here (checked now if it was not):
    the self-contained page `notifier check --proof` writes."""
    campaign_id = request.path_params["campaign_id"]
    job = latest_check(request, campaign_id)
    with console_of(request).workspace() as ws:
        known_campaign(ws, campaign_id)
        report = job.result if job is not None and isinstance(job.result, CheckReport) else None
        if report is None:
            report = ws.check(campaign_id)
        html = ws.proof(campaign_id, report)
    return document(html)


async def approve(request: Request) -> Response:
    """Approve the campaign's current content in a name: refused, with the command line's
    words, while its check fails (nothing is recorded then)."""
    form = await posted_form(request)
    campaign_id = request.path_params["campaign_id"]
    by = text_field(form, "by")

    def run() -> None:
        with console_of(request).workspace() as ws:
            known_campaign(ws, campaign_id)
            ws.approve(campaign_id, by)

    await run_in_threadpool(run)
    return RedirectResponse(campaign_address(campaign_id, "#approval"), status_code=303)


async def test_send(request: Request) -> Response:
    """Each version of the notice (or the named volunteers' own), marked as a test, to one
    address only; every message's result listed, refusals included."""
    form = await posted_form(request)
    campaign_id = request.path_params["campaign_id"]
    to = text_field(form, "to").strip()
    as_volunteers = [v.strip() for v in text_field(form, "as").split() if v.strip()]

    def run() -> tuple[Campaign, TestSends]:
        with console_of(request).workspace() as ws:
            campaign = known_campaign(ws, campaign_id)
            return campaign, ws.test_send(campaign_id, to, as_volunteers=as_volunteers)

    campaign, sent = await run_in_threadpool(run)
    return page(request, "test_sent.html", campaign=campaign, sent=sent)


ROUTES: list[BaseRoute] = [
    Route("/campaigns/{campaign_id}/check", start_check, methods=["POST"]),
    Route("/campaigns/{campaign_id}/proof", proof, methods=["GET", "HEAD"]),
    Route("/campaigns/{campaign_id}/approve", approve, methods=["POST"]),
    Route("/campaigns/{campaign_id}/test", test_send, methods=["POST"]),
]
