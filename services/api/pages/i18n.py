"""Languages of the pages: gettext catalogues read with Babel, chosen by picker or header.

Two domains per language, under ``locales/<lang>/LC_MESSAGES/``:

- ``messages``: the pages' own texts (English is the source language: its msgids).
- ``policy``: words a network may want in its own voice: the status phrases (msgid
  ``status.<code>``) and feedback templates (``feedback.<name>``). English has a catalogue
  too, since these msgids are codes.

A network overrides any of them with its own ``.po`` file at
``<CBCM_DATA_DIR>/locales/<lang>/<domain>.po``: what it translates wins, the rest falls back
to the shipped catalogue. Catalogues are compiled in memory at start-up (Babel reads the
``.po`` and writes the ``.mo`` into a buffer), so nothing is built beforehand and a broken file
stops the start, not a page.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from babel.core import UnknownLocaleError, negotiate_locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR: Final = Path(__file__).parent / "locales"
DOMAINS: Final = ("messages", "policy")
ENGLISH: Final = "en"


@dataclass(frozen=True)
class Language:
    code: str
    name: str  # in the language itself, as the picker shows it
    rtl: bool = False


LANGUAGES: Final = (
    Language("en", "English"),
    Language("fr", "Français"),
    Language("ar", "العربية", rtl=True),
    Language("es", "Español"),
    Language("pt", "Português"),
    Language("sw", "Kiswahili"),
)
CODES: Final = tuple(language.code for language in LANGUAGES)
BY_CODE: Final = {language.code: language for language in LANGUAGES}


def catalogue_path(root: Path, lang: str, domain: str) -> Path:
    return root / lang / "LC_MESSAGES" / f"{domain}.po"


def read_catalogue(path: Path, lang: str, domain: str) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale=lang, domain=domain)


def compile_catalogue(catalogue: Catalog) -> gettext.GNUTranslations:
    """The catalogue as gettext reads it (fuzzy entries left out, as msgfmt does)."""
    buffer = io.BytesIO()
    write_mo(buffer, catalogue, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


@functools.cache
def _shipped(lang: str, domain: str) -> gettext.NullTranslations:
    """A shipped catalogue, compiled once per process (a network's file only falls back to
    it: gettext's fallback never changes the catalogue fallen back to)."""
    path = catalogue_path(LOCALES_DIR, lang, domain)
    if not path.exists():
        return gettext.NullTranslations()
    return compile_catalogue(read_catalogue(path, lang, domain))


class Catalogues:
    """Every language's translations, the network's overrides in front of the shipped ones."""

    def __init__(self, overrides: Path | None = None) -> None:
        self._translations: dict[tuple[str, str], gettext.NullTranslations] = {}
        for lang in CODES:
            for domain in DOMAINS:
                translations = _shipped(lang, domain)
                own = None if overrides is None else overrides / lang / f"{domain}.po"
                if own is not None and own.exists():
                    network = compile_catalogue(read_catalogue(own, lang, domain))
                    network.add_fallback(translations)
                    translations = network
                self._translations[(lang, domain)] = translations

    def get(self, lang: str, domain: str = "messages") -> gettext.NullTranslations:
        return self._translations[(lang if lang in BY_CODE else ENGLISH, domain)]

    def policy_words(self, lang: str, msgid: str) -> str:
        """A policy phrase in ``lang`` (the network's, else the shipped one, else English)."""
        words = self.get(lang, "policy").gettext(msgid)
        if words == msgid and lang != ENGLISH:
            words = self.get(ENGLISH, "policy").gettext(msgid)
        return words


SHIPPED: Final = Catalogues()
"""The shipped catalogues, without a network's overrides (the JSON API's English words)."""


def status_words(code: str, lang: str, catalogues: Catalogues = SHIPPED) -> str:
    """Where a complaint stands (a public status code), in words for the complainant."""
    return catalogues.policy_words(lang, f"status.{code}")


TEMPLATE_MESSAGE: Final = re.compile(r"^template:([a-z][a-z0-9_]{0,40})$")
"""A feedback message that is only ``template:<name>`` is shown as the policy catalogue's
``feedback.<name>`` in the reader's language."""


def feedback_words(message: str, lang: str, catalogues: Catalogues = SHIPPED) -> str:
    """A feedback message as the complainant reads it: a template in their language, any
    other message as the focal point wrote it."""
    match = TEMPLATE_MESSAGE.match(message.strip())
    if match is None:
        return message
    msgid = f"feedback.{match.group(1)}"
    words = catalogues.policy_words(lang, msgid)
    return message if words == msgid else words


_RANGE: Final = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$|^\*$")


def _preferences(header: str) -> list[str]:
    """The language ranges of an ``Accept-Language`` header, most wanted first."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        name, _, params = part.strip().partition(";")
        name = name.strip()
        if not _RANGE.match(name):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, name))
    return [name for _, _, name in sorted(ranked)]


def negotiate(requested: str | None, accept_language: str | None) -> str:
    """The page's language: the picker's choice if it is one of ours, else the best match
    of ``Accept-Language`` (``fr-CA`` finds ``fr``), else English."""
    if requested in BY_CODE:
        return requested
    preferred = [p for p in _preferences(accept_language or "") if p != "*"]
    try:
        found = negotiate_locale(preferred, list(CODES), sep="-")
    except (UnknownLocaleError, ValueError):
        found = None
    if found is None:
        # negotiate_locale matches whole tags; also try each preferred tag's language alone
        for tag in preferred:
            base = tag.split("-")[0].lower()
            if base in BY_CODE:
                return base
    return found if found in BY_CODE else ENGLISH


def N_(message: str) -> str:  # noqa: N802 - the name gettext tools know
    """Marks a text for the catalogues (Babel extracts it); translated when it is shown."""
    return message
