"""Sealed shares (issue #6): what a custody step shares, sealed to the recipient's key, opens
with that key only, and not at all once altered."""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.public import PrivateKey

from contracts.shares import CASE_SHARED, decode_share
from domain.case import Case
from domain.need_to_know import SHARED_FIELDS
from domain.network import Network, ShareKey, share_key_id
from domain.personal_data import ERASED, PersonDetails
from domain.vocabulary import (
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    SharedItem,
    TransferReason,
)
from services.relay.share_keys import (
    ShareCannotBeOpened,
    ShareError,
    ShareNotForThisKey,
    key_id_of,
    open_share,
    public_key_of,
    read_private_key,
    write_private_key,
)
from services.relay.sharing import (
    NOTE,
    ShareContent,
    case_value,
    share_content,
    share_message,
)
from tests.conftest import T0
from tests.unit.conftest import COORDINATOR, FOCAL_POINT, allegation, at

SOURCE = "urn:cbcm:store:0123456789abcdef"


def key_of(private_key: PrivateKey) -> ShareKey:
    return ShareKey(public_key_of(private_key), key_id_of(private_key))


def content(**values: str) -> ShareContent:
    return ShareContent(
        recipient="wfp",
        event="transferred",
        event_type="org.psea.cbcm.case.transferred.v1",
        values=values or {"narrative": "what was said", "survivor.name": "Amina"},
        erased=("survivor.phone",),
    )


def sealed_share(private_key: PrivateKey, case_id: uuid.UUID | None = None, **values: str) -> bytes:
    _, payload = share_message(
        content(**values),
        key_of(private_key),
        case_id=case_id or uuid.uuid4(),
        version=4,
        position=17,
        time=T0,
        source=SOURCE,
    )
    return payload


def with_data(raw: bytes, **changes: Any) -> bytes:
    message = json.loads(raw)
    message["data"].update(changes)
    return json.dumps(message).encode()


# ---------------------------------------------------------------------------------- sealing


def test_a_share_opens_with_the_recipients_key_to_exactly_what_was_sealed() -> None:
    recipient = PrivateKey.generate()
    case_id = uuid.uuid4()
    raw = sealed_share(recipient, case_id)

    opened = open_share(raw, recipient)

    assert opened.values == {"narrative": "what was said", "survivor.name": "Amina"}
    assert opened.erased == ("survivor.phone",)
    assert (opened.case_id, opened.version, opened.recipient, opened.position) == (
        case_id,
        4,
        "wfp",
        17,
    )
    assert opened.event_type == "org.psea.cbcm.case.transferred.v1"
    assert opened.key_id == key_id_of(recipient)


def test_the_envelope_names_fields_and_key_but_carries_no_value_in_clear() -> None:
    recipient = PrivateKey.generate()
    raw = sealed_share(recipient)
    message = decode_share(raw)
    assert message.type == CASE_SHARED
    assert message.data.fields == ("narrative", "survivor.name")
    assert message.data.erased == ("survivor.phone",)
    assert message.data.key_id == share_key_id(bytes(recipient.public_key))
    assert b"what was said" not in raw and b"Amina" not in raw


def test_another_agencys_key_cannot_open_a_share() -> None:
    recipient, other = PrivateKey.generate(), PrivateKey.generate()
    raw = sealed_share(recipient)
    # it says it is sealed to another key
    with pytest.raises(ShareNotForThisKey):
        open_share(raw, other)
    # and claiming it was sealed to the other key does not make it open
    with pytest.raises(ShareCannotBeOpened):
        open_share(with_data(raw, key_id=key_id_of(other)), other)


@pytest.mark.parametrize("where", [0, 31, 32, 47, 48, -1])
def test_an_altered_ciphertext_does_not_open(where: int) -> None:
    # given a share whose sealed box has one bit changed (ephemeral key, tag or ciphertext)
    recipient = PrivateKey.generate()
    raw = sealed_share(recipient)
    sealed = bytearray(base64.b64decode(decode_share(raw).data.sealed))
    sealed[where] ^= 0x01
    altered = with_data(raw, sealed=base64.b64encode(bytes(sealed)).decode())
    # then it does not open
    with pytest.raises(ShareCannotBeOpened):
        open_share(altered, recipient)


def test_a_box_moved_under_another_envelope_does_not_open() -> None:
    # given two shares to the same agency, of two cases
    recipient = PrivateKey.generate()
    first, second = sealed_share(recipient), sealed_share(recipient)
    moved = with_data(first, sealed=decode_share(second).data.sealed)
    # then the second's box under the first's envelope is refused
    with pytest.raises(ShareCannotBeOpened, match="does not belong"):
        open_share(moved, recipient)
    # and so is an envelope that names other fields than the box holds
    with pytest.raises(ShareCannotBeOpened, match="does not belong"):
        open_share(with_data(first, fields=["narrative"]), recipient)


def test_what_is_not_a_share_is_refused_as_such() -> None:
    with pytest.raises(ShareError, match="not a"):
        open_share(b'{"type": "org.psea.cbcm.case.received.v1"}', PrivateKey.generate())
    with pytest.raises(ShareError):
        open_share(b"\x00garbage", PrivateKey.generate())


# ---------------------------------------------------------------------------------- keys


def test_a_private_key_file_is_the_owners_only_and_reads_back(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    path = tmp_path / "agency.key"
    write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert bytes(read_private_key(path)) == bytes(key)
    with pytest.raises(FileExistsError):
        write_private_key(path, PrivateKey.generate())
    assert bytes(read_private_key(path)) == bytes(key)


def test_a_file_without_an_x25519_key_is_refused(tmp_path: Path) -> None:
    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ShareError, match="no X25519 key"):
        read_private_key(ed)
    (tmp_path / "junk").write_text("junk")
    with pytest.raises(ShareError, match="not an unencrypted PEM"):
        read_private_key(tmp_path / "junk")
    with pytest.raises(ShareError, match="cannot read"):
        read_private_key(tmp_path / "missing")


# ---------------------------------------------------------------------------------- content


def assessed(case: Case, network: Network) -> Case:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=allegation(),
        at=at(1),
    )
    return case


def consent_to_disclosure(case: Case, when: float = 2) -> None:
    case.give_consent(
        actor=COORDINATOR,
        kind=ConsentKind.IDENTITY_DISCLOSURE,
        given_by=ConsentGiver.SURVIVOR,
        at=at(when),
    )


def test_every_field_a_custody_step_can_share_is_read_from_the_case(
    case: Case, network: Network
) -> None:
    assessed(case, network)
    paths = {path for fields in SHARED_FIELDS.values() for path in fields}
    values = {path: case_value(case, path) for path in sorted(paths)}
    assert values["narrative"] == "what the survivor said"
    assert values["survivor.name"] == "Amina"
    assert values["allegation.alleged_perpetrator"] == "driver called M."
    with pytest.raises(LookupError):
        case_value(case, "survivor.shoe_size")


def test_a_transfer_shares_its_items_and_note_identity_only_under_consent(
    case: Case, network: Network
) -> None:
    assessed(case, network)
    shared = (SharedItem.NARRATIVE, SharedItem.ALLEGED_PERPETRATOR_DETAILS)

    # without disclosure consent: the narrative (identifying) stays, the perpetrator goes
    case.transfer(
        network,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.ALLEGED_PERPETRATOR_DETAILS,),
        note="call before noon",
        at=at(3),
    )
    first = share_content(case, case.pending_events[-1])
    assert first is not None
    assert first.recipient == "wfp"
    assert first.event == "transferred"
    assert first.values == {
        "allegation.alleged_perpetrator": "driver called M.",
        "allegation.incident_place_detail": "behind the distribution point",
        NOTE: "call before noon",
    }

    # with disclosure consent given later, on to unhcr: the narrative too, and no note
    case.transfer(
        network,
        actor=COORDINATOR,
        to_agency="ngo-a",
        reason=TransferReason.CAPACITY,
        shared=(),
        note=None,
        at=at(4),
    )
    consent_to_disclosure(case, 4.5)
    case.transfer(
        network,
        actor=COORDINATOR,
        to_agency="unhcr",
        reason=TransferReason.CAPACITY,
        shared=shared,
        note=None,
        at=at(5),
    )
    second = share_content(case, case.pending_events[-1])
    assert second is not None and second.recipient == "unhcr"
    assert set(second.values) == {
        "narrative",
        "allegation.alleged_perpetrator",
        "allegation.incident_place_detail",
    }


def test_a_step_that_shares_nothing_personal_has_an_empty_share(
    case: Case, network: Network
) -> None:
    case.transfer(
        network,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        note=None,
        at=at(3),
    )
    shared = share_content(case, case.pending_events[-1])
    assert shared is not None and shared.empty
    assert share_content(case, case.pending_events[0]) is None  # Received shares nothing


def test_an_investigation_referral_shares_with_the_implicated_agency(
    case: Case, network: Network
) -> None:
    assessed(case, network)
    consent_to_disclosure(case)
    case.refer_for_investigation(
        network,
        actor=FOCAL_POINT,
        entity="ngo-a-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
        at=at(3),
    )
    shared = share_content(case, case.pending_events[-1])
    assert shared is not None
    assert (shared.recipient, shared.event) == ("ngo-a", "referred_for_investigation")
    assert shared.values == {"survivor.name": "Amina"}


def test_an_erased_value_is_named_not_sent(case: Case, network: Network) -> None:
    assessed(case, network)
    consent_to_disclosure(case)
    case.transfer(
        network,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.NARRATIVE, SharedItem.CONTACT_DETAILS),
        note=ERASED,
        at=at(3),
    )
    event = case.pending_events[-1]
    # the case as the application returns it once the survivor's data key is destroyed
    case.narrative = ERASED
    case.survivor = replace(case.survivor or PersonDetails(), phone=ERASED)
    shared = share_content(case, event)
    assert shared is not None
    assert shared.values == {}
    assert shared.erased == ("narrative", "survivor.phone", NOTE)
    assert ERASED not in msgspec.json.encode(shared.values).decode()
