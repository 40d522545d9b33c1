"""Babel catalogs: the committed .pot matches the templates, every entry is translated
into Japanese, and catalogs are compiled in memory (no .mo on disk)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

from notifier.campaign import TEMPLATES_DIR
from notifier.catalogs import (
    LOCALE_DIR,
    catalog_problems,
    load_translations,
    po_path,
    read_catalog,
)
from notifier.volunteer import LOCALES

REPO = Path(__file__).resolve().parent.parent


def msgids(path: Path) -> set[str]:
    with path.open("rb") as fp:
        return {m.id for m in read_po(fp) if m.id and isinstance(m.id, str)}


def test_catalogs_pot_is_what_pybabel_extracts_from_the_templates(tmp_path: Path) -> None:
    out = tmp_path / "messages.pot"
    # The documented command, run through Babel's own entry point.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from babel.messages.frontend import main; main()",
            "-q",
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(out),
            ".",
        ],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    extracted = msgids(out)
    assert "What happened" in extracted and "Dear %(name)s," in extracted
    assert extracted == msgids(LOCALE_DIR / "messages.pot"), "run pybabel extract and update"


def test_catalogs_every_locale_has_every_entry_and_japanese_is_translated() -> None:
    template = msgids(LOCALE_DIR / "messages.pot")
    for locale in LOCALES:
        assert msgids(po_path(locale)) == template, locale
    japanese = read_catalog("ja")
    for message in japanese:
        if message.id:
            assert message.string and not message.fuzzy, message.id
    assert catalog_problems("ja", template) == []


def test_catalogs_compiled_in_memory_and_cached() -> None:
    ja = load_translations("ja")
    assert ja.gettext("What happened") == "事案の概要"
    assert ja.gettext("Dear %(name)s,") % {"name": "鈴木 一郎"} == "鈴木 一郎 様"
    assert load_translations("ja") is ja
    # English msgids are the English text.
    assert load_translations("en").gettext("What happened") == "What happened"
    assert not list(LOCALE_DIR.rglob("*.mo"))


def test_catalogs_problems_found_and_recompiled_after_edit(tmp_path: Path) -> None:
    catalogs = tmp_path / "locale"
    shutil.copytree(LOCALE_DIR, catalogs)
    po = po_path("ja", catalogs)
    text = po.read_text(encoding="utf-8")
    text = text.replace('msgid "What happened"', '#, fuzzy\nmsgid "What happened"')
    text = text.replace('msgstr "同意書"', 'msgstr ""')
    po.write_text(text, encoding="utf-8")
    used = {"What happened", "consent forms", "A label nobody translated", "test results"}
    problems = {(p.msgid, p.reason) for p in catalog_problems("ja", used, catalogs)}
    assert problems == {
        ("What happened", "fuzzy"),
        ("consent forms", "untranslated"),
        ("A label nobody translated", "missing"),
    }
    # A fuzzy guess never reaches a reader: the English shows until it is confirmed.
    assert load_translations("ja", catalogs).gettext("What happened") == "What happened"
    assert catalog_problems("en", used, catalogs) == []
    assert (TEMPLATES_DIR / "ja").is_dir()
