"""Sending a campaign from the console: what a send would do first (the dry run), then,
confirmed, the send itself in the background with its progress live on a page, and a stop
button that stops it cleanly (what is in flight is finished and recorded, the rest stays
owed). The ledger's lease keeps it to one send at a time, whoever started the other (this
console, or `notifier send` in a terminal elsewhere)."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier.errors import SendInProgress
from notifier.message import DeliveryOutcome, MessageState
from notifier.service import (
    CohortFilter,
    SendOptions,
    SendSpec,
    SendSummary,
    ServerInfo,
    Workspace,
    cohort_filter,
)
from notifier.web.campaigns import known_campaign
from notifier.web.checking import campaign_address
from notifier.web.console import console_of
from notifier.web.forms import posted_form
from notifier.web.jobs import Job
from notifier.web.rendering import page

# The page without its script reloads itself this often while a send runs (seconds).
REFRESH_SECONDS = 2
# Outcomes that are no message sent: failed, for now or for good, or refused.
ERROR_STATES = frozenset(
    {
        MessageState.FAILED_TEMPORARY,
        MessageState.FAILED_PERMANENT,
        MessageState.BOUNCED_HARD,
        MessageState.BOUNCED_SOFT,
        MessageState.BLOCKED,
    }
)


def cohort_of(fields: ImmutableMultiDict[str, Any]) -> CohortFilter:
    """The narrowing a form or an address gives, as `notifier cohort`/`send` take it
    (--exposure, --locale repeated; --status a,b)."""
    status = fields.get("status")
    return cohort_filter(
        [v for v in fields.getlist("exposure") if isinstance(v, str) and v],
        [v for v in fields.getlist("locale") if isinstance(v, str) and v],
        status if isinstance(status, str) else "",
    )


def cohort_query(cohort: CohortFilter) -> str:
    """The narrowing as an address's query (to carry it from page to page)."""
    pairs = [("exposure", e) for e in cohort.exposures] + [("locale", x) for x in cohort.locales]
    if cohort.statuses:
        pairs.append(("status", ",".join(cohort.statuses)))
    return urlencode(pairs)


def console_spec(ws: Workspace, cohort: CohortFilter) -> SendSpec:
    """A console send: to the cohort as narrowed, the way the settings say (their SMTP
    server and rate), every other option as `notifier send` has it by default."""
    settings = ws.settings
    return SendSpec(
        cohort=cohort, options=SendOptions(rate=settings.rate, ca_file=settings.smtp_ca_file)
    )


class PagedProgress:
    """A send observer keeping a job's figures for its page: sent, deferred, errors, how
    many are still owed by this run, and the rate."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.began = time.monotonic()
        self.total: int | None = None  # None while the run still counts its audience
        self.finals: dict[str, int] = {}
        self.deferred = 0
        self._lock = threading.Lock()

    def checking(self) -> None:
        self.job.update(phase="checking the campaign before sending")

    def started(self, total: int | None, server: ServerInfo) -> None:
        self.began = time.monotonic()
        self.job.update(phase="sending")
        if total is not None:
            self.counted(total)

    def counted(self, total: int) -> None:
        """The run's total, once counted (the first message does not wait for it)."""
        with self._lock:
            self.total = total
            done = sum(self.finals.values())
            self.job.update(total=total, owed=max(total - done, 0))

    def outcome(self, outcome: DeliveryOutcome) -> None:
        with self._lock:
            if outcome.state == MessageState.DEFERRED:
                self.deferred += 1
            else:
                self.finals[outcome.state] = self.finals.get(outcome.state, 0) + 1
            done = sum(self.finals.values())
            elapsed = max(time.monotonic() - self.began, 1e-3)
            self.job.update(
                sent=self.finals.get(MessageState.SENT, 0),
                deferred=self.deferred,
                errors=sum(n for s, n in self.finals.items() if s in ERROR_STATES),
                done=done,
                owed=None if self.total is None else max(self.total - done, 0),
                rate=round(done / elapsed, 1),
            )


def send_plan(request: Request) -> Response:
    """The dry run: what a send to this cohort would do now, and why it would be refused,
    before the button that sends."""
    campaign_id = request.path_params["campaign_id"]
    cohort = cohort_of(request.query_params)
    console = console_of(request)
    with console.workspace() as ws:
        campaign = known_campaign(ws, campaign_id)
        blockers = ws.send_blockers(campaign_id)
        # A follow-up before the notice it follows: nobody to plan for yet.
        unsent = ws.follows_unsent(campaign_id)
        plan = None if unsent else ws.plan_send(campaign_id, console_spec(ws, cohort))
    running = console.jobs.running("send")
    return page(
        request,
        "send_plan.html",
        campaign=campaign,
        plan=plan,
        blockers=blockers,
        running=running,
        cohort=cohort,
        cohort_query=cohort_query(cohort),
    )


async def start_send(request: Request) -> Response:
    """Send, confirmed: refused at once (409, saying who holds the ledger) while another
    send runs, from this console or elsewhere; otherwise it runs in the background and
    the progress page opens."""
    form = await posted_form(request)
    campaign_id = request.path_params["campaign_id"]
    cohort = cohort_of(form)
    console = console_of(request)

    def refuse_or_start() -> None:
        with console.workspace() as ws:
            known_campaign(ws, campaign_id)
            ws.require_sendable(campaign_id)  # not approved, or stale: the CLI's words
            zone = ws.settings.time_zone
            holder = ws.running()
            if holder is not None:
                raise SendInProgress(
                    f"a {holder.command} is running on this ledger: {holder.describe(zone)}",
                    hint="wait for it to finish (its progress is on the campaign's page); "
                    "nothing was sent by this request",
                )
        for job in console.jobs.running("send"):
            raise SendInProgress(
                f"a send of {job.subject} started from this console is running",
                hint="wait for it to finish, or stop it on its page; nothing was sent by "
                "this request",
            )

        def send(job: Job) -> SendSummary:
            progress = PagedProgress(job)
            job.update(phase="starting")
            with console.workspace() as ws:
                return ws.send(
                    campaign_id,
                    console_spec(ws, cohort),
                    observer=progress,
                    handle_signals=False,
                    progress=progress.checking,
                    stop=job.stop_requested,
                )

        console.jobs.start("send", campaign_id, send)

    await run_in_threadpool(refuse_or_start)
    return RedirectResponse(campaign_address(campaign_id, "/sending"), status_code=303)


def _progress_of(request: Request) -> dict[str, Any]:
    """The campaign's latest console send as its page shows it, and who else holds the
    ledger (a send from a terminal elsewhere)."""
    campaign_id = request.path_params["campaign_id"]
    console = console_of(request)
    with console.workspace() as ws:
        known_campaign(ws, campaign_id)
        holder = ws.running()
        status = ws.status(campaign_id)
        zone = ws.settings.time_zone
    job = console.jobs.latest("send", campaign_id)
    snapshot = job.snapshot() if job is not None else None
    result = job.result if job is not None and isinstance(job.result, SendSummary) else None
    elsewhere = (
        holder.describe(zone) if holder is not None and (job is None or not job.running) else None
    )
    return {
        "campaign_id": campaign_id,
        "job": snapshot,
        "running": bool(snapshot and snapshot["running"]),
        "stopped": bool(result and result.stopped),
        "summary": _summary_of(result) if result is not None else None,
        "elsewhere": elsewhere,
        "campaign_sent": status.owed.sent,
        "campaign_owed": status.owed.count,
    }


def _summary_of(summary: SendSummary) -> dict[str, Any]:
    return {
        "planned": summary.planned,
        "counts": {str(k): v for k, v in summary.counts.items()},
        "stopped": summary.stopped,
        "deferred": summary.deferred,
        "rate": round(summary.rate, 1),
        "target": summary.target,
    }


def progress_page(request: Request) -> Response:
    """The send's progress: reloads itself while it runs (its script, where it runs,
    updates the figures in place instead)."""
    progress = _progress_of(request)
    return page(
        request,
        "sending.html",
        progress=progress,
        refresh=REFRESH_SECONDS if progress["running"] or progress["elsewhere"] else None,
    )


def progress_json(request: Request) -> Response:
    """The figures the progress page's script polls."""
    return JSONResponse(_progress_of(request))


async def stop_send(request: Request) -> Response:
    """Stop the campaign's send: it finishes what is in flight, records it, and leaves the
    rest owed for the next send."""
    await posted_form(request)
    campaign_id = request.path_params["campaign_id"]
    for job in console_of(request).jobs.running("send", campaign_id):
        job.stop_requested.set()
    return RedirectResponse(campaign_address(campaign_id, "/sending"), status_code=303)


ROUTES: list[BaseRoute] = [
    Route("/campaigns/{campaign_id}/send", send_plan, methods=["GET", "HEAD"]),
    Route("/campaigns/{campaign_id}/send", start_send, methods=["POST"]),
    Route("/campaigns/{campaign_id}/sending", progress_page, methods=["GET", "HEAD"]),
    Route("/campaigns/{campaign_id}/sending.json", progress_json, methods=["GET", "HEAD"]),
    Route("/campaigns/{campaign_id}/stop", stop_send, methods=["POST"]),
]
