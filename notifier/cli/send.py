"""`notifier send` and `notifier resend`: a dry run, or a send of a campaign to its cohort.

Options are parsed here, and the plan and summary printed; who is sent what, and every
rule about it (approval, a clean check, one sender, resuming a run), is the service's
(notifier.service.Workspace). Option defaults are read from SendOptions.
"""

from __future__ import annotations

import dataclasses
import textwrap
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from notifier.cli.app import AppContext, cli, console, echo_table, err_console, pass_app
from notifier.cli.cohort import F, cohort_options
from notifier.config import Settings
from notifier.errors import CohortError, ExitCode
from notifier.layout import Column
from notifier.message import FAILED_STATES, RESENDABLE_STATES, DeliveryOutcome, MessageState
from notifier.outputs import counted, visible
from notifier.service import (
    RESUME_HINT,
    TEST_PREFIX,
    Campaign,
    SendOptions,
    SendPlan,
    SendScope,
    SendSpec,
    SendSummary,
    ServerInfo,
    TestSendResult,
    TestSends,
    Workspace,
    cohort_filter,
    narrowing_given,
    resend_states,
)

DEFAULTS = SendOptions()
MAX_WIDTH = 100  # columns: no line of this command's output is longer


def delivery_options(function: F) -> F:
    """The options of `send` and `resend` that say how (not to whom) messages go."""
    decorators = [
        click.option(
            "--yes", is_flag=True, help="Really send. Without it: show what would be sent."
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the campaign's last send run exactly: its cohort, states and "
            "limit (the command a stopped send prints). Options saying how to send "
            "(--rate, --smtp, ...) may change; options saying whom may not. Sends at once.",
        ),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            help="Send at most N messages this run.",
        ),
        click.option(
            "--smtp",
            "smtp_url",
            metavar="URL",
            default=None,
            help="smtp://host:port (STARTTLS when offered) or smtps://host:port. "
            "Default: [smtp] url in notifier.toml, else smtp://127.0.0.1:8025.",
        ),
        click.option("--require-tls", is_flag=True, help="Refuse to send without TLS."),
        click.option(
            "--rate",
            type=click.FloatRange(min=0),
            default=None,
            help="Messages per second (token bucket); 0 = no limit. Default: [smtp] rate, else 0.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 200),
            default=DEFAULTS.concurrency,
            show_default=True,
            help="SMTP connections.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=0),
            default=DEFAULTS.batch_size,
            help="Pause after every N messages (0: no batches).",
        ),
        click.option(
            "--batch-pause",
            type=click.FloatRange(min=0),
            default=DEFAULTS.batch_pause,
            metavar="SECONDS",
            help="How long to pause between batches.",
        ),
        click.option(
            "--per-domain",
            type=click.FloatRange(min=0),
            default=DEFAULTS.per_domain,
            metavar="N",
            help="At most N messages per second to any one recipient domain "
            "(0: no cap). Other domains are not held up while one waits.",
        ),
        click.option(
            "--resend-uncertain",
            is_flag=True,
            help="Also send the messages whose outcome a crash left unknown "
            "(they may arrive twice).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=DEFAULTS.timeout,
            show_default=True,
            metavar="SECONDS",
            help="For connecting and for each server reply.",
        ),
        click.option(
            "--max-attempts",
            type=click.IntRange(min=1),
            default=DEFAULTS.max_attempts,
            show_default=True,
            help="Tries per message (4xx, network errors) before it is failed_temporary.",
        ),
        click.option(
            "--backoff",
            type=click.FloatRange(min=0),
            default=DEFAULTS.backoff,
            show_default=True,
            metavar="SECONDS",
            help="Wait before the first retry; doubles each time.",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _send_options(settings: Settings, params: dict[str, Any]) -> SendOptions:
    rate = params["rate"]
    return SendOptions(
        rate=settings.rate if rate is None else rate,
        concurrency=params["concurrency"],
        batch_size=params["batch_size"],
        batch_pause=params["batch_pause"],
        per_domain=params["per_domain"],
        timeout=params["timeout"],
        max_attempts=params["max_attempts"],
        backoff=params["backoff"],
        require_tls=params["require_tls"],
        ca_file=settings.smtp_ca_file,
    )


def _run(app: AppContext, campaign_id: str, spec: SendSpec, params: dict[str, Any]) -> None:
    """Plan (without --yes) or perform one send of a campaign to its narrowed cohort."""
    with app.workspace() as ws:
        if params["resume"]:
            summary = _resume(ws, campaign_id, spec)
        elif not params["yes"]:
            _print_plan(ws, campaign_id, spec)
            return
        else:
            display = ProgressDisplay()
            try:
                summary = ws.send(campaign_id, spec, observer=display, progress=display.checking)
            finally:
                display.close()
    _print_summary(summary)
    if summary.stopped:
        raise SystemExit(ExitCode.INTERRUPTED)


def _resume(ws: Workspace, campaign_id: str, spec: SendSpec) -> SendSummary:
    if narrowing_given(spec.cohort, spec.scope):
        raise CohortError(
            "continues the last run's own selection: options saying whom to send to "
            "(--exposure, --locale, --status, --ids, --limit, --resend-uncertain) cannot "
            "change it",
            field="--resume",
            hint=f"leave them out, or start a new run: notifier send {campaign_id} ... --yes",
        )
    # The run's own options, but those given on this command line.
    recorded = ws.resume_spec(campaign_id).options
    given = {name: getattr(spec.options, name) for name in _given(DELIVERY_OPTIONS)}
    display = ProgressDisplay()
    try:
        return ws.resume(
            campaign_id,
            options=dataclasses.replace(recorded, **given),
            smtp_url=spec.smtp_url,
            observer=display,
            progress=display.checking,
        )
    finally:
        display.close()


# The options that say how a run sends (SendOptions fields, as the command line names them).
DELIVERY_OPTIONS: tuple[str, ...] = (
    "rate",
    "concurrency",
    "batch_size",
    "batch_pause",
    "per_domain",
    "timeout",
    "max_attempts",
    "backoff",
    "require_tls",
)


def _given(names: Iterable[str]) -> list[str]:
    """Those of `names` the person gave on the command line (not left to their default)."""
    ctx = click.get_current_context()
    return [n for n in names if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]


def _spec(
    app: AppContext, cohort_args: dict[str, Any], params: dict[str, Any], **scope: Any
) -> SendSpec:
    return SendSpec(
        cohort=cohort_filter(**cohort_args),
        scope=SendScope(
            resend_uncertain=params["resend_uncertain"], limit=params["limit"], **scope
        ),
        options=_send_options(app.settings, params),
        smtp_url=params["smtp_url"],
    )


# --- notifier send / resend -------------------------------------------------------------


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--test-to",
    metavar="ADDRESS",
    default=None,
    help="Send a test to ADDRESS only: each --as volunteer's exact message (or one of each "
    "version of the notice), subject starting [TEST <id>], To: ADDRESS. Changes no one's "
    "state; needs no approval.",
)
@click.option(
    "--as",
    "as_volunteers",
    metavar="VOLUNTEER",
    multiple=True,
    help="With --test-to: whose message to send (an id or address; repeat for more).",
)
@click.option(
    "--verbose",
    is_flag=True,
    help="With --test-to: list each test message (whose it is, what the server said).",
)
@delivery_options
@cohort_options()
@pass_app
def send(
    app: AppContext,
    /,
    campaign_id: str,
    test_to: str | None,
    as_volunteers: tuple[str, ...],
    exposures: tuple[str, ...],
    locales: tuple[str, ...],
    statuses: str,
    ids_file: Path | None,
    **params: Any,
) -> None:
    """Send a campaign: a dry run unless --yes.

    \b
    Safe by default: without --yes this shows how many messages would go, by
    locale and exposure, where to and how fast, and sends nothing.
      notifier send 2020-03-breach                    # what would happen
      notifier send 2020-03-breach --test-to me@example.org   # a test, to yourself
      notifier send 2020-03-breach --yes --rate 20    # everyone, 20 a second
      notifier send 2020-04-29-update --yes --locale ja   # part of a follow-up's cohort

    Every outcome is written to the ledger. Ctrl-C stops cleanly; then
    `notifier send ID --resume` continues exactly that run (the same people, the
    same limit). Nobody is sent the notice twice: if the process was killed, the
    few messages that were in flight are reported as uncertain and re-sent only
    with --resend-uncertain. A follow-up goes to its cohort (see `notifier cohort
    ID`), threaded under each person's earlier notice. A send needs a current
    approval (notifier approve) and a campaign whose check passes.

    SMTP credentials come from NOTIFIER_SMTP_USER and NOTIFIER_SMTP_PASSWORD.
    """
    if test_to is not None:
        _send_tests(app, campaign_id, test_to, as_volunteers, params)
        return
    if as_volunteers:
        raise CohortError(
            "--as names whose message a test sends", field="--as", hint="add --test-to YOUR-ADDRESS"
        )
    cohort = {
        "exposures": exposures,
        "locales": locales,
        "statuses": statuses,
        "ids_file": ids_file,
    }
    _run(app, campaign_id, _spec(app, cohort, params), params)


def _send_tests(
    app: AppContext,
    campaign_id: str,
    test_to: str,
    as_volunteers: tuple[str, ...],
    params: dict[str, Any],
) -> None:
    """`send ID --test-to ADDRESS [--as V ...]`: the exact messages, to ADDRESS only."""
    with app.workspace() as ws:
        sends = ws.test_send(
            campaign_id,
            test_to,
            as_volunteers=as_volunteers,
            smtp_url=params["smtp_url"],
            timeout=params["timeout"],
            require_tls=params["require_tls"],
        )
    verbose = params["verbose"] or bool(click.get_current_context().find_root().params["verbose"])
    _print_tests(sends, campaign_id, verbose=verbose, named=bool(as_volunteers))


def _width() -> int:
    """The columns this command's lines may take: the terminal's, at most MAX_WIDTH."""
    return max(40, min(console.width, MAX_WIDTH))


def _say(text: str, width: int, indent: str = "") -> None:
    """`text` as lines of at most `width` columns (addresses and URLs kept whole)."""
    wrapped = textwrap.wrap(
        text,
        width=width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    for line in wrapped:
        console.print(line, markup=False)


def _test_line(r: TestSendResult) -> str:
    held = ", ".join(r.data_held) or "nothing on record"
    outcome = "sent" if r.accepted else "REFUSED"
    return visible(f"{outcome} {r.volunteer_id} ({r.locale}, {r.exposure}; {held}): {r.reply}")


def _print_tests(sends: TestSends, campaign_id: str, *, verbose: bool, named: bool) -> None:
    """A summary in a few lines; each message on its own with --verbose; refusals always."""
    width = _width()
    results = sends.results
    refused = [r for r in results if not r.accepted]
    sent = len(results) - len(refused)
    if sends.note:
        _say(f"Note: {visible(sends.note)}.", width, "  ")
    kinds = (
        ("as the volunteer named" if len(results) == 1 else "as the volunteers named")
        if named
        else "one for each version of the notice"
    )
    count = f"{sent} of {len(results)} test messages" if refused else counted(sent, "test message")
    _say(
        f"Sent {count} ({kinds}) to {visible(sends.to)} via {sends.target}.",
        width,
        "  ",
    )
    if verbose:
        for r in results:
            _say("  " + _test_line(r), width, "      ")
    else:
        for r in refused:
            _say("  " + _test_line(r), width, "      ")
        if sent:
            _say("  (--verbose lists each message: whose it is, and what the server said.)", width)
    if sent:
        _say(
            f"Each subject starts {TEST_PREFIX}<volunteer id>] and each message says whose it "
            "is in its first line. Nobody else was sent anything, and no volunteer's message "
            "changed.",
            width,
        )
    if refused:
        _say(
            f"The server refused {counted(len(refused), 'test message')}: "
            "fix what it said, then test again.",
            width,
        )
        raise SystemExit(ExitCode.PROBLEMS)
    _say(f"When they read right: notifier send {campaign_id}", width)


@cli.command()
@click.argument("campaign_id", metavar="ID")
@click.option(
    "--status",
    "statuses",
    required=True,
    metavar="STATE[,STATE...]",
    help="Which of the campaign's messages to send again, by their state: any of "
    + ", ".join(RESENDABLE_STATES)
    + ".",
)
@delivery_options
@cohort_options(with_status=False)
@pass_app
def resend(
    app: AppContext,
    /,
    campaign_id: str,
    statuses: str,
    exposures: tuple[str, ...],
    locales: tuple[str, ...],
    ids_file: Path | None,
    **params: Any,
) -> None:
    """Send campaign ID again to the people whose message is in the given states.

    \b
    Each is a new attempt of the same message (same Message-ID, so it threads and
    de-duplicates in the reader's mailbox), not a new campaign:
      notifier resend 2020-03-breach --status failed_temporary,bounced_soft
      notifier resend 2020-03-breach --status failed_temporary --yes
    Hard bounces stay suppressed; send them a letter (notifier export unreachable).
    """
    states = resend_states(statuses.split(","))
    cohort = {"exposures": exposures, "locales": locales, "statuses": "", "ids_file": ids_file}
    spec = _spec(app, cohort, params, resend_states=states)
    _run(app, campaign_id, spec, params)


def _rate_text(rate: float) -> str:
    return "no limit" if rate == 0 else f"{rate:g} messages/s"


def _print_plan(ws: Workspace, campaign_id: str, spec: SendSpec) -> None:
    campaign: Campaign = ws.campaign(campaign_id)
    plan: SendPlan = ws.plan_send(campaign_id, spec)
    resend_states = spec.scope.resend_states
    console.print(f"Campaign {plan.campaign_id}: {campaign.title}", markup=False)
    if plan.states:
        console.print("Already in the ledger: " + _counts_text(plan.states))
    if plan.to_send == 0 and resend_states:
        console.print(f"Nothing to send again: no message is {' or '.join(resend_states)}.")
    elif plan.to_send == 0:
        console.print("Nothing to send: every message of this campaign already has an outcome.")
    else:
        rows = [(locale, exposure, n) for (locale, exposure), n in plan.by_group.items()]
        rows.append(("", "total", plan.to_send))
        console.print(
            f"Would send {plan.to_send} of {counted(plan.audience, 'message')} to {plan.target}, "
            f"rate {_rate_text(plan.rate)}, {counted(spec.options.concurrency, 'connection')}:"
        )
        echo_table(PLAN_COLUMNS, rows)
    if plan.suppressed:
        console.print(
            f"{counted(plan.suppressed, 'suppressed address', 'suppressed addresses')} would be"
            " skipped (hard bounces)."
        )
    if plan.uncertain and not spec.scope.resend_uncertain:
        console.print(
            f"{counted(plan.uncertain, 'message')} {'has' if plan.uncertain == 1 else 'have'}"
            " an unknown outcome after a crash; not sent again unless you add --resend-uncertain."
        )
    blockers = ws.send_blockers(campaign_id)
    if blockers:
        console.print(
            "Nothing was sent. A send would be refused now: " + "; ".join(blockers) + ".",
            markup=False,
        )
        if any("approved" in b for b in blockers):
            console.print(
                f"Have the person who signs it off read the proof sheet (notifier check"
                f" {plan.campaign_id} --proof proof.html), then: notifier approve"
                f' {plan.campaign_id} --by "NAME"',
                markup=False,
            )
        return
    # The same command, options and all, is the one to run: narrowing options included.
    console.print(
        "Nothing was sent. To send, run the same command again with --yes "
        f"(first see the messages yourself: notifier send {plan.campaign_id} --test-to YOU)."
    )


PLAN_COLUMNS = (
    Column("locale", breaks=False),
    Column("exposure", breaks=False),
    Column("messages", "right", breaks=False),
)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items()) or "none"


# A run held this long by retries alone gets its wait explained (seconds).
HELD_NOTICEABLY = 1.0


def _were(count: int) -> str:
    return "was" if count == 1 else "were"


def _deferrals_text(deferred: int, held: float) -> str:
    """Why a run with deferrals took the time it did."""
    what = f"The server deferred {counted(deferred, 'message')} (asked to try again later)"
    them = "it" if deferred == 1 else "them"
    if held < HELD_NOTICEABLY:
        return f"{what}; {them} {_were(deferred)} retried."
    return (
        f"{what}: waiting to retry {them} held the run for {held:.1f} s after the others "
        "were done, hence the time and the rate above."
    )


def _print_summary(summary: SendSummary) -> None:
    cid = summary.campaign_id
    width = _width()
    if summary.newly_uncertain:
        n = summary.newly_uncertain
        click.echo(
            f"{counted(n, 'message')} {_were(n)} in flight when an earlier send of {cid} "
            "stopped: marked uncertain.",
            err=True,
        )
    if summary.nothing_to_send:
        _say(f"Nothing to send for {cid}: every message already has an outcome.", width)
    else:
        _say(
            f"{cid}: {_counts_text(summary.counts)} in {summary.elapsed:.1f} s "
            f"({summary.rate:.0f} messages/s) via {summary.target}",
            width,
            "  ",
        )
    if summary.deferred:
        _say(_deferrals_text(summary.deferred, summary.held_by_retries), width, "  ")
    if summary.suppressed:
        n = summary.suppressed
        _say(f"Skipped {counted(n, 'suppressed address', 'suppressed addresses')}.", width)
    if summary.taken_elsewhere:
        n = summary.taken_elsewhere
        _say(
            f"{counted(n, 'message')} {_were(n)} claimed by another sender before this"
            " run could send them: not sent by this run.",
            width,
            "  ",
        )
    _say(f"Ledger: {_counts_text(summary.states)}", width, "  ")
    if summary.uncertain:
        n = len(summary.uncertain)
        shown = ", ".join(visible(m.email) for m in summary.uncertain[:5])
        more = f" and {n - 5} more" if n > 5 else ""
        _say(
            f"{counted(n, 'message')} {'has' if n == 1 else 'have'} an unknown outcome (the "
            f"server may or may not have {'it' if n == 1 else 'them'}): {shown}{more}. "
            f"See: notifier status {cid}. "
            f"To send {'it' if n == 1 else 'them'} again: notifier send {cid} --yes "
            "--resend-uncertain",
            width,
            "  ",
        )
    if summary.stopped:
        _say(f"Stopped. To resume exactly this run: {RESUME_HINT.format(campaign_id=cid)}", width)


class ProgressDisplay:
    """A live progress bar on stderr: sent / deferred / failed and the current rate."""

    WINDOW = 5.0  # seconds over which the current rate is measured
    REDRAW = 0.1  # seconds between redraws

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.deferrals = 0
        self._checking: Any = None  # a spinner while the send checks the campaign
        self._recent: deque[float] = deque()
        self._drawn = 0.0
        self._progress: Progress | None = None
        self._task: Any = None

    def checking(self) -> None:
        """One more person checked before the send (shown as a spinner)."""
        if self._checking is None:
            self._checking = err_console.status("checking the campaign before sending ...")
            self._checking.start()

    def started(self, total: int | None, server: ServerInfo) -> None:
        self._stop_checking()
        self._progress = Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self._task = self._progress.add_task("send", total=total, detail="")
        self._progress.start()

    def counted(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def outcome(self, outcome: DeliveryOutcome) -> None:
        if outcome.state == MessageState.DEFERRED:
            self.deferrals += 1
        else:
            self.counts[outcome.state] = self.counts.get(outcome.state, 0) + 1
        now = time.monotonic()
        self._recent.append(now)
        # Redraw at most ten times a second: at thousands of messages a second, drawing
        # every outcome would cost the sending loop more than the drawing shows.
        if now - self._drawn >= self.REDRAW:
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self._progress is None:
            return
        self._drawn = now
        while self._recent and self._recent[0] < now - self.WINDOW:
            self._recent.popleft()
        failed = sum(self.counts.get(s, 0) for s in FAILED_STATES)
        span = max(now - self._recent[0], 1e-3) if len(self._recent) > 1 else self.WINDOW
        detail = (
            f"sent {self.counts.get('sent', 0)} · deferred {self.deferrals} · "
            f"failed {failed} · {len(self._recent) / span:.0f}/s"
        )
        done = sum(self.counts.values())
        self._progress.update(self._task, completed=done, detail=detail)

    def _stop_checking(self) -> None:
        if self._checking is not None:
            self._checking.stop()
            self._checking = None

    def close(self) -> None:
        self._stop_checking()
        if self._progress is not None:
            self._draw(time.monotonic())  # the final counts, whenever the last redraw was
            self._progress.stop()
