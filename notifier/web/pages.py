"""The pages every part of the console shares: errors and refusals."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse

from notifier.outputs import redact_urls
from notifier.web.rendering import page


def error_page(request: Request, status: int, title: str, text: str) -> HTMLResponse:
    """A page saying what went wrong and what to do (the text of a NotifierError: its
    message, then its hint; never a secret from a URL)."""
    message, _, hint = redact_urls(text).partition("\nhint: ")
    return page(request, "error.html", status, title=title, message=message, hint=hint)


def not_found_page(request: Request) -> HTMLResponse:
    return error_page(request, 404, "Not found", f"nothing here: {request.url.path}")
