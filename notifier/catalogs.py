"""Babel catalogs: the short strings of the notices (labels, headings, names of the kinds
of data, greeting formats), translated per locale. Whole paragraphs live in the templates.

The sources are `locale/<locale>/LC_MESSAGES/messages.po` at the repository root. Compiled
catalogs (.mo) are not committed: `load_translations` compiles a .po in memory at first
use and keeps it for the life of the process.

The workflow, from the repository root, after changing a `_("...")` in a template:

    pybabel extract -F babel.cfg --project notifier \
        --copyright-holder "the notifier authors" -o locale/messages.pot .
    pybabel update -i locale/messages.pot -d locale             # .pot -> each .po
    # translate the new or fuzzy entries in locale/ja/LC_MESSAGES/messages.po
    # (English may leave msgstr empty: the msgid is the English text)
    notifier check 2020-03-breach                               # refuses untranslated/fuzzy

For a new locale: `pybabel init -i locale/messages.pot -d locale -l <locale>`.
`pybabel compile -d locale` builds .mo files if a deployment wants them on disk; notifier
itself does not need them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from notifier.errors import CatalogError

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"
# The language the msgids are written in: its catalog may leave msgstr empty.
SOURCE_LOCALE = "en"


@dataclass(frozen=True)
class CatalogEntryProblem:
    """One catalog entry that would show the reader English, or a guess."""

    locale: str
    msgid: str
    reason: str  # "untranslated", "fuzzy" or "missing"
    file: Path
    line: int | None = None


def po_path(locale: str, locale_dir: Path = LOCALE_DIR) -> Path:
    return locale_dir / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalog(locale: str, locale_dir: Path = LOCALE_DIR) -> Catalog:
    """The parsed .po source of one locale (fuzzy entries kept, flagged)."""
    path = po_path(locale, locale_dir)
    return _read_catalog(path, *_stamp(path), locale)


def load_translations(locale: str, locale_dir: Path = LOCALE_DIR) -> Translations:
    """The compiled translations of one locale, built in memory once per process.

    Fuzzy entries are left out (a guess must not reach a reader), so their msgid shows;
    `notifier check` reports them.
    """
    path = po_path(locale, locale_dir)
    return _compile(path, *_stamp(path), locale)


def catalog_problems(
    locale: str, used_msgids: set[str], locale_dir: Path = LOCALE_DIR
) -> list[CatalogEntryProblem]:
    """Entries of `locale` the templates use that are untranslated, fuzzy or absent."""
    if locale == SOURCE_LOCALE:
        return []
    path = po_path(locale, locale_dir)
    catalog = read_catalog(locale, locale_dir)
    problems: list[CatalogEntryProblem] = []
    for msgid in sorted(used_msgids):
        message = catalog.get(msgid)
        line = None
        if message is not None and message.lineno:
            line = message.lineno
        if message is None:
            problems.append(CatalogEntryProblem(locale, msgid, "missing", path))
        elif message.fuzzy:
            problems.append(CatalogEntryProblem(locale, msgid, "fuzzy", path, line))
        elif not message.string:
            problems.append(CatalogEntryProblem(locale, msgid, "untranslated", path, line))
    return problems


def _stamp(path: Path) -> tuple[int, int]:
    """Modification time and size: a changed file is read again, an unchanged one never."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise CatalogError(
            "no catalog for this locale",
            file=path,
            hint="create it with: pybabel init -i locale/messages.pot -d locale -l <locale>",
        ) from exc
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=32)
def _read_catalog(path: Path, _mtime: int, _size: int, locale: str) -> Catalog:
    try:
        with path.open("rb") as fp:
            return read_po(fp, locale=locale, domain=DOMAIN)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read the catalog ({exc})", file=path) from exc


@lru_cache(maxsize=32)
def _compile(path: Path, mtime: int, size: int, locale: str) -> Translations:
    catalog = _read_catalog(path, mtime, size, locale)
    buffer = BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    log.info("compiled %s in memory", path)
    return Translations(fp=buffer, domain=DOMAIN)
