"""The bounces page: ingest the configured Maildir in the background (a real DSN recorded,
a forged one refused and listed), and the unreachable list with the CLI's own CSV."""

from __future__ import annotations

import html
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_org_config
from console_client import Client, signed_in
from test_bounces import FIXTURES, PEOPLE, mid, seed_ledger, token
from test_cli_bounces import write_key

from notifier import verp
from notifier.cli import cli
from notifier.config import Settings, load_settings
from notifier.ledger import Ledger
from notifier.web.console import Console
from notifier.web.server import console_in_thread

WAIT = 30.0


@pytest.fixture
def bounce_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Console, Settings]]:
    """A ledger whose notices went to volunteers 1 and 3, and a Maildir (named in
    notifier.toml) holding a real Postfix DSN for 1 and a forged report about 3."""
    monkeypatch.delenv("NOTIFIER_SECRET_FILE", raising=False)
    ledger = tmp_path / "notifier.db"
    write_key(ledger)
    with Ledger(ledger) as led:
        seed_ledger(led, [1, 3])
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    shutil.copy(FIXTURES / "postfix-hard-511.eml", box / "new" / "1585563000.M1P1.mx")
    forged = (
        (FIXTURES / "postfix-delayed.eml")
        .read_bytes()
        .replace(token(3).encode(), verp.make_token(b"x" * 32, mid(3)).encode())
    )
    (box / "new" / "1585563001.M2P1.mx").write_bytes(forged)
    config = write_org_config(tmp_path)
    with config.open("a", encoding="utf-8") as handle:
        handle.write('\n[bounces]\nfolder = "Maildir"\n')
    settings = load_settings(config, ledger=ledger, env={})
    assert settings.bounce_folder == box
    with console_in_thread(settings) as running:
        yield running, settings


def cli_csv(settings: Settings, out: Path) -> bytes:
    result = CliRunner().invoke(
        cli,
        [
            "--ledger",
            str(settings.ledger),
            "export",
            "unreachable",
            "--format",
            "csv",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_ingest_records_the_dsn_and_lists_the_forged_report(
    bounce_console: tuple[Console, Settings], tmp_path: Path
) -> None:
    console, settings = bounce_console
    client = signed_in(console.origin, console.address())
    before = client.get("/bounces")
    assert before.status == 200
    assert str(settings.bounce_folder) in html.unescape(before.text)
    assert "None." in before.text  # no report yet
    reply = client.post("/bounces/ingest", {}, page="/bounces")
    assert reply.status == 303
    page = client.when_done(reply.header("Location"), WAIT)
    assert "2 reports read (0 already recorded): 1 matched, 0 unmatched, 1 refused as forged" in (
        page.text
    )
    assert '<th scope="row">Hard bounces</th><td class="number">1</td>' in page.text
    with Ledger(settings.ledger) as led:
        assert led.count("bounce_reports") == 2
        assert led.count("suppressions") == 1
        assert led.verify().ok

    after = html.unescape(client.get("/bounces").text)
    assert "1 reports not matched" in after and "forged" in after and PEOPLE[3] in after
    # The unreachable list: the hard-bounced volunteer, with the server's reason.
    assert "v-000001" in after and PEOPLE[1] in after and "hard_bounce" in after

    csv_reply = client.get("/bounces/unreachable.csv")
    assert csv_reply.status == 200
    assert csv_reply.header("Content-Type").startswith("text/csv")
    assert "attachment" in csv_reply.header("Content-Disposition")
    assert csv_reply.body == cli_csv(settings, tmp_path / "letters.csv")


def test_the_unreachable_csv_is_the_clis(
    client: Client, web_settings: Settings, tmp_path: Path
) -> None:
    """The example roster's six rejected rows, Japanese names and all, with the BOM."""
    reply = client.get("/bounces/unreachable.csv")
    expected = cli_csv(web_settings, tmp_path / "letters.csv")
    assert reply.body == expected
    assert reply.body.startswith("\ufeff".encode())
    assert "渡邉 陽菜" in reply.body.decode("utf-8")
    assert len(reply.body.decode("utf-8-sig").strip().splitlines()) == 7
    page = html.unescape(client.get("/bounces").text)
    assert "渡邉 陽菜" in page and "rejected_at_import" in page


def test_without_a_folder_the_page_says_how_to_name_one(client: Client) -> None:
    page = client.get("/bounces")
    assert "No folder for bounces is configured" in page.text
    reply = client.post("/bounces/ingest", {}, page="/bounces")
    assert reply.status == 400
    assert "[bounces] folder" in html.unescape(reply.text)


def test_an_ingest_that_cannot_run_says_why_and_what_to_do(
    bounce_console: tuple[Console, Settings],
) -> None:
    """The ledger's key file gone (moved, lost): the ingest job fails with the service's
    message and its hint, shown as what to do, and nothing is recorded."""
    console, settings = bounce_console
    client = signed_in(console.origin, console.address())
    key = settings.ledger.with_name(settings.ledger.name + ".key")
    kept = key.read_bytes()
    key.unlink()
    try:
        location = client.post("/bounces/ingest", {}, page="/bounces").header("Location")
        page = client.when_done(location, WAIT)
    finally:
        key.write_bytes(kept)
        key.chmod(0o600)
    text = html.unescape(page.text)
    assert '<div class="problem" role="alert">' in page.text, text
    alert = text[text.index('role="alert"') :]
    assert "key" in alert and "What to do: " in alert
    assert "hint:" not in text  # the hint is shown as what to do, not as raw text
    with Ledger(settings.ledger) as led:
        assert led.count("bounce_reports") == 0
