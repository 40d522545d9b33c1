"""The roster page: upload, a preview of every rejected row, warning and change, then an
import in the background, on a real console over a real ledger; files it refuses."""

from __future__ import annotations

import html
import http.client
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO, write_org_config
from console_client import Client, Reply, csrf_of, signed_in

from notifier.config import Settings, load_settings
from notifier.service import VolunteerQuery, Workspace
from notifier.web.console import Console
from notifier.web.server import console_in_thread

EXAMPLES = REPO / "examples"
WAIT = 30.0


def upload(
    client: Client,
    content: bytes,
    *,
    name: str = "volunteers.csv",
    mapping: bytes | None = None,
    encoding: str = "auto",
) -> Reply:
    """Post the roster form as the page does (mapping as a second file)."""
    files = [("roster", name, content)]
    if mapping is not None:
        files.append(("mapping", "mapping.toml", mapping))
    fields = {"encoding": encoding, "default_locale": "en"}
    return client.post_files("/roster/preview", fields, files, page="/roster")


def hidden(page: str, name: str) -> str:
    found = re.search(f'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} field on the page"
    return found.group(1)


def confirm(client: Client, preview: Reply) -> Reply:
    """Press the import button of a preview page; then follow the progress page (it
    refreshes itself) until the import ends."""
    page = preview.text
    reply = client.post(
        "/roster/import",
        {"upload": hidden(page, "upload"), "sha256": hidden(page, "sha256")},
        csrf=csrf_of(page),
    )
    if reply.status != 303:
        return reply
    location = reply.header("Location")
    assert location.startswith("/roster/imports/")
    return client.when_done(location, WAIT)


def volunteer_count(settings: Settings) -> int:
    with Workspace(settings) as ws:
        return ws.volunteer_count()


def imports(settings: Settings) -> int:
    with Workspace(settings) as ws:
        latest = ws.latest_import()
        return latest.import_id if latest else 0


@pytest.fixture
def empty_console(empty_settings: Settings) -> Iterator[Console]:
    with console_in_thread(empty_settings) as running:
        yield running


@pytest.fixture
def fresh(empty_console: Console) -> Client:
    return signed_in(empty_console.origin, empty_console.address())


def leftovers(settings: Settings) -> list[Path]:
    return list(settings.ledger.parent.glob(".notifier-upload-*"))


def test_the_example_roster_shows_its_rejected_rows_then_imports(
    fresh: Client, empty_settings: Settings, empty_console: Console
) -> None:
    preview = upload(fresh, (EXAMPLES / "volunteers.csv").read_bytes())
    assert preview.status == 200, preview.text
    text = html.unescape(preview.text)
    assert "Read as utf-8" in text and "200 rows, 194 valid, 6 rejected" in text
    # Each rejected row as `roster import` prints it: row, column, value, reason.
    with Workspace(empty_settings) as ws, ws.import_roster(EXAMPLES / "volunteers.csv") as cli:
        expected = list(ws.rejected_rows(cli.summary.import_id))
    cells = re.findall(
        r'<tr><td class="number">(\d+)</td><td>(.*?)</td><td class="value"><code>(.*?)</code>'
        r"</td><td>(.*?)</td></tr>",
        preview.text,
    )
    assert [
        (int(r), html.unescape(c), html.unescape(v), html.unescape(why)) for r, c, v, why in cells
    ][: len(expected)] == [(p.row, p.column, p.value, p.reason) for p in expected]
    assert "Added</dt><dd>194" in preview.text  # nobody was in the ledger
    assert leftovers(empty_settings)  # the file waits, privately, beside the ledger
    (folder,) = leftovers(empty_settings)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in folder.rglob("*") if f.is_file())


def test_preview_writes_nothing_and_confirm_imports_exactly_it(
    fresh: Client, empty_settings: Settings
) -> None:
    preview = upload(fresh, (EXAMPLES / "volunteers.csv").read_bytes())
    assert preview.status == 200
    assert volunteer_count(empty_settings) == 0 and imports(empty_settings) == 0
    done = confirm(fresh, preview)
    assert done.status == 200, done.text
    assert "194 added, 0 updated, 0 unchanged, 6 rows rejected" in done.text
    assert volunteer_count(empty_settings) == 194
    assert not leftovers(empty_settings)  # deleted once imported

    # An edited roster: the preview names the fields it would change, then it changes.
    edited = (EXAMPLES / "volunteers.csv").read_text(encoding="utf-8").replace("Ava", "Avalon", 1)
    second = upload(fresh, edited.encode())
    page = html.unescape(second.text)
    assert "Updated</dt><dd>1" in second.text
    assert "given_name" in page and "Avalon" in page
    assert "Rejected rows</dt><dd>6" in second.text
    assert confirm(fresh, second).status == 200
    with Workspace(empty_settings) as ws:
        assert any(v.given_name == "Avalon" for v in ws.volunteers(VolunteerQuery(text="Avalon")))


def test_a_cp932_file_with_its_mapping_keeps_japanese_names(
    fresh: Client, empty_settings: Settings
) -> None:
    preview = upload(
        fresh,
        (EXAMPLES / "partner-ja.csv").read_bytes(),
        name="partner-ja.csv",
        mapping=(EXAMPLES / "partner-ja-mapping.toml").read_bytes(),
    )
    assert preview.status == 200, preview.text
    assert "Read as cp932, mapped by mapping.toml" in html.unescape(preview.text)
    assert confirm(fresh, preview).status == 200
    with Workspace(empty_settings) as ws:
        people = list(ws.volunteers())
        latest = ws.latest_import()
    assert people and any(v.locale == "ja" for v in people)
    japanese = [v for v in people if v.locale == "ja"]
    assert all(re.search("[\u3040-\u30ff\u4e00-\u9fff]", v.family_name) for v in japanese)
    assert latest is not None and latest.encoding == "cp932"
    # The name the person knows, never the private folder the upload waited in.
    assert latest.file_name == "partner-ja.csv"
    with Workspace(empty_settings) as ws:
        events = [e for e in ws.ledger().events() if e.kind == "roster_imported"]
    assert [(e.data["file"], e.data["file_name"]) for e in events] == [
        ("partner-ja.csv", "partner-ja.csv")
    ]


def test_hostile_cells_are_shown_as_text(fresh: Client) -> None:
    roster = (
        "volunteer_id,email,family_name,given_name,exposure\r\n"
        "X1,<script>alert(1)</script>,Bad,Row,screened\r\n"
        'X2,x2@example.org,Bad,Row,"=HYPERLINK(""http://evil.example"")"\r\n'
        "X3,ok@example.org,Ok,Fine,screened\r\n"
    )
    preview = upload(fresh, roster.encode())
    assert preview.status == 200
    assert "<script>alert(1)" not in preview.text
    assert "&lt;script&gt;" in preview.text
    assert "=HYPERLINK(" in html.unescape(preview.text)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "the file is empty"),
        (b"\x00\x01\x02PK\x00" * 100 + b"\xff\xfe\x00", "cannot be read as"),
        (b"PK\x03\x04" + b"\x00" * 200, "not a CSV file"),
        (b"name,phone\r\nA,1\r\n", "email"),
    ],
    ids=["empty", "binary", "workbook", "unknown-header"],
)
def test_unusable_files_are_refused_with_nothing_imported(
    fresh: Client, empty_settings: Settings, content: bytes, says: str
) -> None:
    reply = upload(fresh, content)
    assert reply.status == 400
    assert says in html.unescape(reply.text)
    assert 'role="alert"' in reply.text and "What to do:" in reply.text
    assert "notifier-upload" not in reply.text  # names the person's file, not where it waited
    assert imports(empty_settings) == 0 and volunteer_count(empty_settings) == 0
    assert not leftovers(empty_settings)


def test_a_confirm_after_the_file_changed_is_refused(
    fresh: Client, empty_settings: Settings
) -> None:
    preview = upload(fresh, (EXAMPLES / "volunteers.csv").read_bytes())
    (folder,) = leftovers(empty_settings)
    (waiting,) = (folder / "roster").iterdir()
    waiting.write_bytes(waiting.read_bytes().replace(b"Ava", b"Eve", 1))
    reply = confirm(fresh, preview)
    assert reply.status == 409
    assert "changed since its preview: nothing was imported" in reply.text
    assert imports(empty_settings) == 0 and volunteer_count(empty_settings) == 0
    assert not leftovers(empty_settings)


def test_a_confirm_with_another_digest_is_refused(fresh: Client, empty_settings: Settings) -> None:
    preview = upload(fresh, (EXAMPLES / "volunteers.csv").read_bytes())
    reply = fresh.post(
        "/roster/import",
        {"upload": hidden(preview.text, "upload"), "sha256": "0" * 64},
        csrf=csrf_of(preview.text),
    )
    assert reply.status == 409
    assert imports(empty_settings) == 0


@pytest.fixture
def small_limit(tmp_path: Path) -> Iterator[tuple[Console, Settings]]:
    config = write_org_config(tmp_path)
    with config.open("a", encoding="utf-8") as handle:
        handle.write("\n[roster]\nmax_bytes = 100000\n")
    settings = load_settings(config, ledger=tmp_path / "notifier.db", env={})
    Workspace(settings).ledger(create=True).close()
    with console_in_thread(settings) as running:
        yield running, settings


def test_an_upload_over_the_limit_is_refused_while_it_streams(
    small_limit: tuple[Console, Settings],
) -> None:
    """600 MB, generated as it is sent (never built in memory) without a Content-Length:
    refused once past the limit, nothing kept or imported."""
    console, settings = small_limit
    client = signed_in(console.origin, console.address())
    csrf = csrf_of(client.get("/roster").text)
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="roster"; filename="big.csv"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()
    row = b"x@example.org,Name,screened\r\n" * 2000

    def body() -> Iterator[bytes]:
        yield head
        sent = 0
        while sent < 600 * 1024 * 1024:
            yield row
            sent += len(row)

    parts = urlsplit(console.origin)
    assert parts.hostname and parts.port
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        connection.putrequest("POST", "/roster/preview")
        for name, value in (
            ("Content-Type", f"multipart/form-data; boundary={boundary}"),
            ("Origin", console.origin),
            ("Cookie", client.cookie or ""),
            ("Transfer-Encoding", "chunked"),
        ):
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for piece in body():
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the console stopped reading: refused
        response = connection.getresponse()
        text = response.read().decode("utf-8")
    finally:
        connection.close()
    assert response.status == 413
    assert "over the size limit for a roster (100,000 bytes)" in text
    assert not leftovers(settings)
    assert imports(settings) == 0


def test_a_body_claiming_600_mb_is_refused_before_it_is_read(
    console: Console, client: Client, web_settings: Settings
) -> None:
    """The default limit; only the headers are sent: the console answers at once."""
    before = imports(web_settings)
    csrf = csrf_of(client.get("/roster").text)
    assert csrf
    parts = urlsplit(console.origin)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=WAIT) as sock:
        sock.sendall(
            (
                "POST /roster/preview HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\n"
                f"Origin: {console.origin}\r\n"
                f"Cookie: {client.cookie}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {600 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"</html>" not in answer:
            block = sock.recv(65536)
            if not block:
                break
            answer += block
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"over the size limit for a roster" in answer
    assert imports(web_settings) == before
    assert not leftovers(web_settings)


def test_pages_answer_while_a_large_import_runs(
    fresh: Client, empty_settings: Settings, tmp_path: Path
) -> None:
    """100,000 rows: the import runs in the background; the console keeps answering."""
    lines = ["volunteer_id,email,family_name,given_name,locale,exposure"]
    lines += [f"B{n:06d},b{n}@example.org,Family{n},Given,en,screened" for n in range(100_000)]
    preview = upload(fresh, ("\r\n".join(lines) + "\r\n").encode(), name="big.csv")
    assert preview.status == 200
    assert "Added</dt><dd>100000" in preview.text
    page = preview.text
    reply = fresh.post(
        "/roster/import",
        {"upload": hidden(page, "upload"), "sha256": hidden(page, "sha256")},
        csrf=csrf_of(page),
    )
    assert reply.status == 303
    progress = fresh.get(reply.header("Location"))
    # Still importing: the page says so, and other pages answer meanwhile.
    assert 'http-equiv="refresh"' in progress.text
    assert fresh.get("/roster").status == 200
    assert fresh.get("/volunteers").status == 200
    fresh.when_done(reply.header("Location"), 120.0)
    assert volunteer_count(empty_settings) == 100_000


def test_a_null_origin_is_taken_only_from_our_own_page(client: Client) -> None:
    """Under `Referrer-Policy: no-referrer` Chromium posts our own forms with `Origin:
    null`, and says `Sec-Fetch-Site: same-origin` (which no page's script can set)."""
    from urllib.parse import urlencode

    csrf = csrf_of(client.get("/roster").text)
    body = urlencode({"csrf": csrf, "upload": "none"}).encode()
    for site, status in (
        ("same-origin", 303),
        ("cross-site", 403),
        ("same-site", 403),
        (None, 403),
    ):
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"}
        if site is not None:
            headers["Sec-Fetch-Site"] = site
        assert client.request("POST", "/roster/discard", body, headers).status == status, site
