"""Personal data shared with one agency, sealed to that agency's public key (issue #6).

When a case is transferred to an agency, or its allegation referred to the implicated
agency's investigating entity, the personal data the recipient may see (what the custody
step shared, identifying items only under the survivor's disclosure consent) travels on
``cbcm.v1.share.<recipient>.case.<event>`` in stream ``CBCM_SHARES``: one message per custody
step, a CloudEvents envelope whose ``data`` is a ``CaseSharedV1``. Only the *names* of the
fields are in clear; their values are in ``sealed``, a libsodium sealed box
(``crypto_box_seal``: X25519, XSalsa20-Poly1305) to the recipient's registered key
(``org.psea.cbcm.network.agency_share_key_registered.v1``), which only the holder of the
private key can open. The box holds the JSON of a ``SharedFieldsV1``, which repeats the
envelope's case, version, event and recipient so that a box cannot be passed off under
another envelope.

A sealed box is anonymous: it proves nothing about who sealed it. That the relay is the only
publisher on ``cbcm.v1.share.>`` is for the NATS account permissions to ensure.

These types are kept apart from ``contracts.catalogue.MESSAGE_TYPES`` (the public forms of
the store's events, which the projectors consume): a share is not an event of the store.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeAlias
from uuid import UUID

import msgspec

from contracts.envelope import CloudEvent, EventData, Version, message_type
from contracts.network import KEY_ID_PATTERN
from contracts.schema_documents import struct_schema
from contracts.vocabulary import DataSubject, ErasureReason

CASE_SHARED: Final = message_type("case", "shared")
"""The CloudEvents ``type`` of a share: ``org.psea.cbcm.case.shared.v1``."""

SHARE_MSG_ID_SUFFIX: Final = ":share"
"""A share's ``Nats-Msg-Id`` is ``<store-id>:<position>:share``, ``<position>`` that of the
custody step it comes from: JetStream keeps one share per position."""

SharingEvent: TypeAlias = Literal[
    "org.psea.cbcm.case.transferred.v1",
    "org.psea.cbcm.case.referred_for_investigation.v1",
]
"""The custody steps that share personal data with another agency."""

SHARING_EVENTS: Final = ("transferred", "referred_for_investigation")
"""The ``<event>`` tokens of the share subjects, one per ``SharingEvent``."""

SEALED_PATTERN: Final = "^[A-Za-z0-9+/]*={0,2}$"

FieldPath = Annotated[
    str,
    msgspec.Meta(
        pattern="^[a-z_]+(\\.[a-z_]+)?$",
        description="a personal field of the case, e.g. 'narrative', 'survivor.phone'; "
        "'note' is the transfer's note",
    ),
]


class CaseSharedV1(EventData, frozen=True, kw_only=True):
    """Personal data of a case shared with ``recipient`` by one custody step, sealed to the
    recipient's registered share key.

    ``fields``: the personal fields whose values are in the sealed box. ``erased``: fields
    the recipient may see whose value was erased (crypto-shredded) before it was shared:
    named, never sent. ``sealed``: standard base64 of libsodium's ``crypto_box_seal`` to the
    X25519 key ``key_id`` names, over the JSON of a ``SharedFieldsV1``.
    """

    case_id: UUID
    version: Annotated[
        int, msgspec.Meta(ge=1, description="the case's version after the custody step")
    ]
    event_type: SharingEvent
    recipient: Annotated[
        str, msgspec.Meta(pattern="^[a-z0-9][a-z0-9_-]{0,31}$", description="agency code")
    ]
    key_id: Annotated[
        str,
        msgspec.Meta(
            pattern=KEY_ID_PATTERN,
            description="16 hex chars of SHA-256 over the raw X25519 key the box is sealed to",
        ),
    ]
    fields: tuple[FieldPath, ...]
    erased: tuple[FieldPath, ...]
    sealed: Annotated[str, msgspec.Meta(pattern=SEALED_PATTERN, min_length=64)]


class SharedFieldsV1(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a share's sealed box holds: the case, version, custody step and recipient of its
    envelope again (an opener refuses a box whose envelope says otherwise), and the values of
    the fields shared, by field path."""

    case_id: UUID
    version: Version
    event_type: SharingEvent
    recipient: str
    values: dict[str, str]


SHARED_FIELDS_SCHEMA: Final = "org.psea.cbcm.case.shared_fields.v1"
"""The name of the JSON Schema of a sealed box's plaintext (``SharedFieldsV1``)."""

CASE_SHARE_WITHDRAWN: Final = message_type("case", "share_withdrawn")
"""The CloudEvents ``type`` of the notice that shares were withdrawn:
``org.psea.cbcm.case.share_withdrawn.v1``."""

WITHDRAWN_EVENT: Final = "share_withdrawn"
"""The ``<event>`` token of a withdrawal notice's subject."""


class CaseShareWithdrawnV1(EventData, frozen=True, kw_only=True):
    """The personal data of ``subjects`` in the case was erased for good: every share of it
    sent to ``recipient`` was deleted from ``CBCM_SHARES``, and the recipient must erase what
    it keeps of those shares too. On ``cbcm.v1.share.<recipient>.case.share_withdrawn.<case>``.
    """

    case_id: UUID
    version: Annotated[int, msgspec.Meta(ge=1, description="the case's version after the erasure")]
    recipient: Annotated[
        str, msgspec.Meta(pattern="^[a-z0-9][a-z0-9_-]{0,31}$", description="agency code")
    ]
    subjects: tuple[DataSubject, ...]
    reason: ErasureReason


SHARE_TYPES: Final[dict[str, type[EventData]]] = {
    CASE_SHARED: CaseSharedV1,
    CASE_SHARE_WITHDRAWN: CaseShareWithdrawnV1,
}
"""CloudEvents ``type`` -> the Struct of its ``data``, for the messages of ``CBCM_SHARES``."""


class NotAShare(ValueError):
    """A message is not a share of these contracts."""


_share_decoder: msgspec.json.Decoder[CloudEvent[CaseSharedV1]] = msgspec.json.Decoder(
    CloudEvent[CaseSharedV1]
)
_fields_decoder = msgspec.json.Decoder(SharedFieldsV1)
_encoder = msgspec.json.Encoder()


def decode_share(raw: bytes) -> CloudEvent[CaseSharedV1]:
    """Decode and validate a share message, or raise ``NotAShare``."""
    try:
        message = _share_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise NotAShare(f"not a {CASE_SHARED} message: {e}") from None
    if message.type != CASE_SHARED:
        raise NotAShare(f"a message of type {message.type!r}, not {CASE_SHARED}")
    return message


_withdrawal_decoder: msgspec.json.Decoder[CloudEvent[CaseShareWithdrawnV1]] = msgspec.json.Decoder(
    CloudEvent[CaseShareWithdrawnV1]
)


def decode_withdrawal(raw: bytes) -> CloudEvent[CaseShareWithdrawnV1]:
    """Decode and validate a withdrawal notice, or raise ``NotAShare``."""
    try:
        message = _withdrawal_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise NotAShare(f"not a {CASE_SHARE_WITHDRAWN} message: {e}") from None
    if message.type != CASE_SHARE_WITHDRAWN:
        raise NotAShare(f"a message of type {message.type!r}, not {CASE_SHARE_WITHDRAWN}")
    return message


def encode_shared_fields(content: SharedFieldsV1) -> bytes:
    """The JSON that is sealed into a share."""
    return _encoder.encode(content)


def decode_shared_fields(raw: bytes) -> SharedFieldsV1:
    """The content of an opened box, or ``NotAShare``."""
    try:
        return _fields_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise NotAShare(f"the sealed content is not a SharedFieldsV1: {e}") from None


def shared_fields_json_schema() -> dict[str, Any]:
    """The published JSON Schema of ``SharedFieldsV1``, the plaintext of a share's sealed box."""
    return struct_schema(SharedFieldsV1, SHARED_FIELDS_SCHEMA)
