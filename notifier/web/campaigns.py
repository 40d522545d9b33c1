"""The campaigns: the list, and one campaign's page (where it stands, its approval)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from notifier.errors import UnknownCampaign
from notifier.message import state_words
from notifier.report_formats import owed_lines, shown_time
from notifier.service import Campaign, CampaignStatus, CheckReport, Workspace
from notifier.web.console import console_of
from notifier.web.rendering import page


@dataclass(frozen=True)
class CampaignRow:
    """One line of the campaigns page."""

    campaign: Campaign
    status: CampaignStatus


def known_campaign(ws: Workspace, campaign_id: str) -> Campaign:
    """The shipped campaign with this id: never a path (an address is not a file name),
    404 with the closest ids otherwise."""
    ws.require_known_campaign(campaign_id)
    for campaign in ws.campaigns():
        if campaign.campaign_id == campaign_id:
            return campaign
    raise UnknownCampaign(f"no campaign file for {campaign_id!r} in this installation")


def home(request: Request) -> Response:
    return RedirectResponse("/campaigns", status_code=303)


def campaign_list(request: Request) -> Response:
    """Every campaign and where it stands; on a ledger not made yet, the first step."""
    with console_of(request).workspace() as ws:
        if not ws.has_ledger():
            return page(request, "campaigns.html", rows=None, ledger=ws.ledger_path)
        rows = [CampaignRow(c, ws.status(c.campaign_id)) for c in ws.campaigns()]
    return page(request, "campaigns.html", rows=rows, state_words=state_words)


def campaign_page(request: Request) -> Response:
    campaign_id = request.path_params["campaign_id"]
    console = console_of(request)
    with console.workspace() as ws:
        campaign = known_campaign(ws, campaign_id)
        status = ws.status(campaign_id)
        zone = ws.settings.time_zone
    check = console.jobs.latest("check", campaign_id)
    send = console.jobs.latest("send", campaign_id)
    report = check.result if check is not None and isinstance(check.result, CheckReport) else None
    return page(
        request,
        "campaign.html",
        campaign=campaign,
        status=status,
        check=check.snapshot() if check is not None else None,
        report=report,
        send=send.snapshot() if send is not None else None,
        refresh=2 if check is not None and check.running else None,
        owed=owed_lines(status.owed),
        zone=zone,
        shown_time=shown_time,
        state_words=state_words,
    )


ROUTES: list[BaseRoute] = [
    Route("/", home, methods=["GET", "HEAD"]),
    Route("/campaigns", campaign_list, methods=["GET", "HEAD"]),
    Route("/campaigns/{campaign_id}", campaign_page, methods=["GET", "HEAD"]),
]
