"""Rendering: the right paragraphs for each locale × exposure, only the data held, dates in
the reader's locale, names that never inject markup, errors that name template and line."""

from __future__ import annotations

import re
import shutil
import time
from datetime import date
from pathlib import Path

import pytest
from conftest import with_contact

from notifier.campaign import TEMPLATES_DIR, Campaign, load_campaign
from notifier.catalogs import load_translations
from notifier.errors import TemplateRenderError
from notifier.render import RenderedMessage, Renderer, date_range, long_date
from notifier.volunteer import DATA_HELD, EXPOSURES, LOCALES, Volunteer

FIRST = "2020-03-breach"
UPDATE = "2020-04-29-update"
URL = re.compile(r"https?://|www\.|<a\b|href|mailto:|<img", re.IGNORECASE)

# Phrases only one exposure may read, per campaign and locale.
ONLY = {
    (FIRST, "en"): {
        "published": "your records were among those published",
        "screened": "Your records were not among those published",
        "database_only": "we hold no screening records about you",
    },
    (FIRST, "ja"): {
        "published": "掲載された記録には、鈴木様の記録も含まれておりました",
        "screened": "掲載された記録には含まれておりませんでした",
        "database_only": "受けられたことがないため、掲載された記録の中に鈴木様の記録は",
    },
    (UPDATE, "en"): {
        "published": "it does not change what we told you",
        "screened": "might still have been stolen",
        "database_only": "your data weren’t stolen",
    },
    (UPDATE, "ja"): {
        "published": "掲載された記録に含まれていたことに変わりはございません",
        "screened": "複製が盗み出された可能性が引き続きございます",
        "database_only": "盗み出されていないことが確認できました",
    },
}
# The advice to protect oneself from fraud: for people whose screening records were
# taken, never for database-only people. The update gives it again in short, pointing
# to the first notice for CIFAS's address.
FRAUD_ADVICE = {
    (FIRST, "en"): ["tell your bank", "CIFAS", "Lynton House", "London WC1H 9LT"],
    (FIRST, "ja"): ["お取引のある銀行", "CIFAS", "Lynton House", "London WC1H 9LT"],
    (UPDATE, "en"): ["tell your bank", "CIFAS", "its address is in our earlier notice"],
    (UPDATE, "ja"): ["お取引のある銀行", "CIFAS", "所在地は前回のお知らせに記載"],
}
# Every notice: the contact point, where to write, and what we never ask for.
EVERYONE = {
    "en": [
        "Be aware that calls or emails claiming to be from HMR",
        "reply to this email",
        "Data Protection Officer",
        "1 Research Way",
        "Email: dpo@hmr.test",
        "We will never ask you for a password",
    ],
    "ja": [
        "HMRを名乗る電話やメール",
        "このメールへのご返信でも承ります",
        "HMR データ保護責任者",
        "住所：Volunteer Office, 1 Research Way, London T1 1TT, United Kingdom",
        "メール：volunteers-ja@hmr.test",
        "パスワードやお支払いをお求めすることは決してございません",
    ],
}
MORE_ADVICE = ["Action Fraud", "Police Scotland", "Bank Safe Online", "Financial Ombudsman Service"]
BULLET = {"en": "  - ", "ja": "・"}


def render_message_of(campaign: Campaign, volunteer: Volunteer) -> RenderedMessage:
    """The message, for a follow-up as its readers the earlier notice reached get it."""
    return Renderer(campaign).render(volunteer, reached=True)


def person(
    locale: str,
    exposure: str,
    data_held: tuple[str, ...] = ("id_documents", "test_results"),
    family: str | None = None,
    given: str | None = None,
    n: int = 1,
) -> Volunteer:
    family = family if family is not None else ("鈴木" if locale == "ja" else "Smith")
    given = given if given is not None else ("一郎" if locale == "ja" else "Jo")
    email = f"p{n}@example.com"
    return Volunteer(f"v{n:05d}", email, email, family, given, locale, exposure, data_held)


def visible(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.parametrize("campaign_id", [FIRST, UPDATE])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("exposure", EXPOSURES)
def test_render_paragraphs_per_locale_and_exposure(
    campaign_id: str, locale: str, exposure: str
) -> None:
    campaign = with_contact(load_campaign(campaign_id))
    message = render_message_of(campaign, person(locale, exposure))
    assert message.locale == locale and message.subject == campaign.subject[locale]
    for part in (message.text, visible(message.html)):
        for other, phrase in ONLY[(campaign_id, locale)].items():
            assert (phrase in part) == (other == exposure), (other, phrase)
        for phrase in FRAUD_ADVICE[(campaign_id, locale)]:
            assert (phrase in part) == (exposure != "database_only"), phrase
        for phrase in EVERYONE[locale]:
            assert phrase in part
        # The organisations to ask for advice: everyone in the first notice; in the
        # update, database-only people are told they need do nothing.
        wanted = campaign_id == FIRST or exposure != "database_only"
        for phrase in MORE_ADVICE:
            assert (phrase in part) == wanted, phrase
        assert "volunteers-ja@hmr.test" in part
        assert not URL.search(part)
    assert message.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale}">' in message.html
    assert not URL.search(message.html)


@pytest.mark.parametrize("locale", LOCALES)
def test_render_greeting_and_dates_in_locale_format(locale: str) -> None:
    first = render_message_of(load_campaign(FIRST), person(locale, "published"))
    update = render_message_of(load_campaign(UPDATE), person(locale, "screened"))
    if locale == "en":
        assert first.text.startswith("Dear Jo Smith,\n")
        assert "On 14 March 2020, HMR" in first.text
        assert "Between 21 and 23 March 2020" in first.text
        assert "Update of 29 April 2020" in update.text
        assert "<p>Dear Jo Smith,</p>" in first.html
    else:
        assert first.text.startswith("鈴木 一郎 様\n")
        assert "2020年3月14日、当社は" in first.text
        assert "2020年3月21日～23日にかけて" in first.text
        assert "2020年4月29日までに判明したこと" in update.text
        assert "<p>鈴木 一郎 様</p>" in first.html
        assert "March" not in first.text


def test_render_dates_through_babel() -> None:
    assert long_date(date(2020, 3, 14), "en") == "14 March 2020"
    assert long_date(date(2020, 3, 14), "ja") == "2020年3月14日"
    assert date_range(date(2020, 3, 21), date(2020, 3, 23), "ja") == "2020年3月21日～23日"
    assert (
        date_range(date(2020, 3, 30), date(2020, 4, 2), "en") == "30 March\u2009–\u20092 April 2020"
    )
    assert date_range(date(2020, 3, 21), date(2020, 3, 21), "en") == "21 March 2020"


@pytest.mark.parametrize("campaign_id", [FIRST, UPDATE])
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("exposure", ["published", "screened"])
def test_render_names_only_the_data_held(campaign_id: str, locale: str, exposure: str) -> None:
    translations = load_translations(locale)
    template_labels = {
        "id_documents": "identity documents (scanned passport, National Insurance card, "
        "driving licence and/or visa documents)",
        "photo": "the photograph we took at your screening visit",
        "health_questionnaire": "health questionnaires",
        "consent_form": "consent forms",
        "gp_information": "information from your GP",
        "test_results": "test results",
        "bank_details": "bank details",
    }
    labels = {k: translations.gettext(v) for k, v in template_labels.items()}
    assert set(labels) == set(DATA_HELD)
    renderer = Renderer(with_contact(load_campaign(campaign_id)))
    name_and_birth = BULLET[locale] + translations.gettext("your name and date of birth")
    published_kinds = set(DATA_HELD) - {"bank_details"}
    for kind in DATA_HELD:
        message = renderer.render(person(locale, exposure, (kind,)), reached=True)
        # Bank details held on a published person are said apart from the published
        # records (they were not among those), which are then those the notice of 2020
        # describes.
        listed = published_kinds if (exposure, kind) == ("published", "bank_details") else {kind}
        for other, label in labels.items():
            assert (f"{BULLET[locale]}{label}\n" in message.text) == (other in listed), other
            assert (f"<li>{label}</li>" in message.html) == (other in listed), other
        assert name_and_birth in message.text
        # Positive HIV results were among the published records, and only there.
        hiv = exposure == "published" and "test_results" in listed
        assert ("HIV" in message.text) == hiv
    # Nothing on record: the notice says what the records may have included, never
    # nothing (bank details were not among the published records).
    general = renderer.render(person(locale, exposure, ()), reached=True)
    phrase = "may have included" if locale == "en" else "含まれていた可能性がございます"
    assert phrase in general.text
    assert name_and_birth in general.text
    for kind, label in labels.items():
        expected = kind != "bank_details" or exposure == "screened"
        assert (f"{BULLET[locale]}{label}\n" in general.text) == expected, kind
    assert ("HIV" in general.text) == (exposure == "published")


def test_render_names_never_inject_markup() -> None:
    nasty = Volunteer(
        "v1",
        "p@example.com",
        "p@example.com",
        'O\'Brien "Bob"',
        "<script>alert(1)</script>\r\nBcc: victim@example.com",
        "en",
        "published",
    )
    message = render_message_of(load_campaign(FIRST), nasty)
    assert "<script" not in message.html
    # Escaped in the HTML part; the salutation is formal: what stands beside a name in
    # quotes or brackets ("Bob", (1)) is taken for a nickname and not said.
    assert "&lt;script&gt;alert&lt;/script&gt; Bcc: victim@example.com O&#39;Brien," in message.html
    assert "\r" not in message.text and "\r" not in message.html
    assert message.text.startswith("Dear <script>alert</script> Bcc: victim@example.com O'Brien,\n")
    assert "Bob" not in message.html and "Bob" not in message.text


@pytest.mark.parametrize(
    ("family", "given", "locale", "salutation"),
    [
        ("D'Arcy", 'Margaret "Peggy"', "en", "Dear Margaret D'Arcy,"),
        ("O'Neill", "Robert (Bob)", "en", "Dear Robert O'Neill,"),
        ("Davies", "“Jo”", "en", "Dear “Jo” Davies,"),  # nothing but a nickname: kept
        ("伊藤", "花子（はなちゃん）", "ja", "伊藤 花子 様"),
    ],
)
def test_render_salutation_uses_the_formal_name(
    family: str, given: str, locale: str, salutation: str
) -> None:
    volunteer = person(locale, "published", family=family, given=given)
    message = render_message_of(with_contact(load_campaign(FIRST)), volunteer)
    assert message.text.splitlines()[0] == salutation


def test_render_shapes_keep_each_persons_name() -> None:
    renderer = Renderer(load_campaign(FIRST))
    first = renderer.render(person("ja", "screened", family="田中", given="花子", n=1))
    second = renderer.render(person("ja", "screened", family="佐藤", given="健", n=2))
    assert first.text.startswith("田中 花子 様") and "田中様の記録は" in first.text
    assert second.text.startswith("佐藤 健 様") and "佐藤様の記録は" in second.text
    assert "田中" not in second.text and "田中" not in second.html
    # A name holding the slot delimiters cannot pull another name into the message.
    sly = renderer.render(person("en", "screened", family="\ue0002\ue001", given="X", n=3))
    assert sly.text.startswith("Dear X 2,\n")
    only_family = renderer.render(person("en", "screened", given="", n=4))
    assert only_family.text.startswith("Dear Smith,\n")


def broken_campaign(tmp_path: Path, edit: tuple[str, str, str]) -> Path:
    """A copy of the first notice whose templates have one edit: (file, old, new)."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    file, old, new = edit
    path = templates / file
    source = path.read_text(encoding="utf-8")
    assert old in source
    path.write_text(source.replace(old, new, 1), encoding="utf-8")
    text = (load_campaign(FIRST).path or Path()).read_text(encoding="utf-8")
    text = text.replace('id = "2020-03-breach"', 'id = "broken"\ntemplates_dir = "templates"')
    campaign_file = tmp_path / "broken.toml"
    campaign_file.write_text(text, encoding="utf-8")
    return campaign_file


def test_render_missing_variable_names_template_and_line(tmp_path: Path) -> None:
    old = "{% block what_happened %}\n"
    campaign = load_campaign(
        broken_campaign(tmp_path, ("en/_breach.j2", old, old + "{{ dates.reopened|long_date }}\n"))
    )
    source = (campaign.templates_dir / "en" / "_breach.j2").read_text(encoding="utf-8")
    line = source.splitlines().index("{{ dates.reopened|long_date }}") + 1
    with pytest.raises(TemplateRenderError) as caught:
        Renderer(campaign).render(person("en", "screened"))
    error = caught.value
    assert error.file is not None and error.file.endswith("en/_breach.j2")
    assert error.row == line
    assert "reopened" in error.detail
    assert f"_breach.j2:{line}:" in str(error)
    # The same failure for the next person of that shape names them, not the first.
    with pytest.raises(TemplateRenderError) as again:
        Renderer(campaign).render(person("en", "screened", n=7))
    assert again.value.volunteer_id == "v00007"


def test_render_is_fast_per_message() -> None:
    renderer = Renderer(load_campaign(FIRST))
    kinds = [(), ("id_documents",), ("id_documents", "photo", "test_results"), DATA_HELD]
    people = [
        person(LOCALES[n % 2], EXPOSURES[n % 3], kinds[n % 4], given=f"G{n}", n=n)
        for n in range(5000)
    ]
    start = time.perf_counter()
    for volunteer in people:
        renderer.render(volunteer)
    per_message = (time.perf_counter() - start) / len(people)
    assert per_message < 0.001, f"{per_message * 1e6:.0f} µs per message"
