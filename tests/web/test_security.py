"""Who may use the console: the one-time address, the session cookie, the CSRF token and
Origin of every POST, the headers on every response (refusals included), and the
address it listens on."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import write_org_config
from console_client import Client, csrf_of, signed_in
from starlette.routing import Route

from notifier.config import load_settings
from notifier.web.app import routes
from notifier.web.console import Console
from notifier.web.server import bind, console_in_thread, is_loopback

PAGES = ("/campaigns", "/campaigns/2020-03-breach", "/static/console.css")


def post_routes() -> list[str]:
    """Every route that changes something, with a placeholder for its parameters."""
    found = []
    for route in routes():
        if isinstance(route, Route) and "POST" in (route.methods or ()):
            found.append(route.path.replace("{campaign_id}", "2020-03-breach"))
    return found


def test_the_printed_address_signs_in_once_and_leaves_the_address_bar(console: Console) -> None:
    browser = Client(console.origin)
    reply = browser.sign_in(console.address())
    assert reply.status == 303
    assert reply.header("Location") == "/"  # the token is gone from the address bar
    cookie = reply.header("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert browser.get("/campaigns").status == 200
    # The same address again (a second browser, or someone reading the history):
    other = Client(console.origin)
    again = other.sign_in(console.address())
    assert again.status == 403
    assert other.cookie is None
    assert other.get("/campaigns").status == 403


@pytest.mark.parametrize("path", PAGES)
def test_without_the_cookie_every_page_is_refused(console: Console, path: str) -> None:
    reply = Client(console.origin).get(path)
    assert reply.status == 403
    assert "address the console printed" in reply.text


def test_a_wrong_token_or_a_forged_cookie_is_refused(console: Console) -> None:
    browser = Client(console.origin)
    assert browser.get("/?token=not-the-token").status == 403
    forged = Client(console.origin, cookie="notifier_console=guessed")
    assert forged.get("/campaigns").status == 403
    # The real token still works once after a wrong guess.
    assert browser.sign_in(console.address()).status == 303


def test_the_security_headers_are_on_pages_and_refusals(console: Console, client: Client) -> None:
    for reply in (client.get("/campaigns"), Client(console.origin).get("/campaigns")):
        policy = reply.header("Content-Security-Policy")
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert reply.header("X-Frame-Options") == "DENY"
        assert reply.header("Referrer-Policy") == "no-referrer"
        assert reply.header("X-Content-Type-Options") == "nosniff"


def test_another_host_name_is_refused(console: Console, client: Client) -> None:
    """A page of another site whose name points at this machine (DNS rebinding)."""
    port = urlsplit(console.origin).port
    reply = client.request("GET", "/campaigns", headers={"Host": f"attacker.example:{port}"})
    assert reply.status == 403


def test_every_post_route_needs_the_session_csrf_token(console: Console, client: Client) -> None:
    paths = post_routes()
    assert "/signout" in paths
    token = csrf_of(client.get("/campaigns").text)
    for path in paths:
        assert client.post(path, {}, csrf=None).status == 403, path
        assert client.post(path, {}, csrf="").status == 403, path
        altered = token[:-1] + ("B" if token.endswith("A") else "A")
        assert client.post(path, {}, csrf=altered).status == 403, path
        assert client.post(path, {}, csrf=token + "x").status == 403, path
    assert client.get("/campaigns").status == 200  # nothing above signed it out


def test_every_post_route_needs_our_origin(console: Console, client: Client) -> None:
    for path in post_routes():
        token = csrf_of(client.get("/campaigns").text)
        for origin in (None, "http://attacker.example", "null", console.origin + "0"):
            reply = client.post(path, {}, origin=origin, csrf=token)
            assert reply.status == 403, (path, origin)
    assert client.get("/campaigns").status == 200


def test_only_get_and_post_are_served(client: Client) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        assert client.request(method, "/campaigns").status == 405


def test_signing_out_ends_the_session(client: Client) -> None:
    reply = client.post("/signout", {})
    assert reply.status == 200
    assert "Signed out" in reply.text
    assert client.get("/campaigns").status == 403


def test_a_forms_post_from_the_page_is_taken(client: Client) -> None:
    """The other side of the refusals above: the page's own token and Origin work."""
    page = client.get("/campaigns").text
    assert client.post("/signout", {}, csrf=csrf_of(page)).status == 200


def test_the_console_listens_on_loopback_by_default(console: Console) -> None:
    host = urlsplit(console.origin).hostname
    assert host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")  # noqa: S104


def test_a_taken_port_is_a_clear_error(console: Console) -> None:
    port = urlsplit(console.origin).port
    assert port is not None
    with pytest.raises(Exception, match="choose one with --port"):
        bind("127.0.0.1", port)


def test_a_response_can_only_choose_among_the_guards_policies() -> None:
    """A page names a looser set of headers (a framed notice, a document); a policy it
    writes itself, or a name the guard does not know, gets the strict headers."""
    from notifier.web.app import _policy_for
    from notifier.web.security import FRAMED_HEADERS, SECURITY_HEADERS

    assert _policy_for([(b"x-notifier-policy", b"framed")]) == FRAMED_HEADERS
    assert _policy_for([(b"x-notifier-policy", b"anything")]) == SECURITY_HEADERS
    own = [(b"content-security-policy", b"script-src *")]
    assert _policy_for(own) == SECURITY_HEADERS


def test_a_console_on_a_ledger_not_made_yet_says_to_upload_the_roster(
    tmp_path: Path,
) -> None:
    config = write_org_config(tmp_path)
    settings = load_settings(config, ledger=tmp_path / "notifier.db", env={})
    with console_in_thread(settings) as console:
        browser = signed_in(console.origin, console.address())
        reply = browser.get("/campaigns")
    assert reply.status == 200
    assert "There is no ledger yet" in reply.text and 'href="/roster"' in reply.text
    assert not settings.ledger.exists()  # looking made nothing
