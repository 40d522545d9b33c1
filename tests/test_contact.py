"""The contact point: [contact] in notifier.toml, in every shape of every notice (the
"how to contact us" section, the line on what we never ask for, the signature), and the
From display name per locale."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXAMPLE_SETTINGS, ORG_SETTINGS, example_settings, org_settings, with_contact

from notifier.campaign import apply_overrides, load_campaign
from notifier.check import check_campaign
from notifier.config import Contact, load_settings
from notifier.errors import ConfigError
from notifier.ledger import Ledger, volunteer_to_row
from notifier.render import Renderer
from notifier.volunteer import DATA_HELD, EXPOSURES, LOCALES, Volunteer

CAMPAIGNS = ("2020-03-breach", "2020-04-29-update")
BASE = """
[contact]
organisation = "HMR"
name = "Data Protection Officer"
email = "dpo@example.org"
postal_address = "1 Example Street\\nLondon XX1 1XX"
"""


def settings_from(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contact_per_locale_with_japanese_overrides(tmp_path: Path) -> None:
    text = BASE + 'phone = "+44 20 7946 0123"\n[contact.ja]\nname = "データ保護責任者"\n'
    settings = load_settings(settings_from(tmp_path, text), env={})
    en, ja = settings.contact["en"], settings.contact["ja"]
    assert en == Contact(
        "HMR", "Data Protection Officer", "dpo@example.org",
        ("1 Example Street", "London XX1 1XX"), "+44 20 7946 0123",
    )  # fmt: skip
    assert ja.name == "データ保護責任者" and ja.email == en.email and ja.phone == en.phone
    assert en.from_name("en") == "Data Protection Officer, HMR"
    assert ja.from_name("ja") == "HMR データ保護責任者"


def test_contact_is_optional_in_settings_and_phone_is_optional(tmp_path: Path) -> None:
    assert load_settings(settings_from(tmp_path, "ledger = 'x.db'\n"), env={}).contact == {}
    settings = load_settings(settings_from(tmp_path, BASE), env={})
    assert settings.contact["en"].phone == ""
    listed = BASE.replace(
        'postal_address = "1 Example Street\\nLondon XX1 1XX"',
        'postal_address = ["1 Example Street", "  London XX1 1XX "]',
    )
    address = load_settings(settings_from(tmp_path, listed), env={}).contact["ja"]
    assert address.postal_address == ("1 Example Street", "London XX1 1XX")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace('name = "Data Protection Officer"\n', ""), "contact.name"),
        (lambda t: t + 'website = "https://example.org"\n', "contact.website"),
        (lambda t: t.replace('"dpo@example.org"', '"DPO <dpo@example.org>"'), "contact.email"),
        (lambda t: t.replace('organisation = "HMR"', 'organisation = ""'), "contact.organisation"),
        (lambda t: t + '[contact.ja]\nfax = "1"\n', "contact.ja.fax"),
        (lambda t: t + '[contact.ja]\nemail = "nobody"\n', "contact.ja.email"),
        (
            lambda t: t.replace('"1 Example Street\\nLondon XX1 1XX"', "[]"),
            "contact.postal_address",
        ),
    ],
)
def test_contact_errors_name_the_key(
    tmp_path: Path, edit: Callable[[str], str], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_from(tmp_path, edit(BASE)), env={})
    assert caught.value.field == field
    assert "notifier.toml" in str(caught.value)


def test_from_display_name_per_locale() -> None:
    campaign = with_contact(load_campaign("2020-03-breach"))
    assert campaign.sender == '"Data Protection Officer, HMR" <dpo@hmr.test>'
    assert campaign.sender_for("en") == campaign.sender
    assert campaign.sender_for("ja") == "HMR データ保護責任者 <dpo@hmr.test>"
    plain = load_campaign("2020-03-breach")
    assert plain.sender_for("ja") == plain.sender == "HMR Data Protection <dpo@example.org>"


def visible(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def every_data_set() -> list[tuple[str, ...]]:
    """Nothing, each kind alone, and a spread of combinations up to everything."""
    sets: list[tuple[str, ...]] = [(), DATA_HELD]
    sets += [(kind,) for kind in DATA_HELD]
    sets += list(itertools.combinations(DATA_HELD, 3))[::5]
    return sets


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
@pytest.mark.parametrize("locale", LOCALES)
def test_contact_block_in_every_shape(campaign_id: str, locale: str) -> None:
    campaign = with_contact(load_campaign(campaign_id))
    renderer = Renderer(campaign)
    contact = org_settings().contact[locale]
    wanted = [contact.organisation, contact.name, contact.email, contact.phone]
    wanted += list(contact.postal_address)
    never = "決してございません" if locale == "ja" else "We will never ask you for a password"
    shapes = 0
    for exposure in EXPOSURES:
        data_sets = every_data_set() if exposure != "database_only" else [()]
        for data_held in data_sets:
            volunteer = Volunteer(
                "v1", "a@example.org", "a@example.org", "Doe", "Jo", locale, exposure, data_held
            )
            message = renderer.render(volunteer, reached=True)
            for part in (message.text, visible(message.html)):
                for value in wanted:
                    assert value in part, (exposure, data_held, value)
                assert never in part
            for fmt in ("txt", "html"):
                _whole, blocks = renderer.render_blocks(volunteer, fmt, reached=True)
                for block in ("contact", "signature"):
                    assert contact.organisation in blocks[block]
                    assert contact.name in blocks[block]
                assert contact.email in blocks["contact"]
                assert contact.email in blocks["anti_phishing"]
            shapes += 1
    assert shapes > 30


def test_english_notice_says_where_to_write_in_japanese() -> None:
    campaign = with_contact(load_campaign("2020-03-breach"))
    volunteer = Volunteer("v1", "a@example.org", "a@example.org", "Doe", "Jo", "en", "screened")
    text = Renderer(campaign).render(volunteer).text
    assert "write to us in Japanese, email volunteers-ja@hmr.test." in text


def test_check_refuses_a_campaign_without_a_contact_point(ledger: Ledger) -> None:
    people = [
        Volunteer(f"v{n}", f"p{n}@example.org", f"p{n}@example.org", "Doe", "Jo", "en", e)
        for n, e in enumerate(EXPOSURES)
    ]
    ledger.db.table("volunteers").insert_all([volunteer_to_row(v) for v in people])
    report = check_campaign(ledger, load_campaign("2020-03-breach"))
    contact = [p for p in report.problems if p.kind == "contact"]
    assert [(p.volunteers, p.examples) for p in contact] == [(3, ("v0", "v1", "v2"))]
    assert "[contact]" in contact[0].message
    # The shipped campaign's own From and Reply-To are the example's, refused as well.
    stand_ins = {p.message.split(" is ")[0] for p in report.problems if p.kind == "placeholder"}
    assert stand_ins == {"sender.from", "sender.reply_to.en", "sender.reply_to.ja"}
    configured = apply_overrides(load_campaign("2020-03-breach"), org_settings())
    assert check_campaign(ledger, configured).ok


def test_example_settings_are_obviously_examples() -> None:
    text = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
    contacts = example_settings().contact
    for contact in contacts.values():
        assert contact.email.endswith(("@example.org", "@example.jp"))
        assert "Example Street" in contact.postal_address[0]
        assert contact.phone.startswith("+44 20 7946 0")  # Ofcom's numbers for drama
    assert "[contact.ja]" in text


def test_composed_japanese_message_has_the_japanese_from_name() -> None:
    from datetime import UTC, datetime
    from email import message_from_bytes, policy

    from notifier.compose import compose_message

    campaign = with_contact(load_campaign("2020-03-breach"))
    volunteer = Volunteer("v1", "a@example.jp", "a@example.jp", "伊藤", "花子", "ja", "screened")
    rendered = Renderer(campaign).render(volunteer)
    data = compose_message(rendered, campaign, volunteer, date=datetime(2020, 3, 24, tzinfo=UTC))
    parsed = message_from_bytes(data, policy=policy.default)
    assert str(parsed["From"]) == "HMR データ保護責任者 <dpo@hmr.test>"
    english = Volunteer("v2", "b@example.org", "b@example.org", "Ito", "Hana", "en", "screened")
    data = compose_message(
        Renderer(campaign).render(english),
        campaign,
        english,
        date=datetime(2020, 3, 24, tzinfo=UTC),
    )
    assert "HMR データ" not in str(message_from_bytes(data, policy=policy.default)["From"])


def test_a_from_name_given_in_sender_wins_for_every_locale(tmp_path: Path) -> None:
    """[sender] from with a display name is used as configured, never silently replaced by
    the one made from [contact]; without one, each locale's comes from [contact]."""
    text = ORG_SETTINGS.read_text(encoding="utf-8")
    named = text.replace('from = "dpo@hmr.test"', 'from = "HMR Data Protection <dpo@hmr.test>"')
    assert named != text
    path = tmp_path / "notifier.toml"
    path.write_text(named, encoding="utf-8")
    campaign = apply_overrides(load_campaign("2020-03-breach"), load_settings(path, env={}))
    assert campaign.sender == "HMR Data Protection <dpo@hmr.test>"
    assert campaign.sender_for("en") == campaign.sender_for("ja") == campaign.sender
    # The contact point itself is unchanged: the notice still gives it, per locale.
    assert campaign.contact["ja"].name == "データ保護責任者"
    unnamed = with_contact(load_campaign("2020-03-breach"))
    assert unnamed.sender_for("ja") == "HMR データ保護責任者 <dpo@hmr.test>"
