"""Every link the console shows leads somewhere: a crawl from each section's page, on the
example roster (its rejected rows among the people to write to by post)."""

from __future__ import annotations

import html
import re

from console_client import Client

SECTIONS = ("/campaigns", "/roster", "/volunteers", "/bounces", "/ledger")
MAX_PAGES = 150  # bounded: the example roster's pages, and some to spare
LINK = re.compile(r'href="(/[^"#]*)"')
DOWNLOADS = (".eml", ".csv")


def test_every_link_on_every_page_answers(client: Client) -> None:
    seen: set[str] = set()
    queue = list(SECTIONS)
    broken = []
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        reply = client.get(path)
        if reply.status != 200:
            broken.append(f"{path}: {reply.status}")
            continue
        if not reply.header("Content-Type").startswith("text/html"):
            continue
        for href in LINK.findall(reply.text):
            link = html.unescape(href)
            if not link.startswith("/static/") and link not in seen:
                queue.append(link)
    assert broken == []
    assert len(seen) > 50  # it did crawl: the volunteers' pages among them
    assert any(p.endswith(DOWNLOADS) for p in seen)
