"""The `notifier` command: a thin click layer over the library.

Each command group lives in its own module here (roster, ledger, campaign, send, status,
...); commands parse options, call library functions and print. A NotifierError becomes
one clean line on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

# Importing a command module registers its commands on the root group.
from notifier.cli import approve as _approve  # noqa: F401
from notifier.cli import bounces as _bounces  # noqa: F401
from notifier.cli import campaign as _campaign  # noqa: F401
from notifier.cli import cohort as _cohort  # noqa: F401
from notifier.cli import demo as _demo  # noqa: F401
from notifier.cli import ledger as _ledger  # noqa: F401
from notifier.cli import preview as _preview  # noqa: F401
from notifier.cli import reconcile as _reconcile  # noqa: F401
from notifier.cli import report as _report  # noqa: F401
from notifier.cli import roster as _roster  # noqa: F401
from notifier.cli import send as _send  # noqa: F401
from notifier.cli import sink as _sink  # noqa: F401
from notifier.cli import status as _status  # noqa: F401
from notifier.cli import web as _web  # noqa: F401
from notifier.cli.app import cli, main

__all__ = ["cli", "main"]
