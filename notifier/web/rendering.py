"""Pages rendered on the server from Jinja2 templates, escaped by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from notifier.report_formats import shown_time
from notifier.web.security import POLICY_MARKER

STATIC_DIR = Path(__file__).parent / "static"

_environment = Environment(
    loader=PackageLoader("notifier.web", "templates"),
    autoescape=select_autoescape(("html",), default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# Every time a page shows is in the display zone, as the command line shows it.
_environment.globals["shown_time"] = shown_time


def _display_zone(request: Request) -> str:
    """The settings' display zone ([display] time_zone); UTC before the application
    has the request (a refusal by the guard)."""
    app = request.scope.get("app")
    console = getattr(getattr(app, "state", None), "console", None)
    return console.settings.time_zone if console is not None else "UTC"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered for this request: with the session's CSRF token for its forms
    (`csrf`) and the request itself (`request`, for its address)."""
    csrf = getattr(request.state, "csrf", None)
    context.setdefault("zone", _display_zone(request))
    html = _environment.get_template(template).render(request=request, csrf=csrf, **context)
    return HTMLResponse(html, status_code=status_code)


def document(html: str) -> HTMLResponse:
    """A self-contained HTML document (the proof sheet, the report) served as it is: its
    inline styles allowed, no script, sandboxed (notifier.web.security.DOCUMENT_POLICY)."""
    return HTMLResponse(html, headers={POLICY_MARKER: "document"})


def framed(html: str) -> HTMLResponse:
    """A notice's HTML part, for a sandboxed frame of our own page: its inline style, no
    script, framed by our pages only (notifier.web.security.FRAMED_HEADERS)."""
    return HTMLResponse(html, headers={POLICY_MARKER: "framed"})
