"""What the organisation itself states in its notices: `[organisation]` in notifier.toml.

A breach notice tells people facts only the organisation can vouch for: what its
volunteer database holds, what it will never ask for, how to check a message really is
from it, whether it will write again. None of that is in the account of the breach the
templates are written from, so none of it is written into the templates: each fact is a
setting the organisation fills in, the proof sheet shows it as the organisation's own
statement, and a notice says it only when it is set (never an invented default).

    [organisation]
    database_holds = ["name", "contact_details"]     # what the volunteer database holds
    never_asks_for = ["password", "payment"]         # by e-mail or phone, ever
    never_sends = ["attachment"]                     # what its e-mails never carry
    promises_update = true        # the first notice promises to write again
    independent_check.en = "the phone number on the consent form you signed"
    independent_check.ja = "同意書に記載の電話番号"

    [organisation.advice]         # contact lines for the advice bodies a notice names
    action_fraud = "0300 123 2040"

Lists take words from fixed vocabularies (below), so every language says the same thing
(each word's wording is in the templates' catalogs); free text is given per locale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifier.errors import ConfigError
from notifier.locales import LOCALES

# What the volunteer database may hold on everyone, screened or not.
DATABASE_FACTS: tuple[str, ...] = (
    "name",
    "date_of_birth",
    "contact_details",
    "postal_address",
    "studies",
)
# What the organisation may say it never asks for, by e-mail or phone.
NEVER_ASKS_FOR: tuple[str, ...] = ("password", "pin", "card_details", "bank_details", "payment")
# What the organisation may say its e-mails never carry.
NEVER_SENDS: tuple[str, ...] = ("link", "attachment")
# The advice bodies the notices name (the 2020 notice's), whose contact lines may be set.
ADVICE_BODIES: tuple[str, ...] = (
    "action_fraud",
    "police_scotland",
    "cifas",
    "bank_safe_online",
    "financial_ombudsman",
)

_KEYS = (
    "database_holds",
    "never_asks_for",
    "never_sends",
    "promises_update",
    "independent_check",
    "advice",
)


@dataclass(frozen=True)
class Organisation:
    """The organisation's own statements. Empty: the notice states none of them."""

    database_holds: tuple[str, ...] = ()
    never_asks_for: tuple[str, ...] = ()
    never_sends: tuple[str, ...] = ()
    promises_update: bool = False
    independent_check: Mapping[str, str] = field(default_factory=dict)  # locale -> text
    advice: Mapping[str, str] = field(default_factory=dict)  # advice body -> contact line

    def statements(self) -> list[tuple[str, str]]:
        """(setting, value) of every statement that is set, for the proof sheet."""
        shown: list[tuple[str, str]] = []
        for name in ("database_holds", "never_asks_for", "never_sends"):
            values: tuple[str, ...] = getattr(self, name)
            if values:
                shown.append((name, ", ".join(values)))
        if self.promises_update:
            shown.append(("promises_update", "yes: the first notice says it will write again"))
        shown.extend((f"independent_check.{k}", v) for k, v in self.independent_check.items())
        shown.extend((f"advice.{k}", v) for k, v in self.advice.items())
        return shown

    def as_settings(self) -> dict[str, Any]:
        """Plain data, for the approval's hash of what messages are made from."""
        return {
            "database_holds": list(self.database_holds),
            "never_asks_for": list(self.never_asks_for),
            "never_sends": list(self.never_sends),
            "promises_update": self.promises_update,
            "independent_check": dict(sorted(self.independent_check.items())),
            "advice": dict(sorted(self.advice.items())),
        }


def load_organisation(data: Mapping[str, Any], path: Path) -> Organisation:
    """[organisation] of a settings file (an empty Organisation when there is none)."""
    table = data.get("organisation", {})
    if not isinstance(table, dict):
        raise ConfigError("expected an [organisation] table", file=path, field="organisation")
    for key in table:
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key {key!r}",
                file=path,
                field=f"organisation.{key}",
                hint=f"[organisation] has {', '.join(_KEYS)}",
            )
    promises = table.get("promises_update", False)
    if not isinstance(promises, bool):
        raise ConfigError(
            f"expected true or false, got {promises!r}",
            file=path,
            field="organisation.promises_update",
        )
    return Organisation(
        database_holds=_words(table, "database_holds", DATABASE_FACTS, path),
        never_asks_for=_words(table, "never_asks_for", NEVER_ASKS_FOR, path),
        never_sends=_words(table, "never_sends", NEVER_SENDS, path),
        promises_update=promises,
        independent_check=_texts(table, "independent_check", LOCALES, path),
        advice=_texts(table, "advice", ADVICE_BODIES, path),
    )


def _words(
    table: Mapping[str, Any], key: str, vocabulary: tuple[str, ...], path: Path
) -> tuple[str, ...]:
    value = table.get(key, [])
    where = f"organisation.{key}"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"expected a list of words, got {value!r}",
            file=path,
            field=where,
            hint=f"any of: {', '.join(vocabulary)}",
        )
    for word in value:
        if word not in vocabulary:
            raise ConfigError(
                f"unknown word {word!r}",
                file=path,
                field=where,
                hint=f"any of: {', '.join(vocabulary)}",
            )
    return tuple(dict.fromkeys(value))


def _texts(
    table: Mapping[str, Any], key: str, names: tuple[str, ...], path: Path
) -> dict[str, str]:
    value = table.get(key, {})
    where = f"organisation.{key}"
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table of {' / '.join(names)} = text", file=path, field=where)
    texts: dict[str, str] = {}
    for name, text in value.items():
        if name not in names:
            raise ConfigError(
                f"unknown key {name!r}",
                file=path,
                field=f"{where}.{name}",
                hint=f"any of: {', '.join(names)}",
            )
        if not isinstance(text, str) or not text.strip() or "\n" in text.strip():
            raise ConfigError(
                f"expected a one-line, non-empty string, got {text!r}",
                file=path,
                field=f"{where}.{name}",
            )
        texts[name] = " ".join(text.split())
    return texts
