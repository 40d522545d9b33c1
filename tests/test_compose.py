"""compose: the bytes parse back, with the stdlib `email` package, into the message meant."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
import shutil
import subprocess
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier import compose
from notifier.campaign import Campaign, load_campaign
from notifier.compose import (
    Composer,
    build_message,
    clean_header_text,
    compose_message,
    load_dkim_key,
    message_id_for,
    sender_domain,
    sign_dkim,
)
from notifier.config import Settings
from notifier.errors import (
    CampaignError,
    ComposeError,
    ConfigError,
    NotifierError,
    SMTPUTF8Required,
)
from notifier.render import RenderedMessage, Renderer
from notifier.volunteer import Volunteer

WHEN = datetime(2020, 3, 25, 9, 30, tzinfo=UTC)

FIRST = Campaign(
    campaign_id="2020-03-breach",
    title="Breach notice",
    template="breach",
    notice_date=date(2020, 3, 25),
    sender="HMR Data Protection <dpo@example.org>",
    reply_to={"en": "Volunteers <volunteers@example.org>", "ja": "volunteers-ja@example.jp"},
    subject={"en": "HMR: your data", "ja": "個人情報について"},
)
UPDATE = replace(
    FIRST,
    campaign_id="2020-04-29-update",
    template="update",
    notice_date=date(2020, 4, 29),
    follows="2020-03-breach",
)

TEXT_EN = "Dear Jane Doe,\n\nOn Saturday 14 March 2020, HMR was attacked.\n\nHMR\n"
HTML_EN = "<p>Dear Jane Doe,</p>\n<p>On Saturday 14 March 2020, HMR was attacked.</p>\n"
TEXT_JA = "鈴木 一郎 様\n\n2020年3月14日、当社はサイバー攻撃を受けました。\n"
HTML_JA = "<p>鈴木 一郎 様</p>\n<p>2020年3月14日、当社はサイバー攻撃を受けました。</p>\n"
SUBJECT_EN = "Important: HMR data breach"
SUBJECT_JA = "【重要】個人情報の流出に関するお知らせ（2020年3月14日の不正アクセス）"


def volunteer(
    locale: str = "en",
    *,
    volunteer_id: str = "HMR-0001",
    email_address: str = "jane@example.com",
    email_ascii: str | None = None,
    family_name: str | None = None,
    given_name: str | None = None,
) -> Volunteer:
    return Volunteer(
        volunteer_id=volunteer_id,
        email=email_address,
        email_ascii=email_ascii or email_address,
        family_name=family_name
        if family_name is not None
        else ("鈴木" if locale == "ja" else "Doe"),
        given_name=given_name if given_name is not None else ("一郎" if locale == "ja" else "Jane"),
        locale=locale,
        exposure="screened",
        data_held=("id_documents",),
    )


def rendered(v: Volunteer, campaign: Campaign = FIRST) -> RenderedMessage:
    if v.locale == "ja":
        return RenderedMessage(
            campaign.campaign_id, v.volunteer_id, "ja", SUBJECT_JA, TEXT_JA, HTML_JA
        )
    return RenderedMessage(campaign.campaign_id, v.volunteer_id, "en", SUBJECT_EN, TEXT_EN, HTML_EN)


def parse(data: bytes) -> EmailMessage:
    # Bodies are 7-bit clean, so decoding as UTF-8 first only matters for SMTPUTF8 headers.
    message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(part: MIMEPart) -> str:
    """A text part's decoded content, with line breaks as Python writes them."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def only_address(message: EmailMessage, header: str) -> Address:
    assert len(message.get_all(header) or []) == 1, f"exactly one {header} header"
    addresses = message[header].addresses
    assert len(addresses) == 1, f"exactly one address in {header}"
    address: Address = addresses[0]
    return address


def header_lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


EXPECTED_HEADERS = [
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Language",
    "Content-Type",
]


# --- the message as a whole ------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "subject", "text", "html", "reply_to"),
    [
        ("en", SUBJECT_EN, TEXT_EN, HTML_EN, "volunteers@example.org"),
        ("ja", SUBJECT_JA, TEXT_JA, HTML_JA, "volunteers-ja@example.jp"),
    ],
)
def test_compose_parses_back_to_the_message_meant(
    locale: str, subject: str, text: str, html: str, reply_to: str
) -> None:
    v = volunteer(locale)
    data = compose_message(rendered(v), FIRST, v, date=WHEN)
    message = parse(data)

    assert list(message.keys()) == EXPECTED_HEADERS
    assert message["Subject"] == subject
    sender = only_address(message, "From")
    assert (sender.display_name, sender.addr_spec) == ("HMR Data Protection", "dpo@example.org")
    to = only_address(message, "To")
    assert (to.display_name, to.addr_spec) == (v.display_name, v.email)
    assert only_address(message, "Reply-To").addr_spec == reply_to
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == message_id_for(FIRST.campaign_id, v.volunteer_id, "example.org")
    assert message["MIME-Version"] == "1.0"
    assert message["Content-Language"] == locale
    assert message.get_content_type() == "multipart/alternative"
    assert "In-Reply-To" not in message and "References" not in message

    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert [content(p) for p in parts] == [text, html]
    assert not any(p.is_attachment() for p in parts)


def test_japanese_subject_and_name_use_rfc2047_on_the_wire() -> None:
    v = volunteer("ja")
    data = compose_message(rendered(v), FIRST, v, date=WHEN)
    assert data.isascii(), "an all-ASCII address means an all-ASCII message"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: =?utf-8?b?" in head
    assert b"To: =?utf-8?b?" in head
    assert all(len(line) <= 78 for line in header_lines(data))


def test_bodies_are_seven_bit_clean_with_short_lines() -> None:
    long_en = ("A sentence about the breach that runs on. " * 40).strip() + "\n"
    accented = "Dear Zoë Brontë,\n\nWe’re sorry — we are writing about the attack.\n"
    long_ja = "当社は、2020年3月14日に受けたサイバー攻撃について、お知らせいたします。" * 30 + "\n"
    cases = {"7bit": TEXT_EN, "quoted-printable": accented, "base64": long_ja}
    for expected_cte, body in cases.items():
        v = volunteer("ja" if expected_cte == "base64" else "en")
        r = replace(rendered(v), text=body, html=f"<p>{long_en}</p>")
        data = compose_message(r, FIRST, v, date=WHEN)
        assert data.isascii()
        assert max(len(line) for line in data.split(b"\r\n")) <= 78
        assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"
        plain, html = parse(data).iter_parts()
        assert plain["Content-Transfer-Encoding"] == expected_cte
        assert content(plain) == body
        assert content(html) == f"<p>{long_en}</p>\n"


def test_a_body_containing_the_boundary_cannot_end_the_part() -> None:
    v = volunteer()
    mid = message_id_for(FIRST.campaign_id, v.volunteer_id, "example.org")
    trap = f"before\n--=_{mid[1:27]}--\nafter\n"
    data = compose_message(replace(rendered(v), text=trap), FIRST, v, date=WHEN)
    plain, html = parse(data).iter_parts()
    assert content(plain) == trap
    assert content(html) == HTML_EN


def test_date_keeps_the_given_offset_and_refuses_naive_times() -> None:
    v = volunteer()
    tokyo = WHEN.astimezone(timezone(timedelta(hours=9)))
    message = parse(compose_message(rendered(v), FIRST, v, date=tokyo))
    assert message["Date"] == "Wed, 25 Mar 2020 18:30:00 +0900"
    assert message["Date"].datetime == WHEN
    with pytest.raises(ValueError, match="timezone-aware"):
        compose_message(rendered(v), FIRST, v, date=WHEN.replace(tzinfo=None))


def test_missing_reply_to_for_the_locale_names_the_field() -> None:
    campaign = replace(FIRST, reply_to={"en": "volunteers@example.org"})
    v = volunteer("ja")
    with pytest.raises(CampaignError) as info:
        compose_message(rendered(v), campaign, v, date=WHEN)
    assert info.value.field == "reply_to.ja"


# --- Message-ID and threading -------------------------------------------------------------


def test_message_id_is_deterministic_hashed_and_on_the_sender_domain() -> None:
    first = message_id_for("2020-03-breach", "HMR-0001", "example.org")
    assert first == message_id_for("2020-03-breach", "HMR-0001", "example.org")
    assert re.fullmatch(r"<[a-z2-7]{26}@example\.org>", first)
    assert "HMR" not in first and "0001" not in first
    others = {
        message_id_for("2020-03-breach", "HMR-0002", "example.org"),
        message_id_for("2020-04-29-update", "HMR-0001", "example.org"),
        message_id_for("2020-03-breach", "HMR-0001", "example.jp"),
    }
    assert first not in others and len(others) == 3

    v = volunteer()
    once = compose_message(rendered(v), FIRST, v, date=WHEN)
    again = compose_message(rendered(v), replace(FIRST), v, date=WHEN)
    assert once == again, "the same inputs give the same bytes"
    assert parse(once)["Message-ID"] == first.replace("@example.org", "@example.org")


def test_message_ids_of_a_group_share_their_first_characters_and_nothing_else() -> None:
    """People whose IDs differ only in their last two characters (next to one another in
    a send's walk) get Message-IDs that begin alike, so a send's new messages go into the
    ledger's index of Message-IDs together; the rest of each ID is the person's own."""
    key = bytes(range(32))

    def local(campaign_id: str, volunteer_id: str, k: bytes | None = key) -> str:
        return message_id_for(campaign_id, volunteer_id, "example.org", k)[1:].partition("@")[0]

    group = [local("2020-03-breach", f"HMR-0{n:03d}") for n in range(100, 200)]
    assert len({m[:6] for m in group}) == 1  # HMR-01..: one group
    assert len({m[6:] for m in group}) == 100  # and a hundred people
    assert local("2020-03-breach", "HMR-0200")[:6] != group[0][:6]  # the next group
    assert local("2020-04-29-update", "HMR-0100")[:6] != group[0][:6]  # another campaign
    assert local("2020-03-breach", "HMR-0100", bytes(32))[:6] != group[0][:6]  # another key
    assert local("2020-03-breach", "HMR-0100", None)[:6] != group[0][:6]  # a preview's
    for m in group:
        assert re.fullmatch(r"[a-z2-7]{26}", m)
    # IDs in no order (UUIDs) are groups of one: nothing alike beyond chance.
    uuids = [
        local("2020-03-breach", str(uuid.uuid5(uuid.NAMESPACE_URL, f"v{n}"))) for n in range(1, 50)
    ]
    assert len({m[:6] for m in uuids}) == len(uuids)


def test_follow_up_threads_under_the_first_notice() -> None:
    for locale in ("en", "ja"):
        v = volunteer(locale)
        first = parse(compose_message(rendered(v), FIRST, v, date=WHEN))
        update = parse(compose_message(rendered(v, UPDATE), UPDATE, v, date=WHEN))
        assert update["In-Reply-To"] == first["Message-ID"]
        assert update["References"] == first["Message-ID"]
        assert update["Message-ID"] != first["Message-ID"]
        assert update["Message-ID"] == message_id_for(
            UPDATE.campaign_id, v.volunteer_id, "example.org"
        )


def test_a_follow_up_to_someone_the_first_notice_never_reached_is_not_threaded() -> None:
    """As a send composes it (the ledger's IDs given): "" means the notice it follows has
    no message for this person, so no In-Reply-To naming a message they never got."""
    v = volunteer("en")
    issued = "<issued-by-the-ledger@example.org>"
    composer = Composer(UPDATE, FixedRenderer(UPDATE))
    lonely = parse(composer.build(v, date=WHEN, message_id="<u@example.org>", in_reply_to="").data)
    assert "In-Reply-To" not in lonely and "References" not in lonely
    reached = parse(
        composer.build(v, date=WHEN, message_id="<u@example.org>", in_reply_to=issued).data
    )
    assert reached["In-Reply-To"] == reached["References"] == issued


def test_idn_sender_domain_is_written_as_an_a_label() -> None:
    campaign = replace(FIRST, sender="HMR データ保護 <dpo@例え.jp>")
    assert sender_domain(campaign) == "xn--r8jz45g.jp"
    assert sender_domain(FIRST) == "example.org"
    v = volunteer()
    message = parse(compose_message(rendered(v), campaign, v, date=WHEN))
    sender = only_address(message, "From")
    assert (sender.display_name, sender.addr_spec) == ("HMR データ保護", "dpo@xn--r8jz45g.jp")
    assert message["Message-ID"].endswith("@xn--r8jz45g.jp>")


def test_sender_that_is_not_an_address_names_the_campaign_field() -> None:
    campaign = replace(FIRST, sender="HMR Data Protection", path=Path("c.toml"))
    with pytest.raises(CampaignError) as info:
        sender_domain(campaign)
    assert (info.value.file, info.value.field) == ("c.toml", "from")


# --- SMTPUTF8 ---------------------------------------------------------------------------


def test_idn_recipient_with_and_without_smtputf8() -> None:
    v = volunteer(email_address="jane@bücher.example", email_ascii="jane@xn--bcher-kva.example")
    plain = compose_message(rendered(v), FIRST, v, date=WHEN, smtputf8=False)
    assert plain.isascii()
    assert only_address(parse(plain), "To").addr_spec == "jane@xn--bcher-kva.example"

    utf8 = compose_message(rendered(v), FIRST, v, date=WHEN, smtputf8=True)
    assert "jane@bücher.example".encode() in utf8
    assert only_address(parse(utf8), "To").addr_spec == "jane@bücher.example"


def test_non_ascii_local_part_needs_smtputf8() -> None:
    v = volunteer(email_address="δοκιμή@example.com")
    with pytest.raises(SMTPUTF8Required) as info:
        compose_message(rendered(v), FIRST, v, date=WHEN, smtputf8=False)
    assert isinstance(info.value, NotifierError)
    assert "SMTPUTF8" in str(info.value)
    to = only_address(parse(compose_message(rendered(v), FIRST, v, date=WHEN)), "To")
    assert to.addr_spec == "δοκιμή@example.com"


def test_non_ascii_sender_local_part_needs_smtputf8() -> None:
    campaign = replace(FIRST, sender="データ保護@example.jp")
    v = volunteer()
    with pytest.raises(SMTPUTF8Required):
        compose_message(rendered(v), campaign, v, date=WHEN, smtputf8=False)
    sender = only_address(parse(compose_message(rendered(v), campaign, v, date=WHEN)), "From")
    assert sender.addr_spec == "データ保護@example.jp"


# --- header injection ------------------------------------------------------------------------

HOSTILE_NAMES = [
    "Alice\r\nBcc: evil@example.com",
    "Alice\nBcc: evil@example.com",
    "Alice\rBcc: evil@example.com",
    "\r\n\r\nbody starts here",
    'Eve "the boss" O\'Neil',
    "<b>Bold</b> <script>alert(1)</script>",
    "Smith, John <john@evil.example>",
    "evil@example.com",
    "=?utf-8?b?ZXZpbEBleGFtcGxlLmNvbQ==?=",
    "back\\slash\\",
    "(comment) name;group:",
    "鈴木\r\nBcc: evil@example.com",
    "Jean-Éric\u2028Bcc: evil@example.com\x85",
    "A" * 200,
    "名前" * 80,
]


def name_as_rfc2047_reader_shows_it(data: bytes, address: str) -> str:
    """The To display name decoded by the letter of RFC 2047.

    Python's address parser puts a space between adjacent encoded words, which RFC 2047
    6.2 (and mail clients) drop; the legacy `decode_header` follows the RFC.
    """
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    shown = str(make_header(decode_header(raw)))
    assert shown.endswith(f" <{address}>")
    return shown.removesuffix(f" <{address}>")


def assert_recipient_intact(data: bytes, v: Volunteer) -> None:
    message = parse(data)
    assert list(message.keys()) == EXPECTED_HEADERS
    assert_to_header(data, v)
    assert [content(p) for p in message.iter_parts()] == [TEXT_EN, HTML_EN]


def assert_to_header(data: bytes, v: Volunteer) -> None:
    """One To address, the volunteer's, under their (cleaned) name; short header lines."""
    to = only_address(parse(data), "To")
    assert to.addr_spec == v.email
    name = clean_header_text(v.display_name)
    longest_word = max(map(len, name.split(" ")))
    encoded = not name.isascii() or "=?" in name or longest_word > 60
    if not encoded or len(name.encode()) <= 42:  # one encoded word: Python reads it exactly
        assert to.display_name == name
    if encoded:
        assert name_as_rfc2047_reader_shows_it(data, v.email) == name
    assert all(len(line) <= 78 for line in header_lines(data))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_display_names_never_inject(name: str) -> None:
    v = volunteer(given_name=name)
    data = compose_message(rendered(v), FIRST, v, date=WHEN)
    assert b"\nBcc:" not in data and b"\nbody starts" not in data
    assert_recipient_intact(data, v)


@settings(max_examples=300, deadline=None)
@given(family=st.text(max_size=60), given_name=st.text(max_size=60))
def test_any_name_parses_back_as_written_and_never_injects(family: str, given_name: str) -> None:
    v = volunteer(family_name=family, given_name=given_name)
    assert_recipient_intact(compose_message(rendered(v), FIRST, v, date=WHEN), v)


@settings(max_examples=200, deadline=None)
@given(subject=st.text(max_size=200))
def test_any_subject_parses_back_cleaned(subject: str) -> None:
    v = volunteer()
    data = compose_message(replace(rendered(v), subject=subject), FIRST, v, date=WHEN)
    message = parse(data)
    assert list(message.keys()) == EXPECTED_HEADERS
    assert message["Subject"] == clean_header_text(subject)


@pytest.mark.parametrize(
    "address",
    [
        "jane@example.com>\r\nBcc: evil@example.com",
        "jane@example.com, evil@example.com",
        "Jane <jane@example.com>",
        "jane example@example.com",
        "no-at-sign",
        "@example.com",
    ],
)
def test_an_address_that_could_break_the_header_is_refused(address: str) -> None:
    v = volunteer(email_address=address)
    with pytest.raises(ComposeError) as info:
        compose_message(rendered(v), FIRST, v, date=WHEN)
    assert info.value.field == "email"


def test_hostile_sender_name_in_campaign_is_quoted() -> None:
    campaign = replace(FIRST, sender='"HMR, \\"DPO\\" <x@evil.example>" <dpo@example.org>')
    v = volunteer()
    sender = only_address(parse(compose_message(rendered(v), campaign, v, date=WHEN)), "From")
    assert sender.addr_spec == "dpo@example.org"
    assert sender.display_name == 'HMR, "DPO" <x@evil.example>'


# --- same as the email package ---------------------------------------------------------------


def reference_message(r: RenderedMessage, campaign: Campaign, v: Volunteer) -> bytes:
    """The same message built the slow, obviously-correct way with EmailMessage."""
    domain = sender_domain(campaign)
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = Address("HMR Data Protection", addr_spec="dpo@example.org")
    m["To"] = Address(v.display_name, addr_spec=v.email)
    m["Reply-To"] = campaign.reply_to[r.locale]
    m["Subject"] = r.subject
    m["Date"] = WHEN
    m["Message-ID"] = message_id_for(campaign.campaign_id, v.volunteer_id, domain)
    if campaign.follows:
        m["In-Reply-To"] = message_id_for(campaign.follows, v.volunteer_id, domain)
        m["References"] = message_id_for(campaign.follows, v.volunteer_id, domain)
    m.set_content(r.text)
    m.add_alternative(r.html, subtype="html")
    m["Content-Language"] = r.locale  # after set_content, which clears Content-* headers
    return m.as_bytes()


@pytest.mark.parametrize("campaign", [FIRST, UPDATE], ids=["first", "follow-up"])
@pytest.mark.parametrize("locale", ["en", "ja"])
def test_fast_path_parses_the_same_as_the_email_package(campaign: Campaign, locale: str) -> None:
    v = volunteer(locale, given_name='Zoë "Z" <b>' if locale == "en" else "一郎")
    r = rendered(v, campaign)
    ours = parse(compose_message(r, campaign, v, date=WHEN))
    # The email package writes 8bit bodies, which only the bytes parser decodes properly.
    theirs = email.message_from_bytes(
        reference_message(r, campaign, v), policy=email.policy.default
    )
    assert isinstance(theirs, EmailMessage)
    assert sorted(ours.keys()) == sorted(theirs.keys())
    for key in theirs.keys():
        if key != "Content-Type":  # the boundary differs
            assert str(ours[key]) == str(theirs[key]), key
    assert ours.get_content_type() == theirs.get_content_type()
    for mine, ref in zip(ours.iter_parts(), theirs.iter_parts(), strict=True):
        assert mine.get_content_type() == ref.get_content_type()
        assert mine.get_content_charset() == ref.get_content_charset()
        assert content(mine) == content(ref)


# --- build_message ----------------------------------------------------------------------------


class FixedRenderer:
    """The smallest renderer: what build_message asks of notifier.render.Renderer."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    def render(self, v: Volunteer, *, reached: bool | None = None) -> RenderedMessage:
        return rendered(v, self.campaign)


def test_build_message_carries_ids_and_both_addresses() -> None:
    v = volunteer(email_address="jane@bücher.example", email_ascii="jane@xn--bcher-kva.example")
    composed = build_message(FixedRenderer(UPDATE), UPDATE, v, date=WHEN)
    assert composed.message_id == message_id_for(UPDATE.campaign_id, v.volunteer_id, "example.org")
    assert (composed.campaign_id, composed.volunteer_id) == (UPDATE.campaign_id, v.volunteer_id)
    assert (composed.recipient, composed.recipient_ascii) == (v.email, v.email_ascii)
    assert composed.data == compose_message(rendered(v, UPDATE), UPDATE, v, date=WHEN)
    assert parse(composed.data)["Message-ID"] == composed.message_id


# --- DKIM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(private key PEM, public key DER), made with openssl; skipped where it is absent."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key_file = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run(
        [openssl, "genrsa", "-traditional", "-out", str(key_file), "2048"],
        check=True,
        capture_output=True,
    )
    public = subprocess.run(
        [openssl, "rsa", "-in", str(key_file), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key_file.read_bytes(), public


def test_dkim_signature_verifies_and_detects_tampering(rsa_key: tuple[bytes, bytes]) -> None:
    import dkim

    private, public = rsa_key
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"notifier2020._domainkey.example.org." else b""

    v = volunteer("ja")
    data = compose_message(rendered(v, UPDATE), UPDATE, v, date=WHEN)
    signed = sign_dkim(data, selector="notifier2020", domain="example.org", private_key=private)
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(data)
    assert dkim.verify(signed, dnsfunc=dns)
    signature = parse(signed)["DKIM-Signature"]
    signed_headers = re.search(r"h=([^;]+)", str(signature))
    assert signed_headers is not None
    for name in ("from", "to", "subject", "date", "message-id", "reply-to", "in-reply-to"):
        assert name in signed_headers.group(1).replace(" ", "").lower().split(":")

    subject_line = next(line for line in header_lines(data) if line.startswith(b"Subject:"))
    tampered = signed.replace(subject_line, b"Subject: Click this link")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_with_a_bad_key_is_a_compose_error() -> None:
    v = volunteer()
    data = compose_message(rendered(v), FIRST, v, date=WHEN)
    with pytest.raises(ComposeError) as info:
        sign_dkim(data, selector="s", domain="example.org", private_key=b"not a key")
    assert info.value.field == "dkim"


def test_build_message_signs_with_the_configured_key(
    rsa_key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    import dkim

    private, public = rsa_key
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(private)
    key = load_dkim_key(Settings(dkim_selector="sel", dkim_key_file=key_file))
    assert key is not None
    v = volunteer()
    composed = build_message(FixedRenderer(FIRST), FIRST, v, date=WHEN, dkim=key)
    unsigned = compose_message(rendered(v), FIRST, v, date=WHEN)
    assert composed.data.endswith(unsigned) and composed.data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        found = name == b"sel._domainkey.example.org."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public) if found else b""

    assert dkim.verify(composed.data, dnsfunc=dns)


def test_dkim_settings_need_both_selector_and_key(tmp_path: Path) -> None:
    assert load_dkim_key(Settings()) is None
    with pytest.raises(ConfigError) as info:
        load_dkim_key(Settings(dkim_selector="sel"))
    assert info.value.field == "dkim"
    with pytest.raises(ConfigError) as info:
        load_dkim_key(Settings(dkim_selector="sel", dkim_key_file=tmp_path / "missing.pem"))
    assert info.value.field == "dkim.key_file"


# --- the whole chain, with the real renderer and shipped campaigns --------------------------


@pytest.mark.parametrize("locale", ["en", "ja"])
@pytest.mark.parametrize("name", HOSTILE_NAMES[:8])
def test_hostile_names_through_the_real_renderer(locale: str, name: str) -> None:
    campaign = load_campaign("2020-04-29-update")
    v = replace(volunteer(locale, given_name=name), exposure="database_only")
    composed = build_message(Renderer(campaign), campaign, v, date=WHEN, reached=True)
    message = parse(composed.data)
    threaded = [*EXPECTED_HEADERS[:6], "In-Reply-To", "References", *EXPECTED_HEADERS[6:]]
    assert list(message.keys()) == threaded
    assert_to_header(composed.data, v)
    html = content(message.get_body(preferencelist=("html",)))  # type: ignore[arg-type]
    for dangerous in ("<b>Bold", "<script>", '"the boss"'):
        assert dangerous not in html
    if "<b>" in name:
        assert "&lt;b&gt;Bold&lt;/b&gt;" in html
    assert message["In-Reply-To"] == message_id_for("2020-03-breach", v.volunteer_id, "example.org")


# --- the speed-ups keep the bytes the slower, obvious code produced --------------------

_QP_TEXT = st.text(
    alphabet=st.sampled_from([" ", "\t", ".", "=", "a", "Z", "é", "—", "鈴", "\n", "\x0c", "_"]),
    max_size=300,
)


@settings(max_examples=500, deadline=None)
@given(_QP_TEXT, st.integers(min_value=0, max_value=90))
def test_quoted_printable_by_line_matches_whole_text(text: str, pad: int) -> None:
    text = "x" * pad + text
    if not text.endswith("\n"):
        text += "\n"
    whole = binascii.b2a_qp(text.encode("utf-8").replace(b"\n", b"\r\n"), istext=True)
    cache: dict[str, str] = {}
    assert compose._quoted_printable(text.split("\n"), cache) == whole.decode("ascii")
    assert compose._quoted_printable(text.split("\n"), cache) == whole.decode("ascii")  # cached


def test_composer_builds_what_build_message_builds_many_times_over() -> None:
    """One Composer for a whole campaign (as a send keeps one) gives, message after
    message, the bytes a fresh one gives for each."""
    renderer = FixedRenderer(FIRST)
    composer = Composer(FIRST, renderer)
    for v in (volunteer("en"), volunteer("ja", volunteer_id="HMR-0002"), volunteer("en")):
        built = composer.build(v, date=WHEN)
        assert built == build_message(renderer, FIRST, v, date=WHEN)
