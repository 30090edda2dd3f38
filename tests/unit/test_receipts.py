"""Receipt codes: what an anonymous complainant is given at intake and types back to follow up."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import argon2
import pytest

from services.application.receipts import (
    ALPHABET,
    SECRET_BITS,
    ReceiptCode,
    ReceiptHasher,
    is_locator,
    new_receipt_code,
    parse_locator,
    parse_receipt_code,
)
from tests.api_world import CHEAP_ARGON2

CODE = ReceiptCode("K7QM2XHA", "9PRTBCDEFGHJKLMN")
PRINTED = "K7QM-2XHA-9PRT-BCDE-FGHJ-KLMN"


@pytest.fixture(scope="module")
def hasher() -> ReceiptHasher:
    return ReceiptHasher(CHEAP_ARGON2)


# --- printed form and parsing -------------------------------------------------------------------


def test_a_code_prints_as_six_groups_of_four_with_the_locator_first() -> None:
    # given a code; when it is printed; then it reads as six dash-separated groups, locator first
    assert str(CODE) == PRINTED
    code = new_receipt_code()
    assert re.fullmatch(rf"[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{5}}", str(code))
    assert str(code).replace("-", "").startswith(code.locator)


@pytest.mark.parametrize(
    "typed",
    [
        PRINTED,
        PRINTED.lower(),
        PRINTED.replace("-", " "),
        PRINTED.lower().replace("-", " "),
        "k7qm2xha9prtbcdefghjklmn",
        "  K7QM.2XHA.9PRT.BCDE.FGHJ.KLMN\n",
        "K7 QM-2X HA 9PRT--BCDE FGHJ KLMN",
    ],
)
def test_a_code_parses_back_however_it_was_typed(typed: str) -> None:
    # given the printed code as a complainant might type or read it; when parsed; then same code
    assert parse_receipt_code(typed) == CODE


def test_every_new_code_parses_back_from_its_printed_form() -> None:
    for _ in range(50):
        code = new_receipt_code()
        assert parse_receipt_code(str(code)) == code
        assert parse_receipt_code(str(code).lower().replace("-", " ")) == code


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "   ",
        "----",
        PRINTED[:-1],  # one symbol short
        PRINTED + "2",  # one symbol too many
        PRINTED + "-2345",  # a group too many
        "K7QM-2XHA",  # a locator alone is not a code
        PRINTED.replace("K7QM", "K7QO"),  # O is not in the alphabet, and is not guessed
        PRINTED.replace("K7QM", "K7Q0"),  # nor 0
        PRINTED.replace("K7QM", "K7QI"),  # nor I
        PRINTED.replace("K7QM", "K7Q1"),  # nor 1
        PRINTED.replace("K7QM", "k7qi"),  # nor a lower-case i
        PRINTED.replace("-", "_"),  # not a separator
        PRINTED.replace("-", "/"),
        PRINTED.replace("K", "\u212a"),  # KELVIN SIGN, a look-alike of K
        "\u017f" + PRINTED[1:],  # LATIN SMALL LETTER LONG S, which upper-cases to an ASCII S
        "K7QM-2XHA-9PRT-BCDE-FGHJ-KLMN".replace("M", "\uff2d"),  # FULLWIDTH M
        "\ufb00" * 12,  # LATIN SMALL LIGATURE FF, which upper-cases to "FF"
        "K7QM-2XHA-9PRT-BCDE-FGHJ-KLMN\x00",
        "2" * 10_000,
    ],
)
def test_a_malformed_code_is_refused_without_raising(typed: str) -> None:
    # given text that is not exactly one code; when parsed; then None, never an exception
    assert parse_receipt_code(typed) is None


def test_parsing_never_raises_on_something_that_is_not_text() -> None:
    assert parse_receipt_code(None) is None  # type: ignore[arg-type]
    assert parse_receipt_code(b"K7QM2XHA9PRTBCDEFGHJKLMN") is None  # type: ignore[arg-type]


def test_a_locator_is_recognised_with_the_same_tolerance() -> None:
    # given a locator as typed; then it is one, and normalises to the code's locator
    assert is_locator("K7QM-2XHA")
    assert is_locator("k7qm 2xha")
    assert parse_locator("k7qm.2xha") == CODE.locator
    # given anything else; then it is not
    for text in ["", "K7QM-2XH", "K7QM-2XHA-9", "K7QO-2XHA", "K7Q1-2XHA", PRINTED, "\u017f" * 8]:
        assert not is_locator(text)
        assert parse_locator(text) is None


@pytest.mark.parametrize(
    ("locator", "secret"),
    [
        ("K7QM2XH", "9PRTBCDEFGHJKLMN"),
        ("K7QM2XHA", "9PRTBCDEFGHJKLM"),
        ("K7QM-2XH", "9PRTBCDEFGHJKLMN"),
        ("k7qm2xha", "9PRTBCDEFGHJKLMN"),
        ("K7QM2XHA", "0PRTBCDEFGHJKLMN"),
    ],
)
def test_a_code_holds_only_canonical_symbols(locator: str, secret: str) -> None:
    with pytest.raises(ValueError) as raised:
        ReceiptCode(locator, secret)
    assert secret not in str(raised.value)


# --- entropy ------------------------------------------------------------------------------------


def test_the_secret_has_80_bits() -> None:
    # given the alphabet of 32 distinct symbols without look-alikes
    assert len(set(ALPHABET)) == len(ALPHABET) == 32
    assert not set("01IO") & set(ALPHABET)
    # then 16 of them carry 80 bits
    code = new_receipt_code()
    assert len(code.secret) == 16
    assert len(code.locator) == 8
    assert len(code.secret) * math.log2(len(ALPHABET)) == SECRET_BITS == 80


def test_new_codes_are_distinct_and_draw_on_the_whole_alphabet() -> None:
    # when 1000 codes are made
    codes = [new_receipt_code() for _ in range(1000)]
    # then no two share a secret or a locator
    assert len({code.secret for code in codes}) == 1000
    assert len({code.locator for code in codes}) == 1000
    # and every symbol appears in the secrets and in the locators (missing one by chance: ~1e-109)
    assert set("".join(code.secret for code in codes)) == set(ALPHABET)
    assert set("".join(code.locator for code in codes)) == set(ALPHABET)


def test_repr_never_shows_the_secret() -> None:
    code = new_receipt_code()
    for shown in (repr(code), f"{code!r}", repr([code]), repr({"receipt": code})):
        assert code.secret not in shown
        assert code.locator in shown
    assert repr(code) == f"ReceiptCode(locator='{code.locator}', secret=<hidden>)"


# --- verifiers ----------------------------------------------------------------------------------


def test_the_right_code_verifies(hasher: ReceiptHasher) -> None:
    code = new_receipt_code()
    verifier = hasher.verifier(code)
    assert hasher.verify(verifier, code) is True
    # and so does the same code typed back by the complainant
    typed = parse_receipt_code(str(code).lower().replace("-", " "))
    assert typed is not None
    assert hasher.verify(verifier, typed) is True


def test_a_wrong_secret_does_not_verify(hasher: ReceiptHasher) -> None:
    code = new_receipt_code()
    verifier = hasher.verifier(code)
    last = code.secret[-1]
    one_off = ReceiptCode(code.locator, code.secret[:-1] + ("2" if last != "2" else "3"))
    assert hasher.verify(verifier, one_off) is False
    assert hasher.verify(verifier, ReceiptCode(code.locator, new_receipt_code().secret)) is False


def test_a_verifier_moved_to_another_locator_does_not_verify(hasher: ReceiptHasher) -> None:
    # given a receipt's verifier, copied onto another locator with the same secret
    code = new_receipt_code()
    verifier = hasher.verifier(code)
    moved = ReceiptCode(new_receipt_code().locator, code.secret)
    assert moved.locator != code.locator
    # then the secret alone does not open it there
    assert hasher.verify(verifier, moved) is False


def test_each_receipt_has_its_own_salt(hasher: ReceiptHasher) -> None:
    # given two receipts that happen to share a secret (and even one code hashed twice)
    secret = new_receipt_code().secret
    first = ReceiptCode("22222222", secret)
    second = ReceiptCode("33333333", secret)
    # then their verifiers differ, in salt as well as in hash
    verifiers = [hasher.verifier(first), hasher.verifier(second), hasher.verifier(first)]
    assert len(set(verifiers)) == 3
    salts = {verifier.split("$")[4] for verifier in verifiers}
    assert len(salts) == 3


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not a verifier",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=8,t=1,p=1$!!!$!!!",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$\u00e9\u00e9$\u00e9\u00e9",
        "$2b$12$abcdefghijklmnopqrstuu5s1JwzEYjAbPhZkHnFNYCsz9sC0mGTq",  # bcrypt
    ],
)
def test_a_malformed_verifier_never_verifies_and_never_raises(
    hasher: ReceiptHasher, malformed: str
) -> None:
    assert hasher.verify(malformed, new_receipt_code()) is False


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every encoded hash PasswordHasher.verify is asked to check (each call is one Argon2 hash)."""
    calls: list[str] = []
    original = argon2.PasswordHasher.verify

    def counting(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        calls.append(hash if isinstance(hash, str) else hash.decode())
        return original(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting)
    yield calls


def test_an_unknown_locator_costs_one_hash_like_a_wrong_secret(
    hasher: ReceiptHasher, verify_calls: list[str]
) -> None:
    code = new_receipt_code()
    verifier = hasher.verifier(code)
    wrong = ReceiptCode(code.locator, new_receipt_code().secret)
    # when a wrong secret is checked against a stored verifier
    assert hasher.verify(verifier, wrong) is False
    # and when a code is checked for a locator that has no verifier at all
    assert hasher.verify(None, code) is False
    # then both did exactly one Argon2 verification, with the same parameters
    assert len(verify_calls) == 2
    assert verify_calls[0] == verifier
    assert argon2.extract_parameters(verify_calls[1]) == argon2.extract_parameters(verifier)


def test_default_parameters_are_rfc_9106_low_memory_argon2id() -> None:
    # given a hasher with the default parameters
    hasher = ReceiptHasher()
    code = new_receipt_code()
    # when a verifier is made
    verifier = hasher.verifier(code)
    # then it is Argon2id with RFC 9106's low-memory profile: 64 MiB, 3 passes, 4 lanes
    assert verifier.startswith("$argon2id$")
    parameters = argon2.extract_parameters(verifier)
    assert parameters.type is argon2.Type.ID
    assert parameters.memory_cost >= 64 * 1024  # KiB
    assert parameters == argon2.profiles.RFC_9106_LOW_MEMORY
    assert hasher.verify(verifier, code) is True
