"""A plain HTTP client for the web console's tests: stdlib `http.client` against the real
server on 127.0.0.1, keeping the session cookie the way a browser does."""

from __future__ import annotations

import http.client
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import urlencode, urlsplit

TIMEOUT = 30.0  # seconds: every request is bounded


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass
class Client:
    """One browser: its cookie, and the console's address."""

    origin: str
    cookie: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        parts = urlsplit(self.origin)
        assert parts.hostname is not None and parts.port is not None
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        try:
            sent = {**self.extra_headers, **(headers or {})}
            if self.cookie is not None:
                sent.setdefault("Cookie", self.cookie)
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        for value in reply.headers.get_all("set-cookie") or []:
            pair = value.split(";", 1)[0]
            _name, _, token = pair.partition("=")
            self.cookie = None if not token or "Max-Age=0" in value else pair
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def when_done(self, job_page: str, seconds: float = 30.0) -> Reply:
        """A background job's page once the job has ended (it no longer refreshes
        itself), asked for every 50 ms for at most `seconds`."""
        pause = threading.Event()
        for _ in range(int(seconds / 0.05)):
            reply = self.get(job_page)
            if 'http-equiv="refresh"' not in reply.text:
                return reply
            pause.wait(0.05)
        raise AssertionError(f"{job_page} still running after {seconds} s")

    def sign_in(self, address: str) -> Reply:
        """Open the printed address (with its token), as the person does first."""
        parts = urlsplit(address)
        return self.get(f"{parts.path}?{parts.query}")

    def post(
        self,
        path: str,
        fields: dict[str, str],
        *,
        origin: str | None = "own",
        csrf: str | None = "from-page",
        page: str | None = None,
    ) -> Reply:
        """POST a form as our pages do: with the page's CSRF token (read from `page`, or
        from `path`'s own page) and our Origin; `csrf`/`origin` None leaves them out."""
        data = dict(fields)
        if csrf == "from-page":
            csrf = csrf_of(self.get(page or "/campaigns").text)
        if csrf is not None:
            data["csrf"] = csrf
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["Origin"] = self.origin if origin == "own" else origin
        return self.request("POST", path, urlencode(data).encode(), headers)

    def post_files(
        self,
        path: str,
        fields: dict[str, str],
        files: list[tuple[str, str, bytes]],
        *,
        page: str | None = None,
    ) -> Reply:
        """POST a multipart form as an upload form does: its fields, the page's CSRF
        token (read from `page`), our Origin, and each (field, file name, content)."""
        boundary = uuid.uuid4().hex
        data = {"csrf": csrf_of(self.get(page or "/campaigns").text), **fields}
        chunks = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
            for name, value in data.items()
        ]
        for field_name, filename, content in files:
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
                f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": self.origin,
        }
        return self.request("POST", path, b"".join(chunks), headers)


CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF_INPUT.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def signed_in(origin: str, address: str) -> Client:
    client = Client(origin)
    reply = client.sign_in(address)
    assert reply.status == 303, reply.text
    assert client.cookie is not None
    return client
