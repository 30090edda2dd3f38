"""The console speaks English and French completely (issue #21): every text of the console's
code and templates (extracted as ``make catalogues`` does) has a French translation, none
fuzzy or stale, placeholders matching, and gettext reads what Babel compiles; every code of
the vocabulary a console form offers has words."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from services.api.console.case import CHOICES
from services.api.console.site import CODE_WORDS, LOCALES_DIR
from services.api.pages.i18n import catalogue_path, compile_catalogue, read_catalogue

ROOT = Path(__file__).parents[2]


def extracted() -> set[str | tuple[str, ...]]:
    with (ROOT / "services" / "api" / "console" / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    return {
        message if isinstance(message, str) else tuple(message)
        for _, _, message, _, _ in extract_from_dir(
            ROOT, method_map, options_map, keywords=keywords
        )
    }


def test_the_console_has_texts_to_translate() -> None:
    texts = extracted()
    assert "Sign out" in texts  # the layout
    assert "Give feedback to the complainant" in texts  # marked in the code with N_
    assert len(texts) > 200


def test_every_text_of_the_console_is_in_french_and_compiles() -> None:
    catalogue = read_catalogue(catalogue_path(LOCALES_DIR, "fr", "console"), "fr", "console")
    entries = {
        (message.id if isinstance(message.id, str) else tuple(message.id)): message
        for message in catalogue
        if message.id
    }
    texts = extracted()
    missing = texts - set(entries)
    assert not missing, f"not in the French catalogue (run make catalogues): {missing}"
    stale = set(entries) - texts
    assert not stale, f"no longer used (run make catalogues): {stale}"
    untranslated = [
        m.id
        for m in entries.values()
        if m.fuzzy or not m.string or (isinstance(m.string, tuple) and not all(m.string))
    ]
    assert not untranslated, f"untranslated or fuzzy: {untranslated}"
    assert not list(catalogue.check()), "placeholders do not match"
    translations = compile_catalogue(catalogue)
    assert translations.gettext("Sign out") == "Se déconnecter"
    for msgid, message in entries.items():
        if isinstance(msgid, str):
            assert translations.gettext(msgid) == message.string


def test_every_code_a_form_offers_has_words() -> None:
    offered = {code for codes in CHOICES.values() for code in codes}
    assert offered - set(CODE_WORDS) == set()
