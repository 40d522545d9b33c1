"""Who may use the console, and how a request proves it.

The console prints an address with a one-time token. Opening it starts a session: an
HttpOnly, SameSite=Strict cookie, and the token is gone from the address bar (and cannot
be used again). Every other request without that cookie is refused (403). A request that
changes something is a POST from our own pages: it carries the session's CSRF token and
our own `Origin`. Every response forbids framing, referrers, sniffing, caching and any
resource or script not served by the console itself.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "notifier_console"
TOKEN_PARAMETER = "token"  # noqa: S105 (the name of the query parameter)
CSRF_FIELD = "csrf"

# Only what the console serves itself: no inline script or style, no other site, no
# frames, and forms post only back here.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        # Only the console's own notice previews, each sandboxed (FRAMED_HEADERS).
        "frame-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
# A document the console serves as it is (the proof sheet, the report: self-contained HTML
# with inline CSS): its own styles, no script at all, and sandboxed (no forms, no
# navigation of the console). The guard keeps this policy, and only this one, when a
# response names it.
DOCUMENT_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "sandbox",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


# A notice's HTML part, shown in a sandboxed frame of our own page: its inline style is
# the notice's own, anything else (script, forms, other sites) is refused, and only our
# own pages may frame it.
FRAMED_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "img-src data:",
            "sandbox",
            "frame-ancestors 'self'",
        )
    ),
    "X-Frame-Options": "SAMEORIGIN",
}
DOCUMENT_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": DOCUMENT_POLICY}

# A response asks for one of these looser sets of headers by naming it in POLICY_MARKER
# (a header the guard removes); no header a response sets itself survives the guard, so
# a page can only choose among these, never write its own policy.
POLICY_MARKER = "X-Notifier-Policy"
MARKED_HEADERS = {"framed": FRAMED_HEADERS, "document": DOCUMENT_HEADERS}


class Forbidden(Exception):
    """A request the console refuses (403), with what the person should do instead."""


@dataclass
class Sessions:
    """The console's one-time token and the sessions it opened (held in memory: a
    restarted console prints a new address and forgets every session)."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _token_used: bool = False
    _csrf_by_session: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, offered: str) -> str:
        """A new session for the one-time token; refused if it is wrong or was used."""
        with self._lock:
            if self._token_used or not hmac.compare_digest(offered, self.token):
                raise Forbidden(
                    "this address has been used already or is not the console's: open the "
                    "address the console printed when it started (restart it for a new one)"
                )
            self._token_used = True
            session = secrets.token_urlsafe(32)
            self._csrf_by_session[session] = secrets.token_urlsafe(32)
            return session

    def close(self, session: str | None) -> None:
        """End a session (signing out): its cookie is refused from now on."""
        if session:
            with self._lock:
                self._csrf_by_session.pop(session, None)

    def csrf_token(self, session: str | None) -> str | None:
        """The session's CSRF token; None when `session` is not one of ours."""
        if not session:
            return None
        with self._lock:
            for known, csrf in self._csrf_by_session.items():
                if hmac.compare_digest(known, session):
                    return csrf
        return None


def session_of(request: Request) -> str | None:
    """The session cookie's value, as sent."""
    return request.cookies.get(SESSION_COOKIE)


def set_session_cookie(response: Response, session: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, session, httponly=True, samesite="strict", path="/", secure=False
    )


def require_own_origin(request: Request, origin: str) -> None:
    """A state-changing request must come from one of our own pages."""
    sent = request.headers.get("origin")
    # Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` with a form of
    # our own page; it then also says where the request came from in Sec-Fetch-Site,
    # which no page's script can set: same-origin there is our own page.
    if sent == "null" and request.headers.get("sec-fetch-site") == "same-origin":
        return
    if sent is None or sent != origin:
        raise Forbidden(
            "this request did not come from the console's own page "
            f"(Origin {sent or 'missing'}): use the console's forms"
        )


def require_csrf(form: FormData, expected: str | None) -> None:
    """The form must carry this session's CSRF token."""
    offered = form.get(CSRF_FIELD)
    if expected is None or not isinstance(offered, str) or not offered:
        raise Forbidden("the form has no valid token: reload the page and try again")
    if not hmac.compare_digest(offered, expected):
        raise Forbidden("the form's token is not this session's: reload the page and try again")
