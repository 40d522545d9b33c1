"""`notifier demo`: the whole job on the embedded defaults, for a first look.

It runs the same commands a comms lead would run by hand, in order, against a ledger in
the working directory and an SMTP sink inside this process, so nothing leaves the machine:
import the example roster (showing its bad rows), list the volunteers, check both shipped
campaigns, preview one English and one Japanese notice, send the first notice into the
sink, and show its status and report.
"""

from __future__ import annotations

from pathlib import Path

import click

from notifier.cli.app import AppContext, cli, pass_app
from notifier.errors import RosterError
from notifier.ledger import VolunteerQuery
from notifier.sink import Sink

FIRST_NOTICE = "2020-03-breach"
UPDATE = "2020-04-29-update"
EXAMPLE_ROSTER = Path("examples") / "volunteers.csv"


def find_example_roster() -> Path:
    """The shipped example roster: in the working directory, else beside the package."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / EXAMPLE_ROSTER
        if candidate.exists():
            return candidate
    raise RosterError(
        "the example roster examples/volunteers.csv was not found",
        hint="run the demo from the project folder, or pass a roster: notifier demo FILE",
    )


def _run(ctx: click.Context, title: str, *args: str) -> None:
    """Run `notifier ARGS...` as if typed, after showing the title and the command line."""
    click.echo()
    click.secho(f"== {title}", bold=True)
    click.secho("$ notifier " + " ".join(args), dim=True)
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
    _run(
        ctx,
        "Import the roster: bad rows are reported and kept aside",
        "roster",
        "import",
        str(roster),
    )
    _run(ctx, "The volunteers now in the ledger", "roster", "list")
    for campaign_id in (FIRST_NOTICE, UPDATE):
        _run(
            ctx,
            f"Check that {campaign_id} renders for everyone in its audience",
            "check",
            campaign_id,
        )

    with app.open_ledger() as led:
        first_en = next(led.volunteers(VolunteerQuery(locales=("en",))), None)
        first_ja = next(led.volunteers(VolunteerQuery(locales=("ja",))), None)
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
    click.echo(f"The sink received {len(sink.messages)} message(s); they are in {maildir}/.")

    _run(ctx, f"Where {FIRST_NOTICE} stands", "status", FIRST_NOTICE)
    _run(ctx, "The ledger is intact", "ledger", "verify")
    click.echo()
    click.echo(
        "Next: notifier report 2020-03-breach --format html --out report.html"
        "  ·  notifier preview 2020-04-29-update --volunteer HMR-0002"
        "  ·  notifier --help"
    )
