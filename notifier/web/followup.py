"""A follow-up's cohort, chosen by history with the filters of `notifier cohort` (the
followed notice's states, exposure, language): who is in, who is left out and why, a page
at a time, counted by the service; then the send, through the same send form."""

from __future__ import annotations

import itertools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from notifier.message import state_words
from notifier.volunteer import EXPOSURES, LOCALES
from notifier.web.campaigns import known_campaign
from notifier.web.console import console_of
from notifier.web.rendering import page
from notifier.web.sending import cohort_of, cohort_query

# People listed on one page: never everyone at once.
PAGE_SIZE = 50
# The followed notice's states a follow-up is usually narrowed by (any state may be typed).
COMMON_STATES = ("sent", "delivered", "expired", "bounced_soft", "deferred", "pending")


def cohort_page(request: Request) -> Response:
    campaign_id = request.path_params["campaign_id"]
    cohort = cohort_of(request.query_params)
    showing = "out" if request.query_params.get("show") == "out" else "in"
    number = _page_number(request.query_params.get("page"))
    with console_of(request).workspace() as ws:
        campaign = known_campaign(ws, campaign_id)
        summary = ws.cohort_summary(campaign_id, cohort)
        wanted = (m for m in ws.cohort(campaign_id, cohort) if m.included == (showing == "in"))
        start = (number - 1) * PAGE_SIZE
        # One page more than shown: whether there is a next page.
        members = list(itertools.islice(wanted, start, start + PAGE_SIZE + 1))
    listed_total = summary.included if showing == "in" else summary.volunteers - summary.included
    return page(
        request,
        "cohort.html",
        campaign=campaign,
        cohort=cohort,
        summary=summary,
        members=members[:PAGE_SIZE],
        has_next=len(members) > PAGE_SIZE,
        number=number,
        first=start + 1,
        showing=showing,
        listed_total=listed_total,
        query=cohort_query(cohort),
        exposures=EXPOSURES,
        locales=LOCALES,
        common_states=COMMON_STATES,
        state_words=state_words,
    )


def _page_number(given: str | None) -> int:
    try:
        number = int(given or "1")
    except ValueError:
        return 1
    return min(max(number, 1), 10**9)


ROUTES: list[BaseRoute] = [
    Route("/campaigns/{campaign_id}/cohort", cohort_page, methods=["GET", "HEAD"]),
]
