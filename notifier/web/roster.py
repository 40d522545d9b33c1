"""The roster: upload a CSV file, see every rejected row, every warning and every change
an import would make, then confirm; the import runs in the background under the ledger's
lease, as `notifier roster import` does, with the same encoding detection and mapping."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier.errors import NotifierError
from notifier.outputs import counted, visible
from notifier.report_formats import shown_time
from notifier.service import (
    ENCODING_CHOICES,
    AddressMove,
    ImportSummary,
    RosterPlan,
    RowProblem,
    SurnameOutliers,
)
from notifier.volunteer import LOCALES
from notifier.web.console import console_of
from notifier.web.forms import posted_form, text_field
from notifier.web.jobs import Job
from notifier.web.rendering import page
from notifier.web.uploads import Upload, UploadRefused, received_upload

ROSTER_FIELD = "roster"
MAPPING_FIELD = "mapping"
# A page is no place for thousands of rows: beyond this many, the CLI's CSV has them all.
SHOWN_ROWS = 200
# A finished import keeps this many of its warnings to show.
KEPT_WARNINGS = 200


@dataclass(frozen=True)
class ImportDone:
    """What a confirmed import did, as its page shows it."""

    file_name: str
    summary: ImportSummary
    warnings: tuple[RowProblem, ...]
    warning_count: int
    moved: tuple[AddressMove, ...]
    moved_count: int
    outliers: tuple[SurnameOutliers, ...]


def _form_page(request: Request, status_code: int = 200, **context: object) -> Response:
    console = console_of(request)
    with console.workspace() as ws:
        latest = ws.latest_import() if ws.has_ledger() else None
        zone = ws.settings.time_zone
    running = console.jobs.running("import")
    defaults = {"refusal": None, "hint": None}
    return page(
        request,
        "roster.html",
        status_code,
        latest=latest,
        zone=zone,
        shown_time=shown_time,
        running=running,
        encodings=ENCODING_CHOICES,
        locales=LOCALES,
        **{**defaults, **context},
    )


def roster_page(request: Request) -> Response:
    return _form_page(request)


def _options(upload: Upload) -> tuple[str, str]:
    encoding = upload.text("encoding") or "auto"
    if encoding not in ENCODING_CHOICES:
        raise UploadRefused(
            f"unknown encoding {encoding!r}", hint=f"choose one of {', '.join(ENCODING_CHOICES)}"
        )
    locale = upload.text("default_locale") or "en"
    if locale not in LOCALES:
        raise UploadRefused(
            f"unknown locale {locale!r}", hint=f"choose one of {', '.join(LOCALES)}"
        )
    return encoding, locale


def _shown(exc: NotifierError, upload: Upload) -> str:
    """The error as the person should read it: naming their file, not where it waits."""
    if exc.file is not None:
        for uploaded in upload.files.values():
            if exc.file == str(uploaded.path):
                exc.file = uploaded.name
    return str(exc)


def _refused(request: Request, text: str, status_code: int = 400) -> Response:
    message, _, hint = text.partition("\nhint: ")
    return _form_page(request, status_code, refusal=message, hint=hint or None)


async def preview(request: Request) -> Response:
    """Read the uploaded file as an import would, write nothing, and show what it would
    do; the file waits (privately, beside the ledger) for the person to confirm."""
    console = console_of(request)
    folder = console.settings.ledger.resolve().parent
    limit = console.settings.roster_max_bytes
    try:
        upload = await received_upload(
            request, folder, limit, file_fields=(ROSTER_FIELD, MAPPING_FIELD)
        )
    except UploadRefused as exc:
        return _refused(request, str(exc), 413 if "size limit" in exc.message else 400)
    try:
        roster = upload.files.get(ROSTER_FIELD)
        if roster is None:
            raise UploadRefused("no file was sent", hint="choose a file, then press the button")
        encoding, locale = _options(upload)
        mapping = upload.files.get(MAPPING_FIELD)

        def plan() -> RosterPlan:
            with console.workspace() as ws:
                return ws.plan_import(
                    roster.path,
                    mapping=mapping.path if mapping else None,
                    encoding=encoding,
                    default_locale=locale,
                )

        planned = await run_in_threadpool(plan)
    except NotifierError as exc:
        upload.remove()
        return _refused(request, _shown(exc, upload))
    except BaseException:
        upload.remove()
        raise
    console.uploads.keep(upload)
    return page(
        request,
        "roster_preview.html",
        upload=upload,
        roster=roster,
        mapping=mapping,
        planned=planned,
        plan=planned.plan,
        shown_rows=SHOWN_ROWS,
        visible=visible,
        counted=counted,
    )


async def confirm(request: Request) -> Response:
    """Import exactly the file previewed, in the background."""
    console = console_of(request)
    form = await posted_form(request)
    upload = console.uploads.get(text_field(form, "upload"))
    if upload is None or ROSTER_FIELD not in upload.files:
        return _refused(
            request,
            "this upload is no longer waiting (it was imported, discarded, or the console"
            " restarted): nothing was imported\nhint: upload the file again",
            409,
        )
    roster = upload.files[ROSTER_FIELD]
    previewed = text_field(form, "sha256")
    current = await run_in_threadpool(roster.current_sha256)
    if not (previewed == roster.sha256 == current):
        console.uploads.discard(upload.upload_id)
        return _refused(
            request,
            f"{roster.name} changed since its preview: nothing was imported\nhint: upload it"
            " again and read the new preview before importing",
            409,
        )
    encoding, locale = _options(upload)
    mapping = upload.files.get(MAPPING_FIELD)

    def work(job: Job) -> ImportDone:
        try:
            job.update(stage="importing", rows=None)
            if roster.current_sha256() != previewed:
                raise UploadRefused(
                    f"{roster.name} changed since its preview: nothing was imported"
                )
            with (
                console.workspace() as ws,
                ws.import_roster(
                    roster.path,
                    mapping=mapping.path if mapping else None,
                    encoding=encoding,
                    default_locale=locale,
                    recorded_as=roster.name,
                    progress=lambda rows: job.update(rows=rows),
                ) as imported,
            ):
                stream = imported.stream
                warnings = () if imported.summary.refused else tuple(stream.warnings)
                job.update(stage="done", rows=stream.rows_total)
                return ImportDone(
                    roster.name,
                    imported.summary,
                    warnings[:KEPT_WARNINGS],
                    0 if imported.summary.refused else stream.warning_count,
                    imported.moved,
                    imported.moved_count,
                    imported.surname_outliers,
                )
        except NotifierError as exc:
            exc.message = _shown(exc, upload).partition("\nhint: ")[0]
            exc.file = None
            raise
        finally:
            console.uploads.discard(upload.upload_id)

    job = console.jobs.start("import", roster.name, work)
    return RedirectResponse(f"/roster/imports/{job.job_id}", status_code=303)


async def discard(request: Request) -> Response:
    """Forget an upload without importing it (its file is deleted)."""
    form = await posted_form(request)
    console_of(request).uploads.discard(text_field(form, "upload"))
    return RedirectResponse("/roster", status_code=303)


def import_page(request: Request) -> Response:
    """An import's progress (the page refreshes itself while it runs), then its outcome."""
    console = console_of(request)
    job = _job_of(request, "import")
    if job is None:
        return _refused(request, "no such import in this console\nhint: start one here", 404)
    return page(
        request,
        "import_job.html",
        job=job.snapshot(),
        done=job.result if isinstance(job.result, ImportDone) else None,
        shown_rows=SHOWN_ROWS,
        visible=visible,
        counted=counted,
        zone=console.settings.time_zone,
        shown_time=shown_time,
    )


def _job_of(request: Request, kind: str) -> Job | None:
    raw = request.path_params["job_id"]
    job = console_of(request).jobs.get(int(raw)) if str(raw).isdigit() else None
    return job if job is not None and job.kind == kind else None


ROUTES: list[BaseRoute] = [
    Route("/roster", roster_page, methods=["GET", "HEAD"]),
    Route("/roster/preview", preview, methods=["POST"]),
    Route("/roster/import", confirm, methods=["POST"]),
    Route("/roster/discard", discard, methods=["POST"]),
    Route("/roster/imports/{job_id}", import_page, methods=["GET", "HEAD"]),
]
