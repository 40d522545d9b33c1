"""The one way in: every operation on a ledger, with every rule enforced here.

`Workspace` is a ledger and the settings that belong to it. The command line
(`notifier.cli`) and the web console only parse what a person asked for, call a method
here, and show what it returns; nothing they do can skip a rule, because the rules are
here and in the ledger, not at the edges:

- **Settings belong to the ledger**: `notifier.toml` beside the ledger file (or the one
  named by --config / NOTIFIER_CONFIG), whatever folder the command runs in.
- **Four eyes**: a send goes ahead only on a current approval of the campaign's exact
  content (`[send] require_approval = false` turns that off, explicitly).
- **A clean check**: approving runs the whole-campaign check and refuses while it finds
  problems; a send refuses too, unless a check of the same content against the same
  roster and history already passed (recorded in the chain with the approval, or by the
  send that ran it).
- **One sender**: sends, resends, roster imports and reconciles hold the ledger's lease
  (notifier.ledger.lease); a claim is conditional in the ledger itself.
- **In flight or uncertain**: a claimed message is in flight while the send that claimed
  it is alive, uncertain otherwise (notifier.message.is_uncertain).
- **A send run is recorded**: its exact selection is its `send_started` event, so
  `resume` continues exactly that run, and `status` names the command that does.
- **The whole truth**: `status` and `report` count the campaign's audience, who was
  sent the notice and who is still owed it, and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from notifier import approval as four_eyes
from notifier.approval import Approval, ApprovalStatus
from notifier.audience import (
    audience_with_wording,
    count_audience,
    earlier_reached_of,
    history_applies,
    membership_of,
)
from notifier.bounces import (
    BounceRecord,
    IngestSummary,
    UnmatchedReport,
    ingest,
    parse_full_report,
    read_imap,
    read_sources,
    records_for_people,
)
from notifier.bounces import unmatched_reports as kept_unmatched
from notifier.campaign import Campaign, apply_overrides, list_campaigns, load_campaign
from notifier.campaign import require_known_campaign as _require_known
from notifier.check import CheckReport, check_campaign
from notifier.cohort import (
    CohortFilter,
    CohortMember,
    CohortSummary,
    explain_cohort,
    is_waiting,
    read_ids_file,
    summarise_cohort,
)
from notifier.compose import ComposedMessage, Composer, load_dkim_key
from notifier.config import Settings, load_settings
from notifier.delivery import SendOptions
from notifier.errors import (
    CampaignError,
    CheckFailed,
    EvidenceError,
    NotifierError,
)
from notifier.event import EventKind
from notifier.ledger import (
    Event,
    EventDraft,
    Holder,
    ImportPlan,
    ImportRecord,
    ImportSummary,
    Ledger,
    PlannedUpdate,
    Settled,
    VerifyResult,
    VolunteerQuery,
)
from notifier.ledger.chain import UPGRADE_HINT
from notifier.ledger.opening import read_only_error
from notifier.ledger.upgrade import Upgraded
from notifier.message import (
    MessageRow,
    MessageState,
    is_uncertain,
)
from notifier.outputs import counted
from notifier.owed_counts import OwedCounts, owed_counts
from notifier.pipeline import (
    MessageIds,
    SendObserver,
    SendPlan,
    SendRequest,
    SendScope,
    SendSummary,
    choose,
    plan_send,
    require_followed_sent,
    resend_states,
    send_audience,
    send_campaign,
)
from notifier.placeholders import placeholders
from notifier.proof import proof_sheet
from notifier.reconcile import Evidence, maildir_evidence, postfix_log_evidence
from notifier.render import Renderer
from notifier.report import (
    CampaignReport,
    Owed,
    RecipientsWriter,
    UnreachablePerson,
    materialised,
    open_campaign_report,
    unreachable,
    unreachable_people,
)
from notifier.report import volunteer_history as history_of
from notifier.roster import (
    ENCODING_CHOICES,
    RosterMapping,
    RosterStream,
    RowProblem,
    load_mapping,
    open_roster,
)
from notifier.secret import key_file_warning
from notifier.sink import is_running_sink
from notifier.smtp.session import ServerInfo, SessionOptions
from notifier.smtp.target import SmtpTarget, target_for
from notifier.testsend import (
    TEST_PREFIX,
    TestSendResult,
    TestSends,
    checked_test_address,
    send_tests,
    volunteers_for_test,
)
from notifier.told import AddressMove, moved_addresses
from notifier.volunteer import LOCALES, Volunteer, surname_initial

log = logging.getLogger(__name__)

Progress = Callable[[], None]

# What callers (the command line, the console) use: the workspace, and the plain records
# its operations take and return.
__all__ = [
    "ENCODING_CHOICES",
    "RESUME_HINT",
    "TEST_PREFIX",
    "UPGRADE_HINT",
    "AddressMove",
    "ApprovalStatus",
    "Approved",
    "BounceRecord",
    "Campaign",
    "CampaignReport",
    "CampaignStatus",
    "CheckReport",
    "CohortFilter",
    "CohortMember",
    "CohortSummary",
    "ComposedMessage",
    "Event",
    "ImportPlan",
    "ImportRecord",
    "ImportSummary",
    "IngestSummary",
    "Owed",
    "PlannedUpdate",
    "Preview",
    "PreviewRun",
    "RosterImport",
    "RosterPlan",
    "RosterStream",
    "RowProblem",
    "SendOptions",
    "SendPlan",
    "SendRun",
    "SendScope",
    "SendSpec",
    "SendSummary",
    "ServerInfo",
    "Settled",
    "SurnameOutliers",
    "TestSendResult",
    "TestSends",
    "UnmatchedReport",
    "UnreachablePerson",
    "VerifyResult",
    "Volunteer",
    "VolunteerQuery",
    "Workspace",
    "cohort_filter",
    "is_waiting",
    "narrowing_given",
    "parse_reports",
    "resend_states",
]


# --- what a send run is --------------------------------------------------------------


@dataclass(frozen=True)
class SendSpec:
    """One send run: whom (the cohort's narrowing and which of their messages), and how.

    It is recorded, whole, in the run's `send_started` event: `Workspace.resume`
    continues exactly it.
    """

    cohort: CohortFilter = field(default_factory=CohortFilter)
    scope: SendScope = field(default_factory=SendScope)
    options: SendOptions = field(default_factory=SendOptions)
    smtp_url: str | None = None  # default: the settings' [smtp] url
    compose_workers: int | None = None  # default: by the size of the send

    def selection_json(self) -> dict[str, Any]:
        """The selection as the `send_started` event records it."""
        cohort = self.cohort
        return {
            "exposures": list(cohort.exposures),
            "locales": list(cohort.locales),
            "statuses": list(cohort.statuses),
            "ids": sorted(cohort.ids) if cohort.ids is not None else None,
            "resend_states": list(self.scope.resend_states),
            "resend_uncertain": self.scope.resend_uncertain,
            "limit": self.scope.limit,
        }

    def options_json(self) -> dict[str, Any]:
        """How the run sends, as its `send_started` event records it: every option, so a
        resume sends the same way, but the CA file's path (a resume reads it from the
        settings then). No secrets: the SMTP credentials come from the environment and are
        never written."""
        return {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(SendOptions)
            if f.name != "ca_file"
        }

    @classmethod
    def recorded(cls, data: Mapping[str, Any], ca_file: Path | None) -> SendSpec:
        """The spec a `send_started` event recorded (what `resume` runs again)."""
        selection = data.get("selection") or {}
        options = data.get("options") or {}
        ids = selection.get("ids")
        chosen = selection.get("chosen")  # a run with --limit: the people it chose
        if chosen is not None:
            # Ids as a cohort compares them (casefolded), and only those chosen.
            chosen = {c.casefold() for c in chosen}
            ids = sorted(chosen & set(ids)) if ids is not None else sorted(chosen)
        known = {f.name for f in dataclasses.fields(SendOptions)}
        return cls(
            cohort=CohortFilter(
                exposures=tuple(selection.get("exposures") or ()),
                locales=tuple(selection.get("locales") or ()),
                statuses=tuple(selection.get("statuses") or ()),
                ids=frozenset(ids) if ids is not None else None,
            ),
            scope=SendScope(
                resend_states=tuple(selection.get("resend_states") or ()),
                resend_uncertain=bool(selection.get("resend_uncertain")),
                limit=selection.get("limit"),
            ),
            options=SendOptions(
                **{k: v for k, v in options.items() if k in known}, ca_file=ca_file
            ),
            smtp_url=data.get("smtp_url"),
        )


@dataclass(frozen=True)
class SendRun:
    """A send run as the ledger recorded it: started, and ended or not."""

    seq: int  # its `send_started` event: the run's id
    campaign_id: str
    started_at: str
    command: str
    data: Mapping[str, Any]  # the `send_started` event's data
    ended: Mapping[str, Any] | None  # the `send_ended` event's data; None: it never ended

    @property
    def finished(self) -> bool:
        """It ended having sent everything it set out to send."""
        return (
            self.ended is not None and not self.ended.get("stopped") and not self.ended.get("error")
        )


RESUME_HINT = "notifier send {campaign_id} --resume"


# --- what the other operations return ---------------------------------------------------


@dataclass(frozen=True)
class SurnameOutliers:
    """Published volunteers a campaign's published-surname fact does not fit."""

    initials: tuple[str, ...]  # the rule: the published records' surname initials
    count: int
    first: tuple[Volunteer, ...]  # the first few of them, to name


@dataclass
class RosterImport:
    """A roster import: what the ledger recorded, and the file as read (its warnings)."""

    summary: ImportSummary
    stream: RosterStream
    # Addresses this import gave to someone other than who had them (a swap, or an address
    # a notice to someone else went to): each a warning naming both people.
    moved: tuple[AddressMove, ...] = ()  # the first thousand
    moved_count: int = 0  # every one
    # Published volunteers whose family name does not begin with the initials a campaign
    # says the published records had, for each such rule.
    surname_outliers: tuple[SurnameOutliers, ...] = ()


@dataclass(frozen=True)
class RosterPlan:
    """What importing a roster file would do (`Workspace.plan_import`): the ledger's
    decision, and the file as read (its encoding, its digest, its warnings)."""

    plan: ImportPlan
    file_name: str
    encoding: str
    rows_total: int
    sha256: str  # of the bytes read: an import of exactly this file records the same
    warnings: tuple[RowProblem, ...]  # the first WARNINGS_KEPT
    warning_count: int


@dataclass(frozen=True)
class Preview:
    """Exactly what one person would receive, and anything the reader should know."""

    volunteer: Volunteer
    message: ComposedMessage
    in_audience: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreviewRun:
    """Every message of a campaign, as a send would make it (composed as they are read)."""

    total: int
    warnings: tuple[str, ...]
    messages: Iterator[tuple[Volunteer, ComposedMessage]]


@dataclass(frozen=True)
class Approved:
    approval: Approval
    check: CheckReport


@dataclass(frozen=True)
class CampaignStatus:
    """Where one campaign stands, at any moment (also while a send runs)."""

    campaign_id: str
    registered: bool  # it has messages in the ledger
    approval: ApprovalStatus | None  # None: no campaign file to compare (known to the ledger only)
    owed: OwedCounts  # counted by the ledger: status never lists the people
    counts: Mapping[str, int]  # the campaign's messages by state
    running: Holder | None  # who holds the ledger's lease now (a send, an import, ...)
    in_flight: tuple[MessageRow, ...]
    uncertain: tuple[MessageRow, ...]
    last_run: SendRun | None
    follows_unsent: str | None  # a follow-up whose earlier campaign has not been sent
    next_steps: tuple[str, ...]  # what to run now: never a command that would be refused

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def sending_now(self) -> bool:
        return (
            self.running is not None
            and self.running.is_sending
            and (self.running.subject == self.campaign_id)
        )


# --- the workspace ---------------------------------------------------------------------


class Workspace:
    """A ledger and the settings that belong to it; every operation, every rule.

    Use as a context manager (or call close()): the ledger is opened when first needed.
    """

    def __init__(self, settings: Settings, *, warn: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._ledger: Ledger | None = None
        # Where warnings about the ledger's surroundings go (the CLI: one line on stderr).
        self._warn = warn or log.warning

    @classmethod
    def open(
        cls,
        ledger: str | Path | None = None,
        *,
        config: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Workspace:
        """The workspace of a ledger (default ./notifier.db or $NOTIFIER_LEDGER), with
        the settings beside it, or those `config` names."""
        return cls(load_settings(config, ledger=ledger, env=env))

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    @property
    def ledger_path(self) -> Path:
        return self.settings.ledger

    def has_ledger(self) -> bool:
        return self.settings.ledger.exists()

    def ledger(self, *, create: bool = False) -> Ledger:
        """The open ledger (opened on first use). For this module and the bench: callers
        elsewhere use the operations below."""
        if self._ledger is None:
            self._ledger = Ledger(
                self.settings.ledger,
                create=create,
                key_file=self.settings.secret_file,
                time_zone=self.settings.time_zone,
            )
            warning = key_file_warning(self._ledger.key_file)
            if warning is not None:
                self._warn(warning)
        return self._ledger

    # -- campaigns

    def campaign(self, campaign_id: str | Path) -> Campaign:
        """The campaign as it is sent from this ledger: with the settings' From, Reply-To
        and contact point (the one place those are applied)."""
        return apply_overrides(load_campaign(campaign_id), self.settings)

    def campaigns(self) -> list[Campaign]:
        """The shipped campaigns, oldest notice first, as they are sent from here."""
        return [apply_overrides(c, self.settings) for c in list_campaigns()]

    def require_known_campaign(self, campaign_id: str) -> None:
        """Stop (exit 2, with the closest ids) unless the id names a shipped campaign or
        one in the ledger: for operations that read the ledger only."""
        _require_known(campaign_id, self.ledger().campaign_ids())

    def audience_counts(self, campaign_id: str | Path) -> Counter[tuple[str, str]]:
        """How many the campaign goes to now, by (locale, exposure)."""
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        return count_audience(led, campaign, history=history_applies(led, campaign))

    def follows_unsent(self, campaign_id: str | Path) -> str | None:
        """For a follow-up whose earlier campaign has not been sent: that campaign."""
        campaign = self.campaign(campaign_id)
        if campaign.follows and not history_applies(self.ledger(), campaign):
            return campaign.follows
        return None

    # -- the roster

    @contextlib.contextmanager
    def import_roster(
        self,
        file: Path,
        *,
        mapping: Path | None = None,
        encoding: str = "auto",
        default_locale: str = "en",
        strict: bool = False,
        recorded_as: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[RosterImport]:
        """Import a roster file under the ledger's lease (no send runs meanwhile); the
        file stays readable (its warnings) for the block. `recorded_as`: the name the
        ledger records and problems show, where `file` is only where it waits (an upload
        to the console), not a name the person knows. `progress` is told the rows read so
        far, a chunk at a time."""
        roster_mapping = load_mapping(mapping) if mapping else None
        with self._open_roster(file, roster_mapping, encoding, default_locale) as stream:
            if recorded_as is not None:
                stream.file = Path(recorded_as)
            stream.on_chunk = progress
            led = self.ledger(create=True)
            # No send while the people it is sending to change.
            with led.lease("roster import", stream.file.name):
                summary = led.record_import(
                    stream,
                    mapping_sha256=roster_mapping.sha256 if roster_mapping else "",
                    strict=strict,
                )
                moved: list[AddressMove] = []
                moved_count = 0
                outliers: tuple[SurnameOutliers, ...] = ()
                if summary.added or summary.updated:
                    # The import's own event heads the volunteers' events it wrote.
                    moved, moved_count = moved_addresses(
                        led, led.latest_seq(kind=EventKind.ROSTER_IMPORTED)
                    )
                    outliers = _surname_outliers(led)
            yield RosterImport(summary, stream, tuple(moved), moved_count, outliers)

    def _open_roster(
        self,
        file: Path,
        mapping: RosterMapping | None,
        encoding: str,
        default_locale: str,
    ) -> RosterStream:
        """The roster file opened as an import and its plan read it: within the settings'
        size limit, what waits while it is read waiting beside the ledger (notifier.spool)."""
        folder = self.settings.ledger.resolve().parent
        return open_roster(
            file,
            mapping=mapping,
            encoding=encoding,
            default_locale=default_locale,
            max_bytes=self.settings.roster_max_bytes,
            spool_dir=folder if folder.is_dir() else None,
        )

    def volunteers(self, query: VolunteerQuery | None = None) -> Iterator[Volunteer]:
        return self.ledger().volunteers(query or VolunteerQuery())

    def plan_import(
        self,
        file: Path,
        *,
        mapping: Path | None = None,
        encoding: str = "auto",
        default_locale: str = "en",
        strict: bool = False,
    ) -> RosterPlan:
        """What `import_roster` with the same arguments would do now (who would be added,
        who updated and how, every problem and warning), read a chunk at a time, writing
        nothing: the file is refused (RosterError) exactly as the import would refuse it."""
        roster_mapping = load_mapping(mapping) if mapping else None
        with self._open_roster(file, roster_mapping, encoding, default_locale) as stream:
            if self.has_ledger():
                plan = self.ledger().plan_import(stream, strict=strict)
            else:  # nothing is made for a look: the import makes the ledger
                plan = Ledger.plan_first_import(stream, strict=strict)
            return RosterPlan(
                plan=plan,
                file_name=file.name,
                encoding=stream.encoding,
                rows_total=stream.rows_total,
                sha256=stream.sha256,
                warnings=tuple(stream.warnings),
                warning_count=stream.warning_count,
            )

    def volunteer_page(
        self, query: VolunteerQuery | None = None, *, after: str | None = None, size: int = 50
    ) -> list[Volunteer]:
        """At most `size` of the volunteers `query` selects, those after the id `after`,
        in volunteer_id order: a list a page at a time, never everyone at once."""
        return self.ledger().volunteer_page(query or VolunteerQuery(), after=after, size=size)

    def volunteer_count(self, query: VolunteerQuery | None = None) -> int:
        """How many volunteers `query` selects."""
        return sum(self.ledger().count_volunteers(query or VolunteerQuery()).values())

    def volunteer(self, id_or_email: str) -> Volunteer:
        return self.ledger().get_volunteer(id_or_email)

    def volunteer_counts(self) -> Counter[tuple[str, str]]:
        return self.ledger().count_volunteers()

    def latest_import(self) -> ImportRecord | None:
        return self.ledger().latest_import()

    def rejected_rows(self, import_id: int | None = None) -> Iterator[RowProblem]:
        """The problems of one import (default: the latest), read as used."""
        return self.ledger().rejected_rows(import_id)

    def history(self, volunteer: str) -> list[Event]:
        return history_of(self.ledger(), volunteer)

    # -- checking, the proof sheet, previews

    def check(self, campaign_id: str | Path, *, progress: Progress | None = None) -> CheckReport:
        """Render the campaign for its whole audience, without sending; every problem."""
        return check_campaign(
            self.ledger(),
            self.campaign(campaign_id),
            progress=progress,
            allow_stand_ins=self.settings.demo,
        )

    def proof(self, campaign_id: str | Path, report: CheckReport) -> str:
        """The proof sheet (one HTML page) of the campaign, as checked in `report`."""
        return proof_sheet(self.campaign(campaign_id), report, zone=self.settings.time_zone)

    def preview(
        self, campaign_id: str | Path, volunteer: str, *, locale: str | None = None
    ) -> Preview:
        """Exactly the message a send would make for one person (but its Date).

        `locale`: the notice as it would be in that language instead of the person's own
        (to read a Japanese notice beside its English text); never what a send makes.
        """
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        person = original = led.get_volunteer(volunteer)
        warnings = list(_contact_warning(campaign))
        if locale is not None and locale != person.locale:
            if locale not in LOCALES:
                raise CampaignError(
                    f"unknown locale {locale!r}", hint=f"use one of {', '.join(LOCALES)}"
                )
            warnings.append(
                f"{person.volunteer_id}'s notice is sent in {person.locale}: this is it in"
                f" {locale}, for reading only"
            )
            person = dataclasses.replace(person, locale=locale)
        history = history_applies(led, campaign)
        in_audience = membership_of(led, campaign, original, history=history).included
        if not in_audience:
            warnings.append(
                f"{person.volunteer_id} is not in the audience of {campaign.campaign_id}; "
                "this is what they would receive if they were"
            )
        ids, id_warning = self._message_ids(campaign)
        warnings += id_warning
        composer = Composer(campaign, Renderer(campaign), dkim=load_dkim_key(self.settings))
        vid = person.volunteer_id
        reached = earlier_reached_of(led, campaign, [vid])(vid)
        message = _composed(composer, person, datetime.now(UTC), ids, reached)
        return Preview(person, message, in_audience, tuple(warnings))

    def preview_all(self, campaign_id: str | Path) -> PreviewRun:
        """Every message of the campaign's audience, as a send would make it."""
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        history = history_applies(led, campaign)
        warnings = []
        if campaign.follows and not history:
            warnings.append(
                f"{campaign.follows} has not been sent yet, so it is not yet known who it "
                f"reached: previewing {campaign.campaign_id} for everyone it could go to"
            )
        warnings += _contact_warning(campaign)
        ids, id_warning = self._message_ids(campaign)
        warnings += id_warning
        total = sum(count_audience(led, campaign, history).values())
        composer = Composer(campaign, Renderer(campaign), dkim=load_dkim_key(self.settings))
        when = datetime.now(UTC)
        messages = (
            (v, _composed(composer, v, when, ids, reached))
            for v, reached in audience_with_wording(led, campaign, history)
        )
        return PreviewRun(total, tuple(warnings), messages)

    def _message_ids(self, campaign: Campaign) -> tuple[MessageIds, list[str]]:
        """The Message-IDs a send would use, so a preview is the bytes that would go out;
        without the ledger's key (a preview never makes or needs one), unkeyed ones for
        the messages not issued yet, and a warning. The notices a follow-up follows are
        looked up either way: they decide its wording and threading."""
        led = self.ledger()
        if led.key_file.exists():
            try:
                return MessageIds.of(led, campaign), []
            except NotifierError as exc:  # a foreign key, a ledger that names none
                reason = exc.message
        else:
            reason = f"no key file at {led.key_file}"
        return MessageIds.of(led, campaign, keyed=False), [
            f"{reason}: the Message-ID (and the MIME boundary made from it) is a preview's, "
            "not the one a send would use; the text is the same"
        ]

    # -- approval

    def approval_status(self, campaign_id: str | Path) -> ApprovalStatus:
        return four_eyes.approval_status(self.ledger(), self.campaign(campaign_id))

    def approve(
        self,
        campaign_id: str | Path,
        by: str,
        *,
        progress: Progress | None = None,
        confirm_moved_addresses: bool = False,
    ) -> Approved:
        """Record that `by` approves the campaign's current content, once the whole
        campaign's check passes (CheckFailed, exit 1, naming the problems, otherwise).

        `confirm_moved_addresses`: the approver says the addresses a follow-up would send
        to that its followed notice went to for someone else are right now; the approval
        records which, and the check takes exactly those as confirmed from then on.
        """
        four_eyes.approver_name(by)  # a name to sign with, before a long check
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        report = check_campaign(
            led,
            campaign,
            progress=progress,
            confirm_moves=confirm_moved_addresses,
            allow_stand_ins=self.settings.demo,
        )
        if not report.ok:
            raise _check_failed(report, "nothing was approved")
        recorded = four_eyes.approve(led, campaign, by, checked=self._check_record(report))
        return Approved(recorded, report)

    def _check_record(self, report: CheckReport) -> dict[str, Any]:
        """What a passing check says in the chain: for how many people, against which
        state of the roster and of the campaign a follow-up follows."""
        campaign = self.campaign(report.campaign_id)
        record: dict[str, Any] = {
            "volunteers": report.volunteers,
            "inputs": self._check_inputs(campaign),
        }
        if report.confirmed_moves:
            record["confirmed_moves"] = [list(move) for move in report.confirmed_moves]
        return record

    def _check_inputs(self, campaign: Campaign) -> dict[str, int]:
        """The state of what a check reads besides the content: the roster (its last
        import) and, for a follow-up, the campaign it follows (its last event)."""
        led = self.ledger()
        inputs = {"roster": led.latest_seq(kind=EventKind.ROSTER_IMPORTED)}
        if campaign.follows:
            inputs["followed"] = led.latest_seq(campaign_id=campaign.follows)
        return inputs

    def _require_clean_check(self, campaign: Campaign, progress: Progress | None) -> None:
        """Refuse (CheckFailed) while the campaign's check finds problems: run it, unless
        one of this content against these inputs already passed (recorded in the chain)."""
        led = self.ledger()
        content = four_eyes.content_digest(campaign).sha256
        inputs = self._check_inputs(campaign)
        kinds = [EventKind.CAMPAIGN_APPROVED, EventKind.CAMPAIGN_CHECKED]
        for event in led.events(campaign_id=campaign.campaign_id, kinds=kinds, newest_first=True):
            check = event.data.get("check")
            if event.data.get("sha256") == content and isinstance(check, dict):
                if check.get("inputs") == inputs:
                    return
                break  # the latest check of this content is of another roster: check again
        report = check_campaign(
            led, campaign, progress=progress, allow_stand_ins=self.settings.demo
        )
        if not report.ok:
            raise _check_failed(report, "nothing was sent")
        led.record(
            [
                EventDraft(
                    EventKind.CAMPAIGN_CHECKED,
                    campaign_id=campaign.campaign_id,
                    data={"sha256": content, "check": self._check_record(report)},
                )
            ]
        )

    # -- sending

    def plan_send(self, campaign_id: str | Path, spec: SendSpec = SendSpec()) -> SendPlan:
        """What `send` would do now, writing nothing."""
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        request = self._request(led, campaign, spec)
        running = led.running()
        live = running is not None and running.is_sending and running.subject == campaign_id
        return plan_send(led, request, self.settings, run_is_live=live)

    def send_blockers(self, campaign_id: str | Path) -> list[str]:
        """Why a send of the campaign would be refused right now (no check is run: a send
        runs it if none of this content against this roster has passed)."""
        campaign = self.campaign(campaign_id)
        led = self.ledger()
        blockers = []
        running = led.running()
        if running is not None:
            blockers.append(
                f"a {running.command} is running: {running.describe(self.settings.time_zone)}"
            )
        if campaign.follows and not led.has_messages(campaign.follows):
            blockers.append(f"{campaign.follows}, which it follows, has not been sent yet")
        if self.settings.require_approval:
            status = four_eyes.approval_status(led, campaign)
            if status.approval is None:
                blockers.append("it has not been approved")
            elif not status.is_current:
                blockers.append("its content changed since it was approved")
        return blockers

    def require_sendable(self, campaign_id: str | Path) -> None:
        """Refuse, as a send would before anything (the same errors and words), while the
        campaign it follows has not been sent or its content is not approved as it is
        now: for a caller that starts the send later (the console's background send)."""
        self._require_sendable(self.campaign(campaign_id))

    def _require_sendable(self, campaign: Campaign) -> None:
        require_followed_sent(self.ledger(), campaign)
        if self.settings.require_approval:
            # Four eyes: exit 1 saying what to run.
            four_eyes.require_approval(self.ledger(), campaign, zone=self.settings.time_zone)

    def send(
        self,
        campaign_id: str | Path,
        spec: SendSpec = SendSpec(),
        *,
        observer: SendObserver | None = None,
        handle_signals: bool = True,
        progress: Progress | None = None,
        resumes: int | None = None,
        stop: threading.Event | None = None,
    ) -> SendSummary:
        """Send the campaign to its cohort as `spec` narrows it, under every rule.

        Refused, with nothing sent, while: the campaign it follows has not been sent;
        its content is not approved as it is now (unless approval is turned off); its
        check finds problems; another send, import or reconcile holds the ledger; the
        ledger fails verification. The run is recorded (`send_started`, `send_ended`).

        `stop`: setting it (from any thread) stops the run as Ctrl-C does: the messages in
        flight are finished and recorded, the rest stay owed (`SendSummary.stopped`).
        """
        campaign = self.campaign(campaign_id)
        target_for(spec.smtp_url, self.settings.smtp_url)  # a mistyped URL: before anything
        led = self.ledger()
        cid = campaign.campaign_id
        self._require_sendable(campaign)
        with led.lease(spec.scope.command, cid) as holder:
            # Who it goes to is read under the lease: no import can change them meanwhile.
            request = self._request(led, campaign, spec)
            _require_no_stand_ins(campaign, request.target(self.settings))
            self._require_clean_check(campaign, progress)
            # From the latest checkpoint on, so a send starts in about the same time on
            # any ledger; each chunk's rows are checked as they are sent (an address
            # edited behind the chain's back is never mailed): notifier.ledger.checkpoint.
            led.require_intact(since_checkpoint=True)
            # No pass over everyone before the first message: the run counts its audience
            # beside the sending (pipeline.send_campaign); a run of at most N reads whom
            # it chooses now, only as far as N reaches, to record them.
            chosen = (
                choose(led, campaign, request.audience, spec.scope, size=request.chunk_size)
                if spec.scope.limit is not None
                else []
            )
            started = self._record_start(led, campaign, spec, request, chosen, resumes)
            led.refresh_lease(holder, run=started.seq)
            try:
                summary = send_campaign(
                    led,
                    request,
                    self.settings,
                    holder=holder,
                    observer=observer,
                    handle_signals=handle_signals,
                    stop=stop,
                )
            except BaseException as exc:
                _record_end(led, cid, started.seq, error=_why_stopped(exc))
                raise
            _record_end(led, cid, started.seq, summary=summary)
            # What this run appended, verified now while it is fresh: the next send's
            # start-up walks only what comes after it.
            led.verify_since_checkpoint()
        return summary

    def resume_spec(self, campaign_id: str) -> SendSpec:
        """The selection and options of the campaign's last send run, to run again."""
        run = self.last_run(campaign_id)
        if run is None:
            raise CampaignError(
                f"{campaign_id} has no send run to resume",
                hint=f"start one: notifier send {campaign_id} (a dry run), then with --yes",
            )
        return SendSpec.recorded(run.data, self.settings.smtp_ca_file)

    def resume(
        self,
        campaign_id: str,
        *,
        options: SendOptions | None = None,
        smtp_url: str | None = None,
        observer: SendObserver | None = None,
        handle_signals: bool = True,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> SendSummary:
        """Continue the campaign's last send run: exactly its selection (cohort, states,
        limit) and, unless given here, its options."""
        run = self.last_run(campaign_id)
        spec = self.resume_spec(campaign_id)
        if options is not None:
            spec = dataclasses.replace(spec, options=options)
        if smtp_url is not None:
            spec = dataclasses.replace(spec, smtp_url=smtp_url)
        return self.send(
            campaign_id,
            spec,
            observer=observer,
            handle_signals=handle_signals,
            progress=progress,
            resumes=run.seq if run else None,
            stop=stop,
        )

    def last_run(self, campaign_id: str) -> SendRun | None:
        """The campaign's latest send run, as the ledger recorded it."""
        runs = self.runs(campaign_id)
        return runs[-1] if runs else None

    def runs(self, campaign_id: str) -> list[SendRun]:
        """Every send run of the campaign, oldest first."""
        started: dict[int, Event] = {}
        ended: dict[int, Mapping[str, Any]] = {}
        kinds = [EventKind.SEND_STARTED, EventKind.SEND_ENDED]
        for event in self.ledger().events(campaign_id=campaign_id, kinds=kinds):
            if event.kind == EventKind.SEND_STARTED:
                started[event.seq] = event
            elif isinstance(event.data.get("run"), int):
                ended[event.data["run"]] = event.data
        return [
            SendRun(
                seq,
                campaign_id,
                e.at,
                str(e.data.get("command", "send")),
                e.data,
                ended.get(seq),
            )
            for seq, e in sorted(started.items())
        ]

    def _request(self, led: Ledger, campaign: Campaign, spec: SendSpec) -> SendRequest:
        return SendRequest(
            campaign=campaign,
            audience=send_audience(led, campaign, spec.cohort),
            options=spec.options,
            scope=spec.scope,
            smtp_url=spec.smtp_url,
            compose_workers=spec.compose_workers,
        )

    def _record_start(
        self,
        led: Ledger,
        campaign: Campaign,
        spec: SendSpec,
        request: SendRequest,
        chosen: Sequence[Volunteer],
        resumes: int | None,
    ) -> Event:
        selection = spec.selection_json()
        if spec.scope.limit is not None:
            # A run of at most N: the N it chooses now are its selection, so a resume
            # finishes them rather than choosing N more.
            selection["chosen"] = sorted(v.volunteer_id for v in chosen)
        data: dict[str, Any] = {
            "command": spec.scope.command,
            "selection": selection,
            "options": spec.options_json(),
            "smtp_url": str(request.target(self.settings)),
        }
        if resumes is not None:
            data["resumes"] = resumes
        (event,) = led.record(
            [EventDraft(EventKind.SEND_STARTED, campaign_id=campaign.campaign_id, data=data)]
        )
        return event

    # -- test sends, cohorts

    def test_send(
        self,
        campaign_id: str | Path,
        to: str,
        *,
        as_volunteers: Sequence[str] = (),
        smtp_url: str | None = None,
        timeout: float = 30.0,
        require_tls: bool = False,
    ) -> TestSends:
        """Each named volunteer's exact message (or one of each version), marked as a
        test, to `to` only. Needs no approval: it reaches only the person running it.

        Refuses before anything is sent when the ledger cannot record the test: a test
        send nobody can account for afterwards is a message outside the evidence.
        """
        address = checked_test_address(to)
        campaign = self.campaign(campaign_id)
        target = target_for(smtp_url, self.settings.smtp_url)
        _require_no_stand_ins(campaign, target)
        led = self.ledger()
        if led.read_only:
            raise read_only_error(led.path, "record a test send, so nothing was sent")
        people = volunteers_for_test(led, campaign, as_volunteers)
        results = send_tests(
            led,
            campaign,
            people,
            address,
            target,
            self.settings,
            dkim=load_dkim_key(self.settings),
            options=SessionOptions(
                timeout=timeout, require_tls=require_tls, ca_file=self.settings.smtp_ca_file
            ),
        )
        return TestSends(results, address.address, str(target), address.note)

    def smtp_target(self, smtp_url: str | None = None) -> str:
        """The SMTP server a send would use (`smtp_url`, else the settings'), as shown:
        without credentials."""
        return str(target_for(smtp_url, self.settings.smtp_url))

    def cohort(
        self, campaign_id: str | Path, cohort: CohortFilter | None = None
    ) -> Iterator[CohortMember]:
        """Every volunteer, in or out of the campaign's cohort (narrowed), and why: in
        volunteer_id order, streamed from the ledger (read it while the workspace is open)."""
        return explain_cohort(self.ledger(), self.campaign(campaign_id), cohort or CohortFilter())

    def cohort_summary(
        self, campaign_id: str | Path, cohort: CohortFilter | None = None
    ) -> CohortSummary:
        """The cohort in numbers (in, left out and why, unreached), counted by the ledger."""
        return summarise_cohort(self.ledger(), self.campaign(campaign_id), cohort or CohortFilter())

    # -- bounces and reconciling

    def ingest_bounces(
        self, paths: Sequence[Path] = (), *, imap_url: str | None = None
    ) -> IngestSummary:
        """Record every delivery report found, once each."""
        led = self.ledger()
        # The ledger's own key, or exit 2 before any bounce is judged: a new key would call
        # every genuine bounce forged.
        key = led.verp_key()
        sources = read_sources(list(paths))
        if imap_url:
            sources = _chained(sources, read_imap(imap_url, ca_file=self.settings.imap_ca_file))
        return ingest(led, sources, key=key, limits=self.settings.bounce_limits)

    def unmatched_reports(self) -> list[UnmatchedReport]:
        return kept_unmatched(self.ledger())

    def reconcile(
        self,
        campaign_id: str,
        *,
        mta_logs: Sequence[Path] = (),
        maildirs: Sequence[Path] = (),
    ) -> list[Settled]:
        """Settle the messages a crash left uncertain, from what the mail system shows it
        received; under the ledger's lease (never while a send runs)."""
        if not mta_logs and not maildirs:
            raise EvidenceError(
                "no evidence given",
                hint="name the MTA's log with --mta-log FILE, or a Maildir with --maildir DIR",
            )
        found: dict[str, Evidence] = {}
        for path in mta_logs:
            found.update(postfix_log_evidence(path))
        for maildir in maildirs:
            found.update(maildir_evidence(maildir))
        searched = ", ".join(str(p) for p in (*mta_logs, *maildirs))
        led = self.ledger()
        with led.lease("reconcile", campaign_id):
            return led.settle_uncertain(
                campaign_id, {mid: e.event_data() for mid, e in found.items()}, searched
            )

    # -- where things stand, and proof

    def status(self, campaign_id: str) -> CampaignStatus:
        """Where the campaign stands: audience, sent, owed (and why), runs, and what to
        run next."""
        led = self.ledger()
        self.require_known_campaign(campaign_id)
        campaign = _loadable(lambda: self.campaign(campaign_id))
        with led.reading():
            # Read the lease before the messages: a send that ends in between is then seen
            # as running with its messages settled, never as a crash.
            running = led.running()
            counts = led.state_counts(campaign_id)
            claimed = led.claimed_messages(campaign_id)
            registered = led.campaign_is_registered(campaign_id)
            still_owed = owed_counts(led, campaign, campaign_id)
            signed_off = four_eyes.approval_status(led, campaign) if campaign else None
            runs = self.runs(campaign_id)
            follows_unsent = (
                campaign.follows
                if campaign and campaign.follows and not led.has_messages(campaign.follows)
                else None
            )
        live = running is not None and running.is_sending and running.subject == campaign_id
        in_flight = tuple(m for m in claimed if not is_uncertain(m.state, run_is_live=live))
        uncertain = tuple(m for m in claimed if is_uncertain(m.state, run_is_live=live))
        status = CampaignStatus(
            campaign_id=campaign_id,
            registered=registered,
            approval=signed_off,
            owed=still_owed,
            counts=counts,
            running=running,
            in_flight=in_flight,
            uncertain=uncertain,
            last_run=runs[-1] if runs else None,
            follows_unsent=follows_unsent,
            next_steps=(),
        )
        return dataclasses.replace(
            status, next_steps=tuple(_next_steps(status, self.settings.time_zone))
        )

    def report(self, campaign_id: str) -> CampaignReport:
        """Everything a regulator may ask about one campaign, from one snapshot; with who
        is still owed the notice, and whether a send is running as it is made. Every
        recipient held in memory: for a campaign of any size, `open_report`."""
        with self.open_report(campaign_id) as streamed:
            return materialised(streamed)

    @contextlib.contextmanager
    def open_report(
        self, campaign_id: str, *, read_ahead: RecipientsWriter | None = None
    ) -> Iterator[CampaignReport]:
        """report(), in bounded memory: its figures counted by the ledger, its recipients
        and the people still owed read a chunk at a time as they are iterated. Write it
        out inside the `with` block, which holds the ledger snapshot it describes.
        `read_ahead`: every recipient will be written with this writer
        (notifier.report_formats.recipients_json_pieces, recipients_csv_lines): they are
        written out while a large ledger is verified (open_campaign_report)."""
        led = self.ledger()
        registered = led.campaign_ids()
        _require_known(campaign_id, registered)
        if campaign_id not in registered:
            raise CampaignError(
                f"{campaign_id} has not been sent yet, so there is nothing to report",
                hint=f"see what a send would do: notifier send {campaign_id}",
            )
        campaign = _loadable(lambda: self.campaign(campaign_id))
        with open_campaign_report(
            led, campaign_id, campaign_now=campaign, read_ahead=read_ahead
        ) as streamed:
            yield streamed

    def unreachable(self) -> list[UnreachablePerson]:
        """Everyone no notice has reached, so they can be written to another way."""
        return unreachable(self.ledger())

    @contextlib.contextmanager
    def open_unreachable(self) -> Iterator[Iterator[UnreachablePerson]]:
        """unreachable(), read a chunk of people at a time as it is iterated, from one
        read of the ledger: iterate it inside the `with` block."""
        led = self.ledger()
        with led.reading():
            yield unreachable_people(led)

    # -- the ledger itself

    def verify(self, anchors: Sequence[str] = ()) -> VerifyResult:
        return self.ledger().verify(anchors)

    def head(self) -> str:
        return self.ledger().head()

    def upgrade(self) -> Upgraded | None:
        return self.ledger().upgrade()

    def running(self) -> Holder | None:
        return self.ledger().running()


# --- helpers ---------------------------------------------------------------------------


def parse_reports(paths: Sequence[Path]) -> list[BounceRecord]:
    """What each delivery report in these files or folders says, per recipient, without
    touching any ledger (`notifier bounces parse`)."""
    return [
        record
        for source, data in read_sources(list(paths))
        for record in records_for_people(parse_full_report(data, source=source))
    ]


def cohort_filter(
    exposures: Sequence[str] = (),
    locales: Sequence[str] = (),
    statuses: str | Sequence[str] = (),
    ids_file: Path | None = None,
) -> CohortFilter:
    """A cohort narrowing from what a person typed: `statuses` as `a,b` or a list."""
    if isinstance(statuses, str):
        statuses = [s for s in statuses.split(",")]
    return CohortFilter(
        exposures=tuple(exposures),
        locales=tuple(locales),
        statuses=tuple(s.strip() for s in statuses if s.strip()),
        ids=read_ids_file(ids_file) if ids_file is not None else None,
    )


def _contact_warning(campaign: Campaign) -> list[str]:
    if campaign.contact:
        return []
    return [
        "no [contact] in notifier.toml, so this notice gives no contact point beyond its "
        "reply address; `notifier check` refuses it until one is configured"
    ]


def _composed(
    composer: Composer,
    volunteer: Volunteer,
    when: datetime,
    ids: MessageIds,
    reached: bool | None,
) -> ComposedMessage:
    campaign = composer.campaign
    vid = volunteer.volunteer_id
    try:
        return composer.build(
            volunteer,
            date=when,
            message_id=ids.message_id(vid),
            in_reply_to=ids.in_reply_to(vid),
            reached=reached,
        )
    except NotifierError as exc:
        # Name the person: the error itself knows the field, not whose message failed.
        exc.message = f"{volunteer.volunteer_id}: {exc.message}"
        exc.hint = exc.hint or f"run `notifier check {campaign.campaign_id}` to see every problem"
        raise


def _surname_outliers(led: Ledger, named: int = 10) -> tuple[SurnameOutliers, ...]:
    """For each published-surname rule the campaigns state, the published volunteers on
    the roster it does not fit (their notice would tell them the published records were
    of surnames beginning with letters theirs does not): what `check` will name."""
    rules = {
        c.facts.published_surname_initials
        for c in list_campaigns()
        if c.facts.published_surname_initials
    }
    found = []
    for initials in sorted(rules):
        count, first = 0, list[Volunteer]()
        for volunteer in led.volunteers(VolunteerQuery(exposures=("published",))):
            if surname_initial(volunteer) not in initials:
                count += 1
                if len(first) < named:
                    first.append(volunteer)
        if count:
            found.append(SurnameOutliers(initials, count, tuple(first)))
    return tuple(found)


def _require_no_stand_ins(campaign: Campaign, target: SmtpTarget) -> None:
    """Refuse (exit 1) to send messages that carry the shipped example's stand-ins
    anywhere but a sink of notifier's own running in this process (the demo's): whatever
    a check or an approval said, and whoever calls."""
    found = placeholders(campaign)
    if not found or is_running_sink(target.host, target.port):
        return
    listed = "\n".join(f"  problem: {p}" for p in found)
    raise CheckFailed(
        f"{campaign.campaign_id}'s messages carry the shipped example's stand-ins: nothing"
        f" was sent to {target}\n{listed}",
        problems=tuple(str(p) for p in found),
        hint="set your organisation's own in notifier.toml ([sender], [contact],"
        " [organisation]), check and approve again",
    )


def _check_failed(report: CheckReport, what: str) -> CheckFailed:
    count = len(report.problems)
    listed = "\n".join(f"  problem: {p}" for p in report.problems)
    return CheckFailed(
        f"{report.campaign_id} fails its check ({count} problem{'s' if count != 1 else ''}):"
        f" {what}\n{listed}",
        problems=tuple(str(p) for p in report.problems),
        hint=f"see them with: notifier check {report.campaign_id} --proof proof.html; fix them,"
        " then try again",
    )


def _record_end(
    led: Ledger,
    campaign_id: str,
    run: int,
    *,
    summary: SendSummary | None = None,
    error: str | None = None,
) -> None:
    data: dict[str, Any] = {"run": run}
    if summary is not None:
        data.update(
            # The run's counts (its audience, what it set out to send, the suppressed
            # addresses it skipped) are known once it has counted them: recorded here.
            audience=summary.audience,
            planned=summary.planned,
            suppressed=summary.suppressed,
            counts=dict(summary.counts),
            stopped=summary.stopped,
            taken_elsewhere=summary.taken_elsewhere,
        )
    if error is not None:
        data["error"] = error
    try:
        led.record([EventDraft(EventKind.SEND_ENDED, campaign_id=campaign_id, data=data)])
    except NotifierError:
        if summary is not None:
            raise
        # The run already failed (a full disk, say): that error is the one to show; the
        # run stays recorded as started and never ended, which `status` reports.
        log.warning("could not record the end of send run %d", run)


def _why_stopped(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, NotifierError):
        return exc.message
    return type(exc).__name__


def _loadable(load: Callable[[], Campaign]) -> Campaign | None:
    """The campaign as it would be sent now, or None when only the ledger knows it (a
    campaign sent from a file elsewhere): then there is no content to compare."""
    try:
        return load()
    except CampaignError:
        return None


def _chained(*sources: Iterator[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    for source in sources:
        yield from source


def _next_steps(status: CampaignStatus, zone: str) -> list[str]:
    """What to run now, for the people the campaign has not reached: only commands that
    would not be refused (none while a send or an import holds the ledger; approval
    first, where a send would be refused without it)."""
    cid = status.campaign_id
    running = status.running
    if running is not None:
        if status.sending_now:
            return [f"a send of {cid} is running: watch it with notifier status {cid}"]
        return [f"wait for the {running.command} to finish ({running.describe(zone)})"]
    if status.follows_unsent:
        return [f"send {status.follows_unsent} first: {cid} follows it"]
    approval = status.approval
    ready = approval is None or (approval.approval is not None and approval.is_current)
    first: list[str] = []
    if not ready:
        what = "approve it" if approval and approval.approval is None else "approve it again"
        first.append(
            f"before any send, read the proof sheet (notifier check {cid} --proof proof.html)"
            f' and {what}: notifier approve {cid} --by "NAME"'
        )
    then = "then " if not ready else ""
    sends: list[str] = []
    owed: Counter[str | None] = Counter(status.owed.by_state)
    due = owed[None] + owed[MessageState.PENDING] + owed[MessageState.DEFERRED]
    run = status.last_run
    if due and run is not None and not run.finished:
        sends.append(f"{then}resume the send that stopped: " + RESUME_HINT.format(campaign_id=cid))
        if _narrowed(run):
            sends.append(
                f"then, to the people that send was not for: notifier send {cid} (a dry run),"
                " then with --yes"
            )
    elif due:
        sends.append(
            f"{then}send to the {due} not sent yet: notifier send {cid} (a dry run), then"
            " with --yes"
        )
    soft = owed[MessageState.BOUNCED_SOFT] + owed[MessageState.FAILED_TEMPORARY]
    if soft:
        sends.append(
            f"{then}try again the {soft} soft-bounced or failed for now:"
            f" notifier resend {cid} --status bounced_soft,failed_temporary --yes"
        )
    if owed[MessageState.BLOCKED]:
        sends.append(
            f"{owed[MessageState.BLOCKED]} blocked: our mail was refused; the addresses are"
            " fine. Fix the sending (reputation, SPF, DKIM), then:"
            f" notifier resend {cid} --status blocked --yes"
        )
    if owed[MessageState.EXPIRED]:
        sends.append(
            f"{then}send again the {owed[MessageState.EXPIRED]} the mail system gave up on"
            " (expired while a server was down; the addresses are fine):"
            f" notifier resend {cid} --status expired --yes"
        )
    others: list[str] = []
    if status.uncertain:
        others.append(
            f"settle the {counted(len(status.uncertain), 'uncertain message')} from the mail"
            f" server's log (notifier reconcile {cid} --mta-log FILE), or {then}send them again"
            f" (notifier send {cid} --yes --resend-uncertain)"
        )
    letters = (
        owed[MessageState.BOUNCED_HARD]
        + owed[MessageState.SUPPRESSED]
        + owed[MessageState.FAILED_PERMANENT]
    )
    if letters:
        others.append(
            f"write to the {letters} no e-mail can reach:"
            " notifier export unreachable --out letters.csv"
        )
    return [*first, *sends, *others]


def _narrowed(run: SendRun) -> bool:
    """Whether a recorded run was for part of the campaign's cohort only."""
    selection = run.data.get("selection") or {}
    return any(
        selection.get(key)
        for key in ("exposures", "locales", "statuses", "ids", "limit", "resend_states")
    )


def narrowing_given(cohort: CohortFilter, scope: SendScope) -> bool:
    """Whether a selection option was given (they cannot be changed by a resume)."""
    return bool(
        cohort.exposures
        or cohort.locales
        or cohort.statuses
        or cohort.ids is not None
        or scope.limit is not None
        or scope.resend_uncertain
        or scope.resend_states
    )
