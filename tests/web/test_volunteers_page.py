"""The volunteers pages: a search a page at a time; one person's page with their notice in
both languages, its HTML in a sandboxed frame with its own policy, and the exact .eml
`notifier preview --format eml` writes."""

from __future__ import annotations

import email
import email.policy
import html
import re
from pathlib import Path

from click.testing import CliRunner
from console_client import Client

from notifier.cli import cli
from notifier.config import Settings
from notifier.service import VolunteerQuery, Workspace

CAMPAIGN = "2020-03-breach"
ROW_LINK = re.compile(r'<th scope="row"><a href="/volunteers/([^"]+)">')


def a_japanese_volunteer(settings: Settings) -> str:
    with Workspace(settings) as ws:
        return next(iter(ws.volunteers(VolunteerQuery(locales=("ja",))))).volunteer_id


def test_the_list_comes_a_page_at_a_time(client: Client) -> None:
    seen: list[str] = []
    address = "/volunteers"
    for _ in range(10):  # 194 people, 50 a page: four pages
        page = client.get(address)
        assert page.status == 200
        ids = ROW_LINK.findall(page.text)
        assert 0 < len(ids) <= 50
        seen += ids
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        if found is None:
            break
        address = html.unescape(found.group(1))
    assert len(seen) == 194 == len(set(seen))
    assert seen == sorted(seen)
    assert "194 volunteers" in client.get("/volunteers").text


def test_search_by_id_address_and_name(client: Client, web_settings: Settings) -> None:
    with Workspace(web_settings) as ws:
        person = next(iter(ws.volunteers(VolunteerQuery(locales=("ja",)))))
    for words in (person.volunteer_id, person.email.upper(), person.family_name):
        page = client.get(f"/volunteers?q={_q(words)}")
        assert person.volunteer_id in ROW_LINK.findall(page.text), words
    # Typed text is text: a % matches a %, not everything.
    assert ROW_LINK.findall(client.get("/volunteers?q=%25").text) == []


def _q(words: str) -> str:
    from urllib.parse import quote

    return quote(words, safe="")


def test_a_japanese_volunteer_page_has_both_languages(
    client: Client, web_settings: Settings
) -> None:
    vid = a_japanese_volunteer(web_settings)
    page = client.get(f"/volunteers/{vid}")
    assert page.status == 200, page.text
    text = page.text
    assert '<article class="version" lang="ja"' in text
    assert '<article class="version" lang="en"' in text
    # Their own language first: what a send makes; the English beside it, for reading.
    assert text.index('lang="ja" aria-label="Their own language') < text.index(
        'lang="en" aria-label="The other language'
    )
    assert re.search("[\u3040-\u30ff]", text)  # the Japanese notice's text
    frames = re.findall(r'<iframe class="html" sandbox src="([^"]+)"', text)
    assert f"/volunteers/{vid}/notices/{CAMPAIGN}/ja.html" in frames
    assert f"/volunteers/{vid}/notices/{CAMPAIGN}/en.html" in frames
    assert f'href="/volunteers/{vid}/notices/{CAMPAIGN}.eml" download' in text
    assert "frame-src 'self'" in page.header("Content-Security-Policy")
    assert page.header("X-Frame-Options") == "DENY"


def test_the_html_part_is_served_for_a_sandboxed_frame_only(
    client: Client, web_settings: Settings
) -> None:
    vid = a_japanese_volunteer(web_settings)
    reply = client.get(f"/volunteers/{vid}/notices/{CAMPAIGN}/ja.html")
    assert reply.status == 200
    assert "<html" in reply.text.lower() and 'lang="ja"' in reply.text
    policy = reply.header("Content-Security-Policy")
    assert "sandbox" in policy and "frame-ancestors 'self'" in policy
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert reply.header("X-Frame-Options") == "SAMEORIGIN"
    assert "x-notifier-policy" not in str(reply.headers).lower()
    # Every other page keeps the strict headers.
    assert client.get("/volunteers").header("X-Frame-Options") == "DENY"
    assert client.get(f"/volunteers/{vid}/notices/{CAMPAIGN}/fr.html").status == 400


def test_the_eml_is_the_one_the_cli_writes(
    client: Client, web_settings: Settings, tmp_path: Path
) -> None:
    vid = a_japanese_volunteer(web_settings)
    reply = client.get(f"/volunteers/{vid}/notices/{CAMPAIGN}.eml")
    assert reply.status == 200
    assert reply.header("Content-Type") == "message/rfc822"
    assert reply.header("Content-Disposition").startswith("attachment;")
    out = tmp_path / "cli.eml"
    result = CliRunner().invoke(
        cli,
        [
            "--ledger",
            str(web_settings.ledger),
            "preview",
            CAMPAIGN,
            "--volunteer",
            vid,
            "--format",
            "eml",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    ours = email.message_from_bytes(reply.body, policy=email.policy.default)
    theirs = email.message_from_bytes(out.read_bytes(), policy=email.policy.default)
    # Only the Date differs: it is the time of each preview.
    assert [(k, v) for k, v in ours.items() if k != "Date"] == [
        (k, v) for k, v in theirs.items() if k != "Date"
    ]
    assert ours.get_body(("plain",)).get_content() == theirs.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert ours.get_body(("html",)).get_content() == theirs.get_body(("html",)).get_content()  # type: ignore[union-attr]
    date = re.compile(rb"^Date: .*\r\n", re.MULTILINE)
    assert date.sub(b"", reply.body) == date.sub(b"", out.read_bytes())


def test_an_unknown_volunteer_or_campaign_is_a_404(client: Client, web_settings: Settings) -> None:
    assert client.get("/volunteers/NOBODY-1").status == 404
    vid = a_japanese_volunteer(web_settings)
    reply = client.get(f"/volunteers/{vid}/notices/2020-03-breech.eml")
    assert reply.status == 404
    assert "2020-03-breach" in reply.text  # did you mean
