"""The volunteers: a search a page at a time, and one person's page: what is held on them,
their history, and each campaign's notice for them in both languages, its HTML in a
sandboxed frame, and the exact .eml a send would make."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from notifier.errors import CampaignError, NotifierError
from notifier.outputs import visible
from notifier.report_formats import shown_time
from notifier.service import Campaign, Preview, VolunteerQuery, Workspace
from notifier.volunteer import LOCALES, exposure_words
from notifier.web.console import Console, console_of
from notifier.web.rendering import framed, page

PAGE_SIZE = 50
# The headers a reader of a notice sees above its text.
SHOWN_HEADERS = ("From", "To", "Subject")


@dataclass(frozen=True)
class NoticeView:
    """One campaign's notice for one person, in one language."""

    locale: str
    own: bool  # the person's own language: what a send makes
    headers: tuple[tuple[str, str], ...]
    text: str
    html_address: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class CampaignNotices:
    campaign: Campaign
    in_audience: bool
    notices: tuple[NoticeView, ...]
    eml_address: str
    error: str | None = None


def _console(request: Request) -> Console:
    return console_of(request)


def search(request: Request) -> Response:
    """Volunteers whose id, address or name holds the words typed, PAGE_SIZE at a time."""
    words = request.query_params.get("q", "").strip()[:200]
    after = request.query_params.get("after") or None
    query = VolunteerQuery(text=words or None)
    with _console(request).workspace() as ws:
        found = ws.volunteer_page(query, after=after, size=PAGE_SIZE + 1)
        total = ws.volunteer_count(query)
    shown, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    next_address = (
        "/volunteers?" + urlencode({"q": words, "after": shown[-1].volunteer_id})
        if more and shown
        else None
    )
    return page(
        request,
        "volunteers.html",
        words=words,
        volunteers=shown,
        total=total,
        after=after,
        next_address=next_address,
        first_address="/volunteers?" + urlencode({"q": words}),
        quote=quote,
        visible=visible,
    )


def volunteer_page(request: Request) -> Response:
    """One person: what is held on them, their history, and every campaign's notice."""
    key = request.path_params["volunteer_id"]
    with _console(request).workspace() as ws:
        person = ws.volunteer(key)
        history = ws.history(person.volunteer_id)
        notices = [_notices(ws, c, person.volunteer_id, person.locale) for c in ws.campaigns()]
        zone = ws.settings.time_zone
    return page(
        request,
        "volunteer.html",
        person=person,
        extra=dict(person.extra),
        exposure=exposure_words(person.exposure),
        history=history,
        notices=notices,
        zone=zone,
        shown_time=shown_time,
        visible=visible,
        quote=quote,
    )


def _notices(ws: Workspace, campaign: Campaign, vid: str, own: str) -> CampaignNotices:
    base = f"/volunteers/{quote(vid, safe='')}/notices/{quote(campaign.campaign_id, safe='')}"
    # Their own language first, then the other one, side by side.
    order = (own, *(locale for locale in LOCALES if locale != own))
    views = []
    in_audience = False
    try:
        for locale in order:
            preview = ws.preview(campaign.campaign_id, vid, locale=locale)
            in_audience = in_audience or preview.in_audience
            views.append(_view(preview, locale, locale == own, f"{base}/{locale}.html"))
    except NotifierError as exc:
        return CampaignNotices(campaign, False, tuple(views), f"{base}.eml", str(exc))
    return CampaignNotices(campaign, in_audience, tuple(views), f"{base}.eml")


def _parsed(preview: Preview) -> EmailMessage:
    message = email.message_from_bytes(preview.message.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _view(preview: Preview, locale: str, own: bool, html_address: str) -> NoticeView:
    message = _parsed(preview)
    part = message.get_body(preferencelist=("plain",))
    text = str(part.get_content()).replace("\r\n", "\n") if part is not None else ""
    headers = tuple((name, str(message[name])) for name in SHOWN_HEADERS if name in message)
    return NoticeView(locale, own, headers, text, html_address, preview.warnings)


def _campaign_preview(request: Request, locale: str | None) -> Preview:
    vid = request.path_params["volunteer_id"]
    campaign_id = request.path_params["campaign_id"]
    if locale is not None and locale not in LOCALES:
        raise CampaignError(f"no notice in {locale!r}", hint=f"one of {', '.join(LOCALES)}")
    with _console(request).workspace() as ws:
        ws.require_known_campaign(campaign_id)
        return ws.preview(campaign_id, vid, locale=locale)


def notice_html(request: Request) -> Response:
    """The notice's HTML part, for the sandboxed frame of the volunteer's page: with its
    own policy (its inline style, nothing else; framed only by our pages)."""
    preview = _campaign_preview(request, request.path_params["locale"])
    part = _parsed(preview).get_body(preferencelist=("html",))
    html = str(part.get_content()) if part is not None else ""
    return framed(html)


def notice_eml(request: Request) -> Response:
    """The exact message a send would make for this person (as `notifier preview
    --format eml` writes it), to download."""
    preview = _campaign_preview(request, None)
    name = f"{preview.message.campaign_id}-{preview.volunteer.volunteer_id}.eml"
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return Response(
        preview.message.data,
        media_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


ROUTES: list[BaseRoute] = [
    Route("/volunteers", search, methods=["GET", "HEAD"]),
    Route("/volunteers/{volunteer_id}", volunteer_page, methods=["GET", "HEAD"]),
    Route(
        "/volunteers/{volunteer_id}/notices/{campaign_id}/{locale}.html",
        notice_html,
        methods=["GET", "HEAD"],
    ),
    Route(
        "/volunteers/{volunteer_id}/notices/{campaign_id}.eml",
        notice_eml,
        methods=["GET", "HEAD"],
    ),
]
