"""The volunteer: a person on the roster, and the fixed vocabularies that describe them.

This module is the one home of the category lists (exposure categories, kinds of data
held; the locales are described in notifier.locales and named here too); every other
module imports them from here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from notifier import locales

LOCALES: tuple[str, ...] = locales.LOCALES

# What happened to this person's data (see the breach notice of 2020):
#   published      records published by the criminals, 21-23 March
#   screened       attended a screening visit: copies of records may have been stolen
#   database_only  only in the volunteer database: after 29 April confirmed not stolen
EXPOSURES: tuple[str, ...] = ("published", "screened", "database_only")
# Each exposure in words, for the people who read a report (as message states have theirs).
EXPOSURE_WORDS: dict[str, str] = {
    "published": "records published by the criminals",
    "screened": "screened: copies of records may have been stolen",
    "database_only": "only in the volunteer database",
}


def exposure_words(exposure: str) -> str:
    """An exposure in words; an unknown one as it is."""
    return EXPOSURE_WORDS.get(exposure, exposure)


# What the organisation held on the person; the notice mentions only what applies.
DATA_HELD: tuple[str, ...] = (
    "id_documents",
    "photo",
    "health_questionnaire",
    "consent_form",
    "gp_information",
    "test_results",
    "bank_details",
)


def data_held_contradiction(exposure: str, data_held: tuple[str, ...]) -> tuple[str, ...]:
    """The items of `data_held` that cannot be true for this exposure (none: consistent).

    A `database_only` volunteer has never attended a screening visit, so screening
    records in their data_held contradict their exposure: one of the two is wrong, and
    their notice would tell them something untrue either way.
    """
    # Every kind of data held comes from a screening visit: the scanned documents and
    # results collected at screening (and the bank details taken then).
    if exposure != "database_only":
        return ()
    return tuple(item for item in data_held if item in DATA_HELD)


# A roster column giving the family name in Latin letters, as the person's records have it
# (a Japanese volunteer's 山田 is YAMADA on their passport): what a surname rule reads.
LATIN_FAMILY_NAME = "family_name_latin"


def surname_initial(volunteer: Volunteer) -> str | None:
    """The first letter of the volunteer's family name as their records spell it in Latin
    letters (accents dropped: Ó'Brien is O), from `family_name_latin` when the roster
    gives one; None when it cannot be told (a name in kanji with no Latin spelling)."""
    for name in (volunteer.extra.get(LATIN_FAMILY_NAME, ""), volunteer.family_name):
        for char in unicodedata.normalize("NFKD", name):
            if char.isascii() and char.isalpha():
                return char.upper()
            if char.isalpha():
                break  # a letter of another script: this spelling cannot tell
    return None


# Text-direction controls (Unicode bidi: LRM, RLM, ALM, embeddings, overrides, isolates):
# inside a name they can make it display otherwise than it is written.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Scripts that mix in one label of an ordinary Japanese address (例え.jp, メール.jp).
_JAPANESE_MIX = frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"})


def spoofing_risks(volunteer: Volunteer) -> tuple[tuple[str, str, str], ...]:
    """(field, value, reason) for each part of a volunteer that could mislead: a name with
    text-direction controls, an address whose domain (or mailbox) mixes the letters of
    several scripts (a Cyrillic "а" among Latin letters: a look-alike of someone else's
    address). The roster imports such a row with a warning; `notifier check` refuses a
    campaign until it is corrected, so no notice reads wrong or reaches the wrong person.
    """
    risks = []
    for name in ("family_name", "given_name"):
        value = getattr(volunteer, name)
        control = BIDI_CONTROLS.search(value)
        if control:
            risks.append(
                (
                    name,
                    value,
                    f"holds a text-direction control (U+{ord(control.group()):04X}): the name "
                    "can display otherwise than it is written",
                )
            )
    if not volunteer.email.isascii():
        local, _, domain = volunteer.email.rpartition("@")
        for part in (local, *domain.split(".")):
            scripts = _scripts(part)
            if len(scripts) > 1 and not scripts <= _JAPANESE_MIX:
                risks.append(
                    (
                        "email",
                        volunteer.email,
                        f"{part!r} mixes {' and '.join(sorted(s.title() for s in scripts))}"
                        " letters: it may be a look-alike of another address",
                    )
                )
                break
    return tuple(risks)


def _scripts(text: str) -> set[str]:
    """The scripts of the letters in `text`, by the first word of their Unicode names."""
    return {unicodedata.name(c, "?").split(" ", 1)[0] for c in text if c.isalpha()}


# Canonical roster fields, in the order they are shown and exported.
FIELDS: tuple[str, ...] = (
    "volunteer_id",
    "email",
    "family_name",
    "given_name",
    "locale",
    "exposure",
    "data_held",
    "postal_address",
)
REQUIRED_FIELDS: tuple[str, ...] = ("email", "family_name", "exposure")

# The volunteer as text, field by field (after the id): how the ledger stores a volunteer,
# and the form a roster import compares and records changes in. data_held is joined with
# ";" as a roster writes it; the extra columns are JSON with sorted keys.
TEXT_FIELDS: tuple[str, ...] = (
    "email",
    "email_ascii",
    "family_name",
    "given_name",
    "locale",
    "exposure",
    "data_held",
    "postal_address",
    "extra",
)
_EXTRA_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Texts(Protocol):
    """The text of each field by name: a dict, or a row read from SQLite."""

    def __getitem__(self, name: str, /) -> Any: ...


def derive_volunteer_id(normalised_email: str) -> str:
    """A stable id for rosters without one: the same address always gives the same id."""
    digest = hashlib.sha256(normalised_email.casefold().encode("utf-8")).hexdigest()
    return f"v-{digest[:12]}"


def display_name(family_name: str, given_name: str, locale: str) -> str:
    """The name as the person's own convention writes it (Japanese puts the family name
    first, 鈴木 一郎; English the given name, Mary Smith): notifier.locales."""
    return locales.locale_spec(locale).full_name(family_name, given_name)


@dataclass(frozen=True)
class Volunteer:
    volunteer_id: str
    email: str  # normalised, Unicode form
    email_ascii: str  # A-label domain form, for servers without SMTPUTF8
    family_name: str
    given_name: str
    locale: str
    exposure: str
    data_held: tuple[str, ...] = ()
    postal_address: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return display_name(self.family_name, self.given_name, self.locale)

    def texts(self) -> tuple[str, ...]:
        """The TEXT_FIELDS, in order, as text."""
        return self._texts

    # Made once: an import compares a volunteer's texts with the ledger's and then writes
    # them, and encoding the extra columns is the dear part.
    @functools.cached_property
    def _texts(self) -> tuple[str, ...]:
        return (
            self.email,
            self.email_ascii,
            self.family_name,
            self.given_name,
            self.locale,
            self.exposure,
            ";".join(self.data_held),
            self.postal_address,
            _EXTRA_ENCODER.encode(dict(self.extra)) if self.extra else "{}",
        )

    @classmethod
    def from_texts(cls, volunteer_id: str, texts: Texts) -> Volunteer:
        """The volunteer whose TEXT_FIELDS are `texts`; a missing (None) text reads as empty."""
        return cls(
            volunteer_id=volunteer_id,
            email=texts["email"],
            email_ascii=texts["email_ascii"] or texts["email"],
            family_name=texts["family_name"],
            given_name=texts["given_name"] or "",
            locale=texts["locale"],
            exposure=texts["exposure"],
            data_held=tuple(x for x in (texts["data_held"] or "").split(";") if x),
            postal_address=texts["postal_address"] or "",
            extra=json.loads(texts["extra"] or "{}"),
        )

    def as_record(self) -> dict[str, Any]:
        """The canonical fields plus `display_name` and `email_ascii`, as shown to users."""
        return {
            "volunteer_id": self.volunteer_id,
            "email": self.email,
            "family_name": self.family_name,
            "given_name": self.given_name,
            "locale": self.locale,
            "exposure": self.exposure,
            "data_held": ";".join(self.data_held),
            "postal_address": self.postal_address,
            "display_name": self.display_name,
            "email_ascii": self.email_ascii,
        }
