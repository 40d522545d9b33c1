"""Serving the console: on this machine's loopback address unless told otherwise, until
Ctrl-C (or the caller) stops it."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from notifier.config import Settings
from notifier.errors import NotifierError
from notifier.web.app import create_app
from notifier.web.console import Console

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# How long a test's server may take to start or stop (seconds): every wait is bounded.
STARTUP_WAIT = 10.0


class ConsoleError(NotifierError):
    """The console cannot start (its port is taken, its address is not this machine's)."""


def is_loopback(host: str) -> bool:
    """Whether `host` is an address only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConsoleError(
            f"cannot listen on {host}:{port} ({exc.strerror})",
            hint="another program (or another console) uses that port: choose one with --port",
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def origin_of(sock: socket.socket) -> str:
    """The console's own address, as a browser names it in `Origin`."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(console: Console) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(console),
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def serve(settings: Settings, sock: socket.socket, announce: Callable[[str], None]) -> None:
    """Serve the console for `settings`' ledger on `sock` until Ctrl-C, which stops it
    cleanly (requests in progress are answered first). `announce` is given the address
    to open, with its one-time token, before the first request is taken."""
    console = Console(settings, origin_of(sock))
    announce(console.address())
    # uvicorn shuts down gracefully on the signal, then raises it again: here that is
    # the normal end of the console, not an interruption.
    with contextlib.suppress(KeyboardInterrupt):
        _server(console).run(sockets=[sock])


@contextlib.contextmanager
def console_in_thread(settings: Settings, host: str = DEFAULT_HOST) -> Iterator[Console]:
    """A console serving on a free port of `host` from a thread of this process, stopped
    on leaving (for tests, and for programs that embed it)."""
    sock = bind(host, 0)
    console = Console(settings, origin_of(sock))
    server = _server(console)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="notifier-console", daemon=True
    )
    thread.start()
    try:
        for _ in range(int(STARTUP_WAIT / 0.02)):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.02)
        if not server.started:
            raise ConsoleError("the console did not start")
        yield console
    finally:
        server.should_exit = True
        thread.join(STARTUP_WAIT)
        sock.close()
