"""Proof: a campaign's report (the same HTML as `notifier report --format html`), and the
ledger itself: its head to write down, and a check of its whole chain."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier.report_formats import report_html_pieces
from notifier.service import VerifyResult
from notifier.web.campaigns import known_campaign
from notifier.web.console import console_of
from notifier.web.forms import posted_form
from notifier.web.jobs import Job
from notifier.web.rendering import document, page


def report(request: Request) -> Response:
    """The proof of notification, as `report --format html` writes it. Read in one piece
    on one thread (the ledger's connection belongs to it); its size is bounded by the
    report itself (no list longer than its limit, whatever the campaign's size)."""
    campaign_id = request.path_params["campaign_id"]
    with console_of(request).workspace() as ws:
        known_campaign(ws, campaign_id)
        with ws.open_report(campaign_id) as result:
            html = "".join(report_html_pieces(result, time_zone=ws.settings.time_zone))
    return document(html)


def ledger_page(request: Request) -> Response:
    console = console_of(request)
    with console.workspace() as ws:
        head = ws.head()
        holder = ws.running()
        zone = ws.settings.time_zone
        path = ws.ledger_path.name
    job = console.jobs.latest("verify", "ledger")
    verdict = job.result if job is not None and isinstance(job.result, VerifyResult) else None
    return page(
        request,
        "ledger.html",
        head=head,
        ledger_name=path,
        running=holder.describe(zone) if holder is not None else None,
        job=job.snapshot() if job is not None else None,
        verdict=verdict,
        refresh=2 if job is not None and job.running else None,
    )


async def verify(request: Request) -> Response:
    """Verify the whole chain in the background; the ledger page shows the verdict."""
    await posted_form(request)
    console = console_of(request)
    if not console.jobs.running("verify", "ledger"):

        def run(job: Job) -> VerifyResult:
            with console.workspace() as ws:
                return ws.verify()

        console.jobs.start("verify", "ledger", run)
    return RedirectResponse("/ledger#verify", status_code=303)


ROUTES: list[BaseRoute] = [
    Route("/campaigns/{campaign_id}/report", report, methods=["GET", "HEAD"]),
    Route("/ledger", ledger_page, methods=["GET", "HEAD"]),
    Route("/ledger/verify", verify, methods=["POST"]),
]
