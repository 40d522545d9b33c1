"""The console's web application: its pages, the guard in front of them, and the state
they share (the settings, the sessions, the work running in the background)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from notifier.errors import NotifierError, SendInProgress, UnknownCampaign, VolunteerNotFound
from notifier.web import (
    bounces,
    campaigns,
    checking,
    followup,
    ledger_pages,
    roster,
    sending,
    volunteers,
)
from notifier.web.console import Console, console_of
from notifier.web.forms import posted_form
from notifier.web.pages import error_page, not_found_page
from notifier.web.rendering import STATIC_DIR, page
from notifier.web.security import (
    MARKED_HEADERS,
    POLICY_MARKER,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    TOKEN_PARAMETER,
    Forbidden,
    require_own_origin,
    session_of,
    set_session_cookie,
)


async def sign_out(request: Request) -> Response:
    """End this browser's session: the console refuses it from now on."""
    await posted_form(request)
    console_of(request).sessions.close(session_of(request))
    response = page(request, "signed_out.html")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def routes() -> list[BaseRoute]:
    return [
        *campaigns.ROUTES,
        *roster.ROUTES,
        *volunteers.ROUTES,
        *bounces.ROUTES,
        *checking.ROUTES,
        *sending.ROUTES,
        *followup.ROUTES,
        *ledger_pages.ROUTES,
        Route("/signout", sign_out, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    # Stopping (Ctrl-C): a send in the background finishes what is in flight and records
    # it; what it had not sent stays owed, for the next send.
    console: Console = app.state.console
    await run_in_threadpool(console.jobs.stop_all)
    console.uploads.discard_all()  # files waiting to be imported: deleted, never left behind


def create_app(console: Console) -> Starlette:
    """The console's application, serving `console.settings`' ledger."""
    app = Starlette(
        routes=routes(),
        lifespan=_lifespan,
        exception_handlers={
            NotifierError: _notifier_error,
            Forbidden: _forbidden,
            404: _not_found,
        },
    )
    app.state.console = console
    return Guard(app, console)  # type: ignore[return-value]


class Guard:
    """In front of every request: the one-time token, the session cookie, the method and
    the Origin of a POST; and the security headers on every response, refusals too."""

    def __init__(self, app: Starlette, console: Console) -> None:
        self.app = app
        self.console = console
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secured = _with_security_headers(send)
        request = Request(scope, receive)
        try:
            response = self._refusal_or_login(request, scope)
        except Forbidden as refused:
            response = error_page(request, 403, "Not allowed", str(refused))
        if response is not None:
            await response(scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    def _refusal_or_login(self, request: Request, scope: Scope) -> Response | None:
        sessions = self.console.sessions
        # A page of another site whose name was pointed at this machine (DNS rebinding)
        # names that site in Host: only our own address is served.
        if request.headers.get("host") != self.console.origin.partition("://")[2]:
            raise Forbidden("this console answers only at the address it printed")
        offered = request.query_params.get(TOKEN_PARAMETER)
        if offered is not None and request.method in ("GET", "HEAD"):
            session = sessions.open(offered)
            # The token leaves the address bar (and history) at once.
            response = RedirectResponse(request.url.path or "/", status_code=303)
            set_session_cookie(response, session)
            return response
        csrf = sessions.csrf_token(session_of(request))
        if csrf is None:
            raise Forbidden(
                "open the address the console printed when it started (it signs this "
                "browser in; other browsers and tabs without it are refused)"
            )
        if request.method not in ("GET", "HEAD", "POST"):
            return error_page(request, 405, "Not allowed", f"{request.method} is not used here")
        if request.method == "POST":
            require_own_origin(request, self.console.origin)
        scope.setdefault("state", {})["csrf"] = csrf
        return None


def _with_security_headers(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            given = message.get("headers", [])
            policy = _policy_for(given)
            headers = [
                (name, value)
                for name, value in given
                if name.decode("latin-1").title() not in (*policy, POLICY_MARKER)
            ]
            headers.extend(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in policy.items()
            )
            message = {**message, "headers": headers}
        await send(message)

    return secured


def _policy_for(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers a response gets: the strict ones, or a looser set it names by
    POLICY_MARKER (a notice in a frame, a self-contained document)."""
    for name, value in headers:
        if name.decode("latin-1").title() == POLICY_MARKER:
            return MARKED_HEADERS.get(value.decode("latin-1"), SECURITY_HEADERS)
    return SECURITY_HEADERS


async def _notifier_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotifierError)
    return error_page(request, _status_for(exc), "That did not work", str(exc))


async def _forbidden(request: Request, exc: Exception) -> Response:
    return error_page(request, 403, "Not allowed", str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return not_found_page(request)


def _status_for(exc: NotifierError) -> int:
    if isinstance(exc, UnknownCampaign | VolunteerNotFound):
        return 404
    if isinstance(exc, SendInProgress):
        return 409
    return 400
