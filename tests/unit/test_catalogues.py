"""Every language's catalogues are complete and compile (issue #20): each text the pages
show (extracted from the templates and the code, as ``make catalogues`` does) has a
translation in every language, no entry is fuzzy or stale, the placeholders match, and
gettext reads what Babel compiles."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from services.api.pages.i18n import (
    CODES,
    ENGLISH,
    LOCALES_DIR,
    catalogue_path,
    compile_catalogue,
    read_catalogue,
)
from services.api.schemas.public import PublicStatus

ROOT = Path(__file__).parents[2]
TRANSLATED = [code for code in CODES if code != ENGLISH]


def extracted() -> set[str]:
    with (ROOT / "services" / "api" / "pages" / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    return {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(
            ROOT, method_map, options_map, keywords=keywords
        )
    }


def test_the_pages_have_texts_to_translate() -> None:
    texts = extracted()
    assert "Leave this site quickly" in texts  # the layout
    assert "It happened to me" in texts  # marked in the code with N_
    assert len(texts) > 80


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_text_of_the_pages_is_translated_and_compiles(lang: str) -> None:
    catalogue = read_catalogue(catalogue_path(LOCALES_DIR, lang, "messages"), lang, "messages")
    entries = {message.id: message for message in catalogue if message.id}
    missing = extracted() - set(entries)
    assert not missing, f"{lang}: not in the catalogue (run make catalogues): {missing}"
    stale = set(entries) - extracted()
    assert not stale, f"{lang}: no longer used (run make catalogues): {stale}"
    untranslated = [m.id for m in entries.values() if not m.string or m.fuzzy]
    assert not untranslated, f"{lang}: untranslated or fuzzy: {untranslated}"
    assert not list(catalogue.check()), f"{lang}: placeholders do not match"
    translations = compile_catalogue(catalogue)
    for msgid, message in entries.items():
        assert translations.gettext(str(msgid)) == message.string


@pytest.mark.parametrize("lang", CODES)
def test_every_policy_phrase_is_in_every_language(lang: str) -> None:
    english = read_catalogue(catalogue_path(LOCALES_DIR, ENGLISH, "policy"), ENGLISH, "policy")
    codes = {message.id for message in english if message.id}
    assert {f"status.{status}" for status in get_args(PublicStatus)} <= codes
    catalogue = read_catalogue(catalogue_path(LOCALES_DIR, lang, "policy"), lang, "policy")
    entries = {message.id: message for message in catalogue if message.id}
    assert set(entries) == codes
    assert all(m.string and not m.fuzzy for m in entries.values())
    translations = compile_catalogue(catalogue)
    assert all(translations.gettext(str(code)) != code for code in codes)
