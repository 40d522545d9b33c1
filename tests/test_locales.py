"""The locale registry: every language described once, and no quiet fallback to English."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from notifier.campaign import TEMPLATES_DIR
from notifier.catalogs import LOCALE_DIR
from notifier.config import Contact
from notifier.errors import UnknownLocale
from notifier.locales import LOCALES, locale_spec
from notifier.render import between_dates, listed, long_date
from notifier.roster import ENCODING_CHOICES
from notifier.volunteer import display_name

CONTACT = Contact("HMR", "Data Protection Officer", "dpo@hmr.test", ("1 Main Road",))


def test_each_locale_is_written_its_own_way() -> None:
    assert display_name("Smith", "Mary", "en") == "Mary Smith"
    assert display_name("鈴木", "一郎", "ja") == "鈴木 一郎"
    assert display_name("", "Mary", "en") == "Mary"
    assert CONTACT.from_name("en") == "Data Protection Officer, HMR"
    assert CONTACT.from_name("ja") == "HMR Data Protection Officer"
    assert long_date(date(2020, 3, 14), "en") == "14 March 2020"
    assert long_date(date(2020, 3, 14), "ja") == "2020年3月14日"
    assert between_dates(date(2020, 3, 21), date(2020, 3, 23), "en") == "21 and 23 March 2020"
    assert between_dates(date(2020, 3, 30), date(2020, 4, 2), "en") == "30 March and 2 April 2020"
    assert (
        between_dates(date(2019, 12, 30), date(2020, 1, 2), "en")
        == "30 December 2019 and 2 January 2020"
    )
    assert listed(["D", "G", "I", "J"], "en", "or") == "D, G, I or J"
    assert locale_spec("ja").text_style.bullet == "・"
    assert "cp932" in ENCODING_CHOICES  # Japanese rosters come from Excel on Windows


@pytest.mark.parametrize(
    "use",
    [
        lambda: display_name("Dupont", "Marie", "fr"),
        lambda: CONTACT.from_name("fr"),
        lambda: long_date(date(2020, 3, 14), "fr"),
        lambda: locale_spec("EN"),
    ],
)
def test_an_unknown_locale_is_refused_not_taken_for_english(use: Callable[[], object]) -> None:
    with pytest.raises(UnknownLocale, match="unknown locale") as raised:
        use()
    assert raised.value.hint is not None and "notifier/locales.py" in raised.value.hint


def test_every_locale_has_templates_and_a_catalog() -> None:
    for locale in LOCALES:
        assert (TEMPLATES_DIR / locale).is_dir(), locale
        if locale != "en":
            assert (LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po").is_file(), locale
