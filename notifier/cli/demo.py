"""`notifier demo`: the whole job on the embedded defaults, for a first look.

It runs the same commands a comms lead would run by hand, in order, against a ledger in
the working directory and an SMTP sink inside this process, so nothing leaves the machine:
import the example roster (showing its bad rows), list the volunteers, check both shipped
campaigns, preview one English and one Japanese notice, send the first notice into the
sink, and show its status and report.

Every notice gives a contact point, which `notifier check` requires from notifier.toml's
[contact]. Where none is configured, the demo uses the example organisation's, from
examples/notifier.toml, for its own run only: it writes no settings file. The example's
stand-ins (example.org addresses, a drama phone number) are notes to the demo's check
and approval, not problems; the messages carrying them can go nowhere but the demo's own
sink, and a real send refuses them (notifier.service), so a real campaign never goes out
with them by accident.
"""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from pathlib import Path

import click

from notifier.cli.app import AppContext, cli, echo_table, pass_app
from notifier.config import load_contact
from notifier.errors import ConfigError, RosterError
from notifier.files import prepare_maildir
from notifier.layout import Column
from notifier.organisation import load_organisation
from notifier.outputs import counted
from notifier.service import VolunteerQuery
from notifier.sink import Sink
from notifier.volunteer import EXPOSURES, LOCALES

FIRST_NOTICE = "2020-03-breach"
DEMO_APPROVER = "notifier demo (not a person: approve your own campaigns yourself)"
UPDATE = "2020-04-29-update"
EXAMPLE_ROSTER = Path("examples") / "volunteers.csv"
EXAMPLE_SETTINGS = Path("examples") / "notifier.toml"


def find_example(relative: Path = EXAMPLE_ROSTER) -> Path | None:
    """A shipped example file: in the working directory, else beside the package."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / relative
        if candidate.exists():
            return candidate
    return None


def find_example_roster() -> Path:
    """The shipped example roster: in the working directory, else beside the package."""
    found = find_example(EXAMPLE_ROSTER)
    if found is None:
        raise RosterError(
            "the example roster examples/volunteers.csv was not found",
            hint="run the demo from the project folder, or pass a roster: notifier demo FILE",
        )
    return found


def use_example_contact(app: AppContext) -> Path | None:
    """Give this run the example organisation's contact point and statements
    ([organisation]), if none is configured; the example settings file used, if any."""
    if app.settings.contact:
        return None
    path = find_example(EXAMPLE_SETTINGS)
    if path is None:
        raise ConfigError(
            "no [contact] in notifier.toml, and the example settings "
            "examples/notifier.toml were not found",
            hint="add [contact] to notifier.toml (see README: Contact point)",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the example settings ({exc})", file=path) from exc
    # The organisation's own statements come with its contact point, unless some are set.
    own = app.settings.organisation
    app.settings = dataclasses.replace(
        app.settings,
        contact=load_contact(data, path),
        organisation=own if own.statements() else load_organisation(data, path),
    )
    click.echo(
        f"No [contact] in notifier.toml: this demo uses the example organisation's contact "
        f"point and statements from {path}. For commands of your own, pass "
        f"--config {_shown(path)} or add your organisation's [contact] and [organisation] "
        "to notifier.toml."
    )
    return path


def _shown(path: Path) -> Path:
    """`path` relative to the working directory where it is inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _run(ctx: click.Context, title: str, *args: str) -> None:
    """Run `notifier ARGS...` as if typed, after showing the title and the command line."""
    click.echo()
    click.echo(f"== {title}")
    click.echo("$ notifier " + shlex.join(args))
    command: click.Command = cli
    words = list(args)
    while isinstance(command, click.Group):
        name = words.pop(0)
        found = command.get_command(ctx, name)
        if found is None:
            raise click.UsageError(f"the demo names an unknown command: {name}")
        command = found
    with command.make_context(" ".join(args[:1]), words, parent=ctx) as sub:
        command.invoke(sub)


def _print_roster_summary(app: AppContext) -> None:
    """How many volunteers of each language and exposure: the roster at a glance (the
    whole list is one command away)."""
    click.echo()
    click.echo("== The volunteers now in the ledger")
    with app.workspace() as ws:
        counts = ws.volunteer_counts()
    exposures = [e for e in EXPOSURES if any(counts[(loc, e)] for loc in LOCALES)]
    columns = [
        Column("locale", breaks=False),
        *(Column(e, "right", breaks=False) for e in exposures),
        Column("total", "right", breaks=False),
    ]
    rows = []
    for locale in LOCALES:
        row = [counts[(locale, e)] for e in exposures]
        rows.append([locale, *row, sum(row)])
    echo_table(columns, rows)
    click.echo(
        f"{counted(sum(counts.values()), 'volunteer')}. Everyone: notifier roster list;"
        " one person, every field: notifier roster show HMR-0001"
    )


@cli.command()
@click.argument("roster", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-sink"),
    show_default=True,
    help="Where the embedded SMTP sink keeps what it receives.",
)
@click.pass_context
@pass_app
def demo(app: AppContext, ctx: click.Context, roster: Path | None, maildir: Path) -> None:
    """Run the whole job on the example roster, sending only into a local sink.

    \b
    Uses the ledger in the working directory (./notifier.db unless --ledger says
    otherwise). Safe to run again: the roster import and the send both notice
    that the work is already done.
    """
    roster = roster or find_example_roster()
    prepare_maildir(maildir)  # a folder it cannot write to stops it before any work
    example_settings = use_example_contact(app)
    # Only this run's checks and approvals take the example's stand-ins as notes; its
    # messages go into the sink below, the one place the service lets them go.
    app.settings = dataclasses.replace(app.settings, demo=True)
    click.echo(
        "This demo sends as the example organisation: its addresses (example.org) and phone"
        " number are stand-ins. Its checks note them; a real send refuses them until your"
        " own notifier.toml sets your organisation's (README, step 2: Contact point)."
    )
    config = f"--config {_shown(example_settings)} " if example_settings else ""
    _run(
        ctx,
        "Import the roster: bad rows are reported and kept aside",
        "roster",
        "import",
        str(roster),
    )
    _print_roster_summary(app)
    for campaign_id in (FIRST_NOTICE, UPDATE):
        _run(
            ctx,
            f"Check that {campaign_id} renders for everyone in its audience",
            "check",
            campaign_id,
        )

    with app.workspace() as ws:
        first_en = next(ws.volunteers(VolunteerQuery(locales=("en",))), None)
        first_ja = next(ws.volunteers(VolunteerQuery(locales=("ja",))), None)
    for volunteer in (first_en, first_ja):
        if volunteer is not None:
            _run(
                ctx,
                f"Preview: exactly what {volunteer.volunteer_id} ({volunteer.locale}) "
                "would receive",
                "preview",
                FIRST_NOTICE,
                "--volunteer",
                volunteer.volunteer_id,
            )

    with app.workspace() as ws:
        signed_off = ws.approval_status(FIRST_NOTICE)
    if signed_off.is_current and signed_off.approval is not None:
        click.echo()
        click.echo(
            f"== Four eyes: {FIRST_NOTICE} is approved already (by {signed_off.approval.by});"
            " its content has not changed since"
        )
    else:
        _run(
            ctx,
            f"Four eyes: approve {FIRST_NOTICE} (the demo signs it off in its own name; in"
            " earnest, the person who read the proof sheet does)",
            "approve",
            FIRST_NOTICE,
            "--by",
            DEMO_APPROVER,
        )
    with Sink(maildir=maildir) as sink:
        _run(
            ctx,
            f"Send {FIRST_NOTICE} into the embedded SMTP sink at {sink.url}",
            "send",
            FIRST_NOTICE,
            "--yes",
            "--smtp",
            sink.url,
        )
    received = counted(len(sink.messages), "message")
    click.echo(f"The sink received {received}; they are in {maildir}/.")

    _run(ctx, f"Where {FIRST_NOTICE} stands", "status", FIRST_NOTICE)
    _run(ctx, "The ledger is intact", "ledger", "verify")
    click.echo()
    click.echo("Next:")
    for line in (
        f"notifier report {FIRST_NOTICE} --format html --out report.html",
        f"notifier {config}preview {UPDATE} --volunteer HMR-0002",
        "write your organisation's notifier.toml (README, step 2: Contact point), then:"
        f" notifier check {UPDATE} --proof proof.html",
        "notifier export unreachable --out letters.csv   (who to write to by post)",
        "notifier --help",
    ):
        click.echo(f"  {line}")
