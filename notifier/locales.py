"""The languages notices are written in: everything that differs by language, said once.

A notice's locale decides how a person's name is ordered (鈴木 一郎, Mary Smith), how the
From name reads, how dates are written, how the text part is laid out, what a proof sheet
puts where the names go, and which legacy encodings a roster in that language arrives
in (Excel on Japanese Windows writes cp932). Each of those is one field of `LocaleSpec`,
and every module asks `locale_spec(code)`, which refuses a locale it does not know: a
language added to a roster or a campaign without its description here fails loudly,
never quietly as English.

Templates and catalogs are per locale too (notifier/templates/CODE/, locale/CODE/); the
check holds them in step (notifier.check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from notifier.errors import UnknownLocale


@dataclass(frozen=True)
class TextStyle:
    """How the text part of a locale looks."""

    join: str  # between the source lines of a paragraph
    bullet: str  # before each list item
    heading_prefix: str
    underline: str  # repeated under a heading, if any


@dataclass(frozen=True)
class LocaleSpec:
    code: str  # as rosters, campaigns, templates and catalogs name it
    name: str  # for people (a proof sheet's column heading)
    babel: str  # the Babel locale dates are written in
    family_name_first: bool  # the order the person's own convention writes names in
    from_name: str  # the From display name, from the contact point's name and organisation
    text_style: TextStyle
    placeholder_names: tuple[str, str]  # (family, given) where a proof sheet puts names
    # The first line of a test message (notifier.testsend): whose message it stands for.
    test_banner: str
    # Encodings a roster in this language may come in besides UTF-8, tried in order.
    roster_encodings: tuple[str, ...] = ()

    def full_name(self, family_name: str, given_name: str) -> str:
        """The name as the person's own convention writes it."""
        parts = [family_name, given_name] if self.family_name_first else [given_name, family_name]
        return " ".join(p for p in parts if p)


ENGLISH = LocaleSpec(
    code="en",
    name="English",
    # The notices come from a UK organisation: British dates ("14 March 2020").
    babel="en_GB",
    family_name_first=False,
    from_name="{name}, {organisation}",
    text_style=TextStyle(join=" ", bullet="  - ", heading_prefix="", underline="-"),
    placeholder_names=("[Family name]", "[Given name]"),
    test_banner="TEST: the message {volunteer_id} ({name}, {address}) would receive. "
    "Sent to you only: nobody else was sent anything.",
)
JAPANESE = LocaleSpec(
    code="ja",
    name="Japanese (日本語)",
    babel="ja_JP",
    family_name_first=True,
    from_name="{organisation} {name}",
    # Japanese runs source lines together (no spaces between sentences) and marks headings.
    text_style=TextStyle(join="", bullet="・", heading_prefix="■ ", underline=""),
    placeholder_names=("〔姓〕", "〔名〕"),
    test_banner="【テスト送信】{volunteer_id}（{name} 様、{address}）にお送りするお知らせです。"
    "このテストはあなたにだけ送信しており、ほかの方には何も送っていません。",
    # cp932, not shift_jis: Excel writes IBM-extension kanji (髙, 﨑) shift_jis rejects.
    roster_encodings=("cp932",),
)

REGISTRY: Mapping[str, LocaleSpec] = {spec.code: spec for spec in (ENGLISH, JAPANESE)}
LOCALES: tuple[str, ...] = tuple(REGISTRY)
# Every legacy encoding any locale's rosters come in, in locale order.
LEGACY_ENCODINGS: tuple[str, ...] = tuple(
    dict.fromkeys(e for spec in REGISTRY.values() for e in spec.roster_encodings)
)


def locale_spec(code: str) -> LocaleSpec:
    """The description of locale `code`; UnknownLocale when there is none."""
    spec = REGISTRY.get(code)
    if spec is None:
        raise UnknownLocale(
            f"unknown locale {code!r}",
            hint=f"notifier writes notices in {', '.join(LOCALES)}; a new language needs its "
            "description in notifier/locales.py, templates and a catalog",
        )
    return spec
