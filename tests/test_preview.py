"""`notifier preview`: the bytes a send would produce, for one person or for everyone."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import Notifier, with_contact
from smtp_helpers import add_volunteers, approve_shipped, send

from notifier.campaign import apply_overrides, load_campaign
from notifier.compose import Composer, message_id_for
from notifier.config import Settings
from notifier.event import EventKind
from notifier.ledger import EventDraft, Ledger, chain, volunteer_to_row
from notifier.pipeline import MessageIds
from notifier.render import Renderer
from notifier.sink import Sink
from notifier.volunteer import Volunteer

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"


def person(
    volunteer_id: str,
    locale: str = "en",
    exposure: str = "screened",
    *,
    given_name: str | None = None,
    email_address: str | None = None,
) -> Volunteer:
    address = email_address or f"{volunteer_id.lower()}@example.com"
    return Volunteer(
        volunteer_id=volunteer_id,
        email=address,
        email_ascii=address,
        family_name="鈴木" if locale == "ja" else "Doe",
        given_name=given_name if given_name is not None else ("一郎" if locale == "ja" else "Jane"),
        locale=locale,
        exposure=exposure,
        data_held=("id_documents", "photo", "health_questionnaire"),
    )


PEOPLE = [
    person("HMR-0001", "en", "published"),
    person("HMR-0002", "en", "screened", given_name='<b>Eve</b> "E", Jr.\r\nBcc: x@evil.example'),
    person("HMR-0003", "en", "database_only"),
    person("HMR-0004", "ja", "published"),
    person("HMR-0005", "ja", "screened"),
    person("HMR-0006", "ja", "database_only"),
]


def add_people(ledger_path: Path, people: list[Volunteer]) -> None:
    with Ledger(ledger_path) as led, led.transaction():
        led.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])


def mark_sent(ledger_path: Path, campaign_id: str, volunteer_ids: list[str]) -> None:
    """Record `campaign_id` as sent to these people, as delivery would."""
    with Ledger(ledger_path) as led, led.transaction():
        led.db.table("campaigns").insert(
            {"campaign_id": campaign_id, "title": campaign_id, "registered_at": "2020-03-25"},
            ignore=True,
        )
        for vid in volunteer_ids:
            mid = message_id_for(campaign_id, vid, "example.org")
            led.db.table("messages").insert(
                {"message_id": mid, "campaign_id": campaign_id, "volunteer_id": vid}
            )
            led.db.table("messages").update(mid, {"state": "sent"})
            with led.transaction():  # a history written by hand, as delivery would leave it
                chain.append(
                    led.conn,
                    [EventDraft(EventKind.SENT, campaign_id, vid, mid, {"reply": "250 ok"})],
                )


def send_ids(ledger_path: Path, campaign_id: str) -> MessageIds:
    """The Message-IDs a send of `campaign_id` would use on this ledger (keyed)."""
    with Ledger(ledger_path) as led:
        return MessageIds.of(led, apply_overrides(load_campaign(campaign_id), Settings()))


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def part_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


@pytest.fixture
def people(ledger_path: Path) -> list[Volunteer]:
    add_people(ledger_path, PEOPLE)
    return PEOPLE


def without_date(data: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\n", data)


# --- one person ----------------------------------------------------------------------------


@pytest.mark.parametrize("volunteer", PEOPLE, ids=lambda v: v.volunteer_id)
def test_eml_is_exactly_what_build_message_produces(
    notifier: Notifier, people: list[Volunteer], volunteer: Volunteer
) -> None:
    result = notifier("preview", FIRST, "--volunteer", volunteer.volunteer_id, "--format", "eml")
    assert result.exit_code == 0, result.output
    data = result.stdout_bytes
    campaign = apply_overrides(load_campaign(FIRST), Settings())
    ids = send_ids(notifier.ledger_path, FIRST)
    mid = ids.message_id(volunteer.volunteer_id)
    expected = Composer(campaign, Renderer(campaign)).build(
        volunteer, date=datetime.now(UTC), message_id=mid
    )
    assert without_date(data) == without_date(expected.data)

    message = parse(data)
    # The ID a send would use: keyed with the ledger's key, not a preview's own.
    assert (
        message["Message-ID"] == mid != message_id_for(FIRST, volunteer.volunteer_id, "example.org")
    )
    assert message["Content-Language"] == volunteer.locale
    assert message["Subject"] == Renderer(campaign).render(volunteer).subject
    assert abs((message["Date"].datetime - datetime.now(UTC)).total_seconds()) < 300
    to = message["To"].addresses
    assert len(to) == 1 and to[0].addr_spec == volunteer.email
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_text_shows_the_headers_a_reader_sees_above_the_text(
    notifier: Notifier, people: list[Volunteer]
) -> None:
    eml = parse(
        notifier(
            "preview", FIRST, "--volunteer", "hmr-0005@example.com", "--format", "eml"
        ).stdout_bytes
    )
    result = notifier("preview", FIRST, "--volunteer", "hmr-0005@example.com")
    assert result.exit_code == 0, result.output
    head, _, body = result.stdout.partition("\n\n")
    shown = dict(line.split(": ", 1) for line in head.splitlines())
    assert list(shown) == ["From", "To", "Reply-To", "Subject", "Date"]
    assert shown["Subject"] == eml["Subject"]
    assert re.search(r"[\u3040-\u30ff]", shown["Subject"]), "a Japanese subject, decoded"
    assert shown["To"] == "鈴木 一郎 <hmr-0005@example.com>"
    assert shown["Reply-To"] == str(eml["Reply-To"])
    assert body == part_text(eml, "plain")
    assert "鈴木" in body


def test_html_is_the_decoded_html_part_with_the_name_escaped(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    out = tmp_path / "eve.html"
    result = notifier(
        "preview", FIRST, "--volunteer", "HMR-0002", "--format", "html", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    html = out.read_text(encoding="utf-8")
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html
    assert "<b>Eve" not in html
    eml = parse(
        notifier("preview", FIRST, "--volunteer", "HMR-0002", "--format", "eml").stdout_bytes
    )
    assert html == part_text(eml, "html")
    assert "Bcc" not in eml and len(eml["To"].addresses) == 1


def test_out_writes_the_eml_file(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    out = tmp_path / "one.eml"
    result = notifier(
        "preview", FIRST, "--volunteer", "HMR-0004", "--format", "eml", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.stderr
    message = parse(out.read_bytes())
    assert message["Content-Language"] == "ja"
    assert b"\r\n" in out.read_bytes() and b"\n" not in out.read_bytes().replace(b"\r\n", b"")


def test_someone_outside_the_audience_gets_a_preview_and_a_warning(
    notifier: Notifier, people: list[Volunteer]
) -> None:
    # The first notice went to HMR-0005 only, so the follow-up goes to nobody else.
    mark_sent(notifier.ledger_path, FIRST, ["HMR-0005"])
    inside = notifier("preview", UPDATE, "--volunteer", "HMR-0005")
    assert inside.exit_code == 0, inside.output
    assert "not in the audience" not in inside.stderr

    outside = notifier("preview", UPDATE, "--volunteer", "HMR-0006", "--format", "eml")
    assert outside.exit_code == 0, outside.output
    assert "HMR-0006 is not in the audience of 2020-04-29-update" in outside.stderr
    message = parse(outside.stdout_bytes)
    # The first notice never reached HMR-0006: there is nothing to thread the update under.
    assert message["In-Reply-To"] is None and message["References"] is None
    inside_message = parse(
        notifier("preview", UPDATE, "--volunteer", "HMR-0005", "--format", "eml").stdout_bytes
    )
    issued = message_id_for(FIRST, "HMR-0005", "example.org")  # as mark_sent recorded it
    assert inside_message["In-Reply-To"] == inside_message["References"] == issued


def test_unknown_volunteer_is_one_line_and_exit_2(
    notifier: Notifier, people: list[Volunteer]
) -> None:
    result = notifier("preview", FIRST, "--volunteer", "nobody@example.com")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert "nobody@example.com" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--volunteer", "HMR-0001", "--all", "--out", "x"],
        ["--all"],
        ["--all", "--out", "x", "--format", "text"],
    ],
)
def test_usage_errors(notifier: Notifier, people: list[Volunteer], args: list[str]) -> None:
    result = notifier("preview", FIRST, *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_sender_override_from_the_config_file(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    (tmp_path / "notifier.toml").write_text(
        '[sender]\nfrom = "Data Protection <privacy@example.net>"\n'
        'reply_to.en = "help@example.net"\n',
        encoding="utf-8",
    )
    message = parse(
        notifier("preview", FIRST, "--volunteer", "HMR-0001", "--format", "eml").stdout_bytes
    )
    assert message["From"].addresses[0].addr_spec == "privacy@example.net"
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.net"
    with Ledger(notifier.ledger_path) as led:
        key = led.message_id_key()
    assert message["Message-ID"] == message_id_for(FIRST, "HMR-0001", "example.net", key)


def test_a_configured_dkim_key_is_used_by_the_preview(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    (tmp_path / "notifier.toml").write_text(
        '[dkim]\nselector = "sel"\nkey_file = "missing.pem"\n', encoding="utf-8"
    )
    result = notifier("preview", FIRST, "--volunteer", "HMR-0001", "--format", "eml")
    assert result.exit_code == 2
    assert "cannot read the DKIM key" in result.stderr and "missing.pem" in result.stderr


# --- everyone ---------------------------------------------------------------------------------


def test_all_writes_one_parseable_eml_per_recipient(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    out = tmp_path / "previews"
    result = notifier("preview", FIRST, "--all", "--out", str(out))
    assert result.exit_code == 0, result.output
    campaign = load_campaign(FIRST)
    expected = {
        v.volunteer_id
        for v in PEOPLE
        if (not campaign.audience.exposures or v.exposure in campaign.audience.exposures)
        and (not campaign.audience.locales or v.locale in campaign.audience.locales)
    }
    files = sorted(out.iterdir())
    assert {f.stem for f in files} == expected
    assert all(f.suffix == ".eml" for f in files)
    assert f"wrote {len(expected)} messages to {out}" in result.stdout
    for f in files:
        message = parse(f.read_bytes())
        volunteer = next(v for v in PEOPLE if v.volunteer_id == f.stem)
        assert message["To"].addresses[0].addr_spec == volunteer.email
        assert message["Message-ID"] == send_ids(notifier.ledger_path, FIRST).message_id(f.stem)
        assert message["Content-Language"] == volunteer.locale
        assert len(list(message.iter_parts())) == 2


def test_all_for_an_unsent_follow_up_uses_the_attribute_filters(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    out = tmp_path / "update"
    result = notifier("preview", UPDATE, "--all", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2020-03-breach has not been sent yet" in result.stderr
    campaign = load_campaign(UPDATE)
    expected = {
        v.volunteer_id
        for v in PEOPLE
        if (not campaign.audience.exposures or v.exposure in campaign.audience.exposures)
        and (not campaign.audience.locales or v.locale in campaign.audience.locales)
    }
    assert {f.stem for f in out.iterdir()} == expected
    for f in out.iterdir():
        message = parse(f.read_bytes())
        assert message["In-Reply-To"] is None  # no first notice yet to thread under


def test_all_after_the_first_notice_goes_to_those_it_reached(
    notifier: Notifier, people: list[Volunteer], tmp_path: Path
) -> None:
    mark_sent(notifier.ledger_path, FIRST, ["HMR-0002", "HMR-0005"])
    out = tmp_path / "update"
    result = notifier("preview", UPDATE, "--all", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "not been sent yet" not in result.stderr
    assert {f.name for f in out.iterdir()} == {"HMR-0002.eml", "HMR-0005.eml"}


def test_all_keeps_odd_volunteer_ids_inside_the_directory(
    notifier: Notifier, ledger_path: Path, tmp_path: Path
) -> None:
    add_people(ledger_path, [person("../escape", "en", "screened", email_address="e@example.com")])
    out = tmp_path / "previews"
    result = notifier("preview", FIRST, "--all", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [f.name for f in out.iterdir()] == ["%2E%2E%2Fescape.eml"]
    assert not (tmp_path / "escape.eml").exists()


def test_a_preview_is_the_message_a_send_delivers(
    notifier: Notifier, ledger: Ledger, tmp_path: Path
) -> None:
    """The bytes a preview writes are those a real send puts on the wire, headers and
    boundary included (only the Date differs), for the first notice and for a follow-up
    threaded under it; and a preview made after the send shows the ID it went with."""
    people = [PEOPLE[0], PEOPLE[4]]
    add_volunteers(ledger, people)
    approve_shipped(ledger, FIRST, UPDATE)
    for campaign_id in (FIRST, UPDATE):
        before = {
            v.volunteer_id: notifier(
                "preview", campaign_id, "--volunteer", v.volunteer_id, "--format", "eml"
            ).stdout_bytes
            for v in people
        }
        with Sink() as sink:  # sent as the ledger's settings say (those beside it)
            send(ledger, with_contact(load_campaign(campaign_id)), people, sink.url)
        received = {parse(m.data)["Message-ID"]: m.data for m in sink.messages}
        for vid, preview in before.items():
            mid = parse(preview)["Message-ID"]
            assert without_date(preview) == without_date(received[mid])
            after = notifier("preview", campaign_id, "--volunteer", vid, "--format", "eml")
            assert parse(after.stdout_bytes)["Message-ID"] == mid
        if campaign_id == UPDATE:
            first_ids = ledger.message_ids(FIRST)
            for data in received.values():
                message = parse(data)
                vid = next(v.volunteer_id for v in people if v.email in message["To"])
                assert message["In-Reply-To"] == first_ids[vid]


def test_without_the_key_file_a_preview_says_its_ids_are_its_own(
    notifier: Notifier, ledger: Ledger
) -> None:
    add_volunteers(ledger, PEOPLE[:1])
    ledger.key_file.rename(ledger.key_file.with_name("elsewhere.key"))
    result = notifier("preview", FIRST, "--volunteer", "HMR-0001", "--format", "eml")
    assert result.exit_code == 0, result.output
    assert "no key file at" in result.stderr
    assert "the text is the same" in result.stderr
    assert not ledger.key_file.exists()  # a preview never makes one
    message = parse(result.stdout_bytes)
    assert message["Message-ID"] == message_id_for(FIRST, "HMR-0001", "example.org")
