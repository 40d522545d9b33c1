"""Bounces: ingest the delivery reports in the folder the settings name ([bounces] folder),
in the background; the reports not tied to a notice (forged ones refused); and the people
no notice reached, a page at a time, with the CSV `notifier export unreachable` writes."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from notifier.errors import NotifierError
from notifier.files import BOM
from notifier.outputs import visible
from notifier.report_formats import shown_time, unreachable_csv_lines
from notifier.service import IngestSummary
from notifier.web.console import console_of
from notifier.web.forms import posted_form
from notifier.web.jobs import Job
from notifier.web.rendering import page

PAGE_SIZE = 50
SHOWN_REPORTS = 200


def bounces_page(request: Request) -> Response:
    console = console_of(request)
    raw = request.query_params.get("start", "0")
    start = int(raw) if raw.isdigit() else 0
    with console.workspace() as ws:
        unmatched = ws.unmatched_reports()
        with ws.open_unreachable() as people:
            shown = list(itertools.islice(people, start, start + PAGE_SIZE + 1))
        zone = ws.settings.time_zone
    folder = console.settings.bounce_folder
    return page(
        request,
        "bounces.html",
        folder=folder,
        folder_exists=folder is not None and folder.exists(),
        running=console.jobs.running("ingest"),
        unmatched=unmatched[:SHOWN_REPORTS],
        unmatched_count=len(unmatched),
        people=shown[:PAGE_SIZE],
        start=start,
        next_start=start + PAGE_SIZE if len(shown) > PAGE_SIZE else None,
        previous_start=max(0, start - PAGE_SIZE) if start else None,
        zone=zone,
        shown_time=shown_time,
        visible=visible,
    )


async def ingest(request: Request) -> Response:
    """Read the configured folder's reports and record them, in the background."""
    await posted_form(request)
    console = console_of(request)
    folder = console.settings.bounce_folder
    if folder is None:
        raise NotifierError(
            "no folder for bounces is configured",
            hint='name the Maildir or mbox where bounces arrive: [bounces] folder = "..." in'
            " notifier.toml (or NOTIFIER_BOUNCE_FOLDER), then restart the console",
        )
    if not folder.exists():
        raise NotifierError(
            "the folder for bounces does not exist",
            file=folder,
            hint="check [bounces] folder in notifier.toml",
        )

    def work(job: Job) -> IngestSummary:
        job.update(stage="reading")
        with console.workspace() as ws:
            return ws.ingest_bounces([folder])

    job = console.jobs.start("ingest", str(folder.name), work)
    return RedirectResponse(f"/bounces/ingests/{job.job_id}", status_code=303)


def ingest_page(request: Request) -> Response:
    raw = request.path_params["job_id"]
    job = console_of(request).jobs.get(int(raw)) if str(raw).isdigit() else None
    if job is None or job.kind != "ingest":
        raise NotifierError("no such ingest in this console", hint="start one on the Bounces page")
    summary = job.result if isinstance(job.result, IngestSummary) else None
    return page(request, "ingest_job.html", job=job.snapshot(), summary=summary)


async def unreachable_csv(request: Request) -> Response:
    """Everyone no notice has reached: the same CSV as `notifier export unreachable
    --format csv --out FILE` (its byte-order mark too). Written as it is read (one read
    of the ledger, on one thread) into a private temporary file beside the ledger, then
    sent from there: memory does not grow with the list."""
    console = console_of(request)
    folder = console.settings.ledger.resolve().parent

    def written() -> IO[bytes]:
        handle = tempfile.TemporaryFile(dir=folder)
        try:
            with console.workspace() as ws, ws.open_unreachable() as people:
                handle.write(BOM.encode("utf-8"))
                for line in unreachable_csv_lines(people):
                    handle.write(line.encode("utf-8"))
            handle.seek(0)
        except BaseException:
            handle.close()
            raise
        return handle

    handle = await run_in_threadpool(written)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while block := await run_in_threadpool(handle.read, 256 * 1024):
                yield block
        finally:
            handle.close()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="unreachable.csv"'},
    )


ROUTES: list[BaseRoute] = [
    Route("/bounces", bounces_page, methods=["GET", "HEAD"]),
    Route("/bounces/ingest", ingest, methods=["POST"]),
    Route("/bounces/ingests/{job_id}", ingest_page, methods=["GET", "HEAD"]),
    Route("/bounces/unreachable.csv", unreachable_csv, methods=["GET", "HEAD"]),
]
