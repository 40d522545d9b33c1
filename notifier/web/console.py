"""What every page of the console shares: the ledger's settings, the console's own
address, its sessions, its background work and the files waiting to be imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request

from notifier.config import Settings
from notifier.service import Workspace
from notifier.web.jobs import Jobs
from notifier.web.security import TOKEN_PARAMETER, Sessions
from notifier.web.uploads import Uploads


@dataclass
class Console:
    """What every page shares: the settings of the ledger it serves, its own address
    (the only `Origin` a form may come from) and the sessions it opened."""

    settings: Settings
    origin: str
    sessions: Sessions = field(default_factory=Sessions)
    jobs: Jobs = field(default_factory=Jobs)
    uploads: Uploads = field(default_factory=Uploads)

    def workspace(self) -> Workspace:
        """A workspace for one request or one piece of background work (each opens its
        own connection to the ledger; close it, or use it as a context manager)."""
        return Workspace(self.settings)

    def address(self) -> str:
        """The address to open, with the one-time token."""
        return f"{self.origin}/?{urlencode({TOKEN_PARAMETER: self.sessions.token})}"


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console
