"""One error hierarchy for everything a user can get wrong.

Every error carries where the problem is (file, row, field) and a hint of what to
do next, so the CLI can print one clean line instead of a traceback. Callers branch
on the type and its fields, never on the message text.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Exit codes with fixed meanings, used by the CLI and documented in the README."""

    OK = 0
    PROBLEMS = 1  # the job ran, but found problems (bad rows under --strict, a failed check)
    UNUSABLE = 2  # the input could not be used at all
    INTERRUPTED = 130  # the shell's code for "stopped by Ctrl-C"


class NotifierError(Exception):
    """Base class: a problem the user can act on."""

    exit_code: int = ExitCode.UNUSABLE

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        self.hint = hint

    def location(self) -> str:
        """`file:row: field` prefix, with whatever parts are known."""
        parts = []
        if self.file:
            parts.append(self.file if self.row is None else f"{self.file}:{self.row}")
        elif self.row is not None:
            parts.append(f"row {self.row}")
        if self.field:
            parts.append(f'column "{self.field}"' if self.row is not None else self.field)
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\nhint: {self.hint}" if self.hint else text


class RosterError(NotifierError):
    """A roster file that cannot be used at all (encoding, no email column, empty)."""


class MappingError(NotifierError):
    """A malformed --mapping file."""


class ConfigError(NotifierError):
    """A malformed notifier.toml or environment setting."""


class LedgerError(NotifierError):
    """The ledger file cannot be opened, is of a newer schema, or is corrupt."""


class UnknownLocale(NotifierError):
    """A locale no notifier.locales.LocaleSpec describes."""


class CampaignError(NotifierError):
    """A campaign file that is missing, malformed or names unknown things."""


class UnknownCampaign(CampaignError):
    """No campaign has that id (the message names the closest known ids)."""


class RenderError(NotifierError):
    """A template failed to render (missing variable, syntax error)."""


class VolunteerNotFound(NotifierError):
    """No volunteer with that id or address in the ledger."""


class DeliveryError(NotifierError):
    """The SMTP target cannot be used (bad URL, refused, TLS required but absent)."""


class BounceError(NotifierError):
    """A bounce source that cannot be read."""


class CatalogError(NotifierError):
    """A catalog that is missing or cannot be parsed."""


class TemplateRenderError(RenderError):
    """A template failed for one volunteer; `detail` is the same for everyone it fails for."""

    def __init__(
        self, detail: str, *, file: str | Path, line: int | None, volunteer_id: str
    ) -> None:
        super().__init__(
            f"{detail} (rendering for volunteer {volunteer_id})",
            file=file,
            row=line,
            hint="fix the template, or the campaign's [dates] if a date is missing",
        )
        self.detail = detail
        self.volunteer_id = volunteer_id


class CohortError(NotifierError):
    """A narrowing option that does not fit the campaign."""


class ComposeError(NotifierError):
    """A message cannot be written as valid mail (an address that cannot go in a header)."""


class SMTPUTF8Required(ComposeError):
    """The address has a non-ASCII local part, which only an SMTPUTF8 server can carry."""


class FatalDeliveryError(DeliveryError):
    """A problem no retry can fix (TLS required but absent, credentials refused)."""


class SendInProgress(NotifierError):
    """Another process is sending from this ledger: a second sender would tell people twice."""


class EvidenceError(NotifierError):
    """An MTA log or Maildir given as evidence that cannot be read."""


class OutputError(NotifierError):
    """A file or folder the user asked for (an --out, --rejects, --maildir, the ledger's
    folder) cannot be written: one line saying which, never a traceback."""


class KeyFileError(NotifierError):
    """The ledger's key file is missing, damaged, or belongs to another ledger."""


class ApprovalError(NotifierError):
    """A send without a current approval of the campaign's exact content (four eyes)."""

    exit_code = ExitCode.PROBLEMS


class CheckFailed(NotifierError):
    """The whole-campaign check finds problems: nothing is approved or sent until it passes."""

    exit_code = ExitCode.PROBLEMS

    def __init__(self, message: str, *, problems: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class LedgerUnkeyed(LedgerError):
    """A ledger written before keyed hashes: it takes no new events until upgraded."""

    exit_code = ExitCode.PROBLEMS


class IllegalTransition(LedgerError):
    """A move of a message's state that the lifecycle does not allow: nothing was written."""


class LedgerTampered(LedgerError):
    """The ledger fails verification: nothing is sent from it."""

    exit_code = ExitCode.PROBLEMS
