"""Receipt codes: how an anonymous complainant follows a complaint without giving a name.

A code is a public *locator* (which receipt) and a *secret* (proof of holding it). The store keeps
only the locator and an Argon2id verifier of ``locator:secret``; the verifier carries its own
random salt, so a stolen database does not let anyone test one guess against every receipt at
once, and binding the locator into the hashed text makes a verifier useless under another locator.

Printed as six groups of four symbols, the first two groups being the locator::

    K7QM-2XHA-9PRT-...

The alphabet leaves out the look-alikes 0/O and 1/I. Parsing is tolerant of how people read a code
aloud or type it (any case, spaces, dashes or dots anywhere) but never guesses: a 0, O, 1 or I is
not silently mapped to a symbol, the code is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

ALPHABET: Final = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LOCATOR_LENGTH: Final = 8
SECRET_LENGTH: Final = 16
SECRET_BITS: Final = 80
GROUP_LENGTH: Final = 4

_SYMBOLS: Final = frozenset(ALPHABET)
_SEPARATORS: Final = frozenset(" \t\r\n-.")
# Longest input worth normalising: the printed form plus generous stray separators.
_MAX_INPUT: Final = 128


def _canonical(text: str, length: int) -> bool:
    return len(text) == length and all(symbol in _SYMBOLS for symbol in text)


@dataclass(frozen=True, repr=False)
class ReceiptCode:
    """One receipt code; ``str()`` is the printed form, ``repr()`` never shows the secret."""

    locator: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _canonical(self.locator, LOCATOR_LENGTH):
            raise ValueError(f"a locator is {LOCATOR_LENGTH} symbols of the receipt alphabet")
        if not _canonical(self.secret, SECRET_LENGTH):
            # The message never echoes the value: it may be (nearly) a real secret.
            raise ValueError(f"a secret is {SECRET_LENGTH} symbols of the receipt alphabet")

    def __str__(self) -> str:
        symbols = self.locator + self.secret
        return "-".join(
            symbols[start : start + GROUP_LENGTH] for start in range(0, len(symbols), GROUP_LENGTH)
        )

    def __repr__(self) -> str:
        return f"ReceiptCode(locator={self.locator!r}, secret=<hidden>)"


def _random_symbols(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_receipt_code() -> ReceiptCode:
    """A fresh code: locator and secret both from ``secrets``.

    The locator has 40 bits: the issuer must still refuse (and redraw) a locator already in use.
    """
    return ReceiptCode(_random_symbols(LOCATOR_LENGTH), _random_symbols(SECRET_LENGTH))


def _normalise(text: object) -> str | None:
    """Upper-case symbols without separators, or None if anything else is in the text.

    Non-ASCII input is refused before upper-casing: ``str.upper`` maps some non-ASCII letters to
    ASCII ones (U+017F long s to 'S', the ligature U+FB00 to 'FF'), which must not turn into
    valid symbols.
    """
    if not isinstance(text, str) or len(text) > _MAX_INPUT or not text.isascii():
        return None
    symbols = "".join(char for char in text.upper() if char not in _SEPARATORS)
    if not all(symbol in _SYMBOLS for symbol in symbols):
        return None
    return symbols


def parse_receipt_code(text: str) -> ReceiptCode | None:
    """The code in ``text`` as typed or read aloud, or None if it is not one; never raises."""
    symbols = _normalise(text)
    if symbols is None or len(symbols) != LOCATOR_LENGTH + SECRET_LENGTH:
        return None
    return ReceiptCode(symbols[:LOCATOR_LENGTH], symbols[LOCATOR_LENGTH:])


def parse_locator(text: str) -> str | None:
    """The canonical locator in ``text`` (same tolerance as codes), or None; never raises."""
    symbols = _normalise(text)
    if symbols is None or len(symbols) != LOCATOR_LENGTH:
        return None
    return symbols


def is_locator(text: str) -> bool:
    """Whether ``text`` is a locator once normalised like a code."""
    return parse_locator(text) is not None


class ReceiptHasher:
    """Argon2id verifiers; parameters default to RFC 9106's second recommended (low-memory) profile:
    argon2.profiles.RFC_9106_LOW_MEMORY; tests may pass a cheaper argon2.Parameters.

    Hashing is CPU- and memory-bound (64 MiB per call by default) and blocks: call it off the event
    loop and bound how many run at once.
    """

    def __init__(self, parameters: argon2.Parameters | None = None) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(
            parameters or argon2.profiles.RFC_9106_LOW_MEMORY
        )
        # What an unknown locator is verified against, so that it costs the same as a wrong secret.
        self._dummy = self._hasher.hash(_bound(new_receipt_code()))

    def verifier(self, code: ReceiptCode) -> str:
        """The encoded Argon2id hash of ``locator:secret``, with its own salt and parameters."""
        return self._hasher.hash(_bound(code))

    def verify(self, verifier: str | None, code: ReceiptCode) -> bool:
        """True only if ``code`` is the one ``verifier`` was made from; never raises for a mismatch.

        ``verifier`` is None when the locator is unknown: one hash of the same cost is still done,
        so the time taken does not tell an unknown locator from a wrong secret.
        """
        if verifier is None:
            self._matches(self._dummy, code)
            return False
        return self._matches(verifier, code)

    def _matches(self, verifier: str, code: ReceiptCode) -> bool:
        try:
            return self._hasher.verify(verifier, _bound(code))
        except (VerificationError, InvalidHashError, UnicodeError):
            return False


def _bound(code: ReceiptCode) -> str:
    return f"{code.locator}:{code.secret}"
