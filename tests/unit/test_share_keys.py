"""Agencies' share keys in the registry (issue #6): the coordinator registers and replaces
them, every other key or caller is refused with a named error and records nothing."""

from __future__ import annotations

import base64

import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox

from domain.errors import ActionNotPermitted, MalformedShareKey, UnknownAgency
from domain.network import _SMALL_ORDER, Network, ShareKey, share_key_bytes, share_key_id
from tests.unit.conftest import COORDINATOR, FOCAL_POINT, at


def new_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def test_the_coordinator_registers_an_agencys_key_and_may_replace_it(network: Network) -> None:
    # given an agency without a key
    assert network.agency("wfp").share_key is None
    first, second = new_key(), new_key()

    # when the coordinator registers one, then another
    network.register_agency_share_key(actor=COORDINATOR, agency="wfp", public_key=first, at=at(1))
    registered = network.agency("wfp").share_key
    network.register_agency_share_key(actor=COORDINATOR, agency="wfp", public_key=second, at=at(2))

    # then each is recorded with its fingerprint, the last one counts
    events = [e for e in network.pending_events if isinstance(e, Network.AgencyShareKeyRegistered)]
    assert [(e.agency, e.public_key) for e in events] == [("wfp", first), ("wfp", second)]
    assert registered == ShareKey(first, share_key_id(base64.b64decode(first)))
    current = network.agency("wfp").share_key
    assert current is not None and current.public_key == second
    assert len(current.key_id) == 16 and current.key_id != registered.key_id
    # other agencies are untouched
    assert network.agency("unhcr").share_key is None


def test_the_same_key_again_records_nothing(network: Network) -> None:
    key = new_key()
    network.register_agency_share_key(actor=COORDINATOR, agency="wfp", public_key=key, at=at(1))
    before = len(network.pending_events)
    network.register_agency_share_key(actor=COORDINATOR, agency="wfp", public_key=key, at=at(2))
    assert len(network.pending_events) == before


def test_only_the_coordinator_registers_keys_and_only_of_known_agencies(network: Network) -> None:
    before = len(network.pending_events)
    with pytest.raises(ActionNotPermitted):
        network.register_agency_share_key(
            actor=FOCAL_POINT, agency="unhcr", public_key=new_key(), at=at(1)
        )
    with pytest.raises(UnknownAgency):
        network.register_agency_share_key(
            actor=COORDINATOR, agency="ghost", public_key=new_key(), at=at(1)
        )
    assert len(network.pending_events) == before


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _non_canonical(key: str) -> str:
    """The same 32 bytes with a padding bit set: decodes alike, is not the canonical text."""
    last = _ALPHABET[_ALPHABET.index(key[-2]) ^ 1]
    assert base64.b64decode(key[:-2] + last + "=") == base64.b64decode(key)
    return key[:-2] + last + "="


MALFORMED = {
    "not base64": "not a key at all!",
    "empty": "",
    "31 bytes": base64.b64encode(bytes(range(1, 32))).decode(),
    "33 bytes": base64.b64encode(bytes(range(1, 34))).decode(),
    "url-safe alphabet": base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
    "no padding": base64.b64encode(bytes(range(1, 33))).decode().rstrip("="),
    "non-canonical last character": _non_canonical(base64.b64encode(bytes(range(1, 33))).decode()),
    "non-ascii": "é" * 44,
    "spaces around": " " + base64.b64encode(bytes(range(1, 33))).decode(),
}


@pytest.mark.parametrize("key", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_key_is_refused_and_records_nothing(network: Network, key: str) -> None:
    before = len(network.pending_events)
    with pytest.raises(MalformedShareKey) as refused:
        network.register_agency_share_key(actor=COORDINATOR, agency="wfp", public_key=key, at=at(1))
    assert key.strip() == "" or key.strip() not in str(refused.value)
    assert len(network.pending_events) == before


def small_order_encodings() -> list[bytes]:
    return [(u | top).to_bytes(32, "little") for u in sorted(_SMALL_ORDER) for top in (0, 1 << 255)]


@pytest.mark.parametrize("raw", small_order_encodings(), ids=lambda r: r.hex()[:12])
def test_a_point_of_small_order_is_refused_as_libsodium_refuses_it(raw: bytes) -> None:
    # given a key libsodium will not seal to (the list in the domain is that list)
    with pytest.raises(RuntimeError):
        SealedBox(PublicKey(raw)).encrypt(b"x")
    # then the registry refuses it
    with pytest.raises(MalformedShareKey, match="small order"):
        share_key_bytes(base64.b64encode(raw).decode())


def test_a_real_key_is_accepted_and_its_id_is_sha256_of_its_bytes() -> None:
    raw = bytes(PrivateKey.generate().public_key)
    assert share_key_bytes(base64.b64encode(raw).decode()) == raw
    assert share_key_id(bytes(range(32))) == "630dcd2966c43366"
