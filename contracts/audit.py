"""Signed audit checkpoints: the head of the event log's hash chain, signed by the network.

A checkpoint says "at ``signed_at``, the event store ``store`` ended at ``position`` and the
chain link there was ``link``", signed with the network's Ed25519 checkpoint key. Checkpoints
are published on ``cbcm.v1.audit.checkpoint`` into the JetStream stream ``CBCM_AUDIT``, which
keeps them (no delete, no purge) so that a witness that was offline catches up.

Witnesses (``cbcm audit witness``, run by any agency) keep every checkpoint they see. Two
validly signed checkpoints of the same store and position with different links prove that the
history was rewritten; ``cbcm audit verify`` checks the store against the checkpoints held.

What is signed is :func:`signing_payload`: fixed ASCII lines, so that any implementation can
rebuild the exact bytes from the message's fields. The message carries no personal data.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec

from contracts.schema_documents import struct_schema
from contracts.subjects import AUDIT_CHECKPOINT_SUBJECT

__all__ = [
    "AGENCY_COSIGNATURE_SUBJECTS",
    "AUDIT_STREAM",
    "AUDIT_SUBJECTS",
    "CHECKPOINT_SCHEMA",
    "CHECKPOINT_SUBJECT",
    "COSIGNATURE_SCHEMA",
    "COSIGNATURE_SUBJECT",
    "ERASURE_NOTICE_SCHEMA",
    "ERASURE_NOTICE_SUBJECT",
    "SIGNING_CONTEXT",
    "AuditCheckpointV1",
    "AuditCosignatureV1",
    "AuditErasureNoticeV1",
    "agency_cosignature_subject",
    "checkpoint_json_schema",
    "checkpoint_msg_id",
    "cosignature_json_schema",
    "decode_checkpoint",
    "decode_cosignature",
    "decode_erasure_notice",
    "encode_checkpoint",
    "encode_cosignature",
    "encode_erasure_notice",
    "erasure_notice_json_schema",
    "rfc3339_utc",
    "signing_payload",
]

CHECKPOINT_SUBJECT: Final = AUDIT_CHECKPOINT_SUBJECT
"""The subject checkpoints are published on (fixed by ARCHITECTURE.md)."""

AUDIT_STREAM: Final = "CBCM_AUDIT"
"""The JetStream stream that keeps every checkpoint (file storage, no delete, no purge)."""

AUDIT_SUBJECTS: Final = "cbcm.v1.audit.>"
"""The subjects the ``CBCM_AUDIT`` stream captures."""

CHECKPOINT_SCHEMA: Final = "org.psea.cbcm.audit.checkpoint.v1"
"""The name of a checkpoint's JSON Schema (its ``$id``: ``urn:cbcm:schema:`` and the name)."""

COSIGNATURE_SCHEMA: Final = "org.psea.cbcm.audit.cosignature.v1"
"""The name of a cosignature's JSON Schema."""

ERASURE_NOTICE_SCHEMA: Final = "org.psea.cbcm.audit.erasure_notice.v1"
"""The name of an erasure notice's JSON Schema."""

SIGNING_CONTEXT: Final = b"cbcm.audit.checkpoint.v1"
"""First line of every signed payload: a signature over it means nothing anywhere else."""

STORE_PATTERN: Final = "^[0-9a-f]{16}$"
LINK_PATTERN: Final = "^[0-9a-f]{64}$"
KEY_ID_PATTERN: Final = "^[0-9a-f]{16}$"
SIGNATURE_PATTERN: Final = "^[A-Za-z0-9+/]{86}==$"

_STORE = re.compile(STORE_PATTERN)
_LINK = re.compile(LINK_PATTERN)


class AuditCheckpointV1(msgspec.Struct, frozen=True, kw_only=True):
    """A signed head of the event log's hash chain.

    signature: Ed25519, base64 (standard alphabet, padded), over the lines
    "cbcm.audit.checkpoint.v1", store, position, link and signed_at (RFC 3339 UTC with
    microseconds and "Z") joined by newlines. key_id: the first 16 hex characters of
    SHA-256 over the raw 32-byte public key that signed.
    """

    store: Annotated[
        str,
        msgspec.Meta(
            pattern=STORE_PATTERN,
            description="the event store's id: 16 hex chars (see the relay's Nats-Msg-Id)",
        ),
    ]
    position: Annotated[
        int, msgspec.Meta(ge=1, description="the store position of the last event in the chain")
    ]
    link: Annotated[
        str,
        msgspec.Meta(
            pattern=LINK_PATTERN, description="the chain link at that position, SHA-256 in hex"
        ),
    ]
    signed_at: Annotated[
        datetime, msgspec.Meta(tz=True, description="when the head was signed (RFC 3339)")
    ]
    key_id: Annotated[
        str,
        msgspec.Meta(
            pattern=KEY_ID_PATTERN,
            description="16 hex chars of SHA-256 over the raw Ed25519 public key that signed",
        ),
    ]
    signature: Annotated[
        str,
        msgspec.Meta(
            pattern=SIGNATURE_PATTERN,
            description="base64 of the Ed25519 signature over the signing payload",
        ),
    ]
    note: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=65536,
                description="the same head as a C2SP tlog-checkpoint signed note (issue #15): "
                "the log's origin, its tree size and RFC 6962 root hash, signed by the "
                "network's key named by the origin (c2sp.org/signed-note, Ed25519)",
            ),
        ]
        | None
    ) = None
    proof_from: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                description="the tree size of the log's previous checkpoint, which "
                "`consistency` proves this one extends (0: the first checkpoint of the log)",
            ),
        ]
        | None
    ) = None
    consistency: (
        Annotated[
            list[Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9+/]{43}=$")]],
            msgspec.Meta(
                max_length=128,
                description="RFC 6962 consistency proof from `proof_from` to this tree size, "
                "base64 hashes",
            ),
        ]
        | None
    ) = None


def rfc3339_utc(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with microseconds, e.g. ``2026-03-02T08:00:00.000000Z``.

    Raises ``ValueError`` for a naive datetime (it names no instant).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("signed_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signing_payload(store: str, position: int, link_hex: str, signed_at: datetime) -> bytes:
    """The exact bytes a checkpoint's signature covers::

        cbcm.audit.checkpoint.v1\\n<store>\\n<position>\\n<link hex>\\n<signed_at>

    ``position`` in decimal, ``signed_at`` as :func:`rfc3339_utc`. Fields are checked first
    (``ValueError``), so that no value can smuggle a line break into the payload.
    """
    if not _STORE.fullmatch(store):
        raise ValueError("store must be 16 lowercase hex characters")
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise ValueError("position must be a positive integer")
    if not _LINK.fullmatch(link_hex):
        raise ValueError("link must be 64 lowercase hex characters")
    lines = (SIGNING_CONTEXT.decode(), store, str(position), link_hex, rfc3339_utc(signed_at))
    return "\n".join(lines).encode("ascii")


def checkpoint_msg_id(store: str, position: int, link_hex: str, signature: str = "") -> str:
    """The ``Nats-Msg-Id`` of a checkpoint:
    ``<store>:<position>:<first 16 hex of link>:<first 16 hex of SHA-256 of the signature>``.

    The link is part of the id so that de-duplication never drops a checkpoint that
    contradicts another (same position, another link): that one is exactly what witnesses
    must see. The signature's hash is part of it because nobody can compute it without the
    key: a publisher cannot take a genuine checkpoint's id first and have it dropped.
    """
    signed = hashlib.sha256(signature.encode()).hexdigest()[:16]
    return f"{store}:{position}:{link_hex[:16]}:{signed}"


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(AuditCheckpointV1)


COSIGNATURE_SUBJECT: Final = "cbcm.v1.audit.cosignature"
"""Where the network's own witness publishes its cosignatures (kept by ``CBCM_AUDIT`` too)."""

AGENCY_COSIGNATURE_SUBJECTS: Final = "cbcm.v1.audit.cosignature.>"
"""Where agencies' witnesses publish theirs, one subject each (kept by ``CBCM_AUDIT``)."""


def agency_cosignature_subject(agency: str) -> str:
    """The subject an agency's witness publishes its cosignatures on, from its own NATS
    account (``cbcm.v1.audit.cosignature.<agency>``)."""
    return f"{COSIGNATURE_SUBJECT}.{agency}"


class AuditCosignatureV1(msgspec.Struct, frozen=True, kw_only=True):
    """A witness's cosignature of a checkpoint (issue #15): the checkpoint's signed note with
    the witness's c2sp.org/tlog-cosignature line added."""

    witness: Annotated[str, msgspec.Meta(max_length=200, description="the cosigner's key name")]
    origin: Annotated[str, msgspec.Meta(max_length=200, description="the log's origin")]
    size: Annotated[int, msgspec.Meta(ge=0, description="the tree size cosigned")]
    note: Annotated[
        str,
        msgspec.Meta(
            max_length=65536,
            description="the checkpoint note with the log's signature and the cosignature",
        ),
    ]


ERASURE_NOTICE_SUBJECT: Final = "cbcm.v1.audit.erasure"
"""Where the network's checkpoint publisher tells each erasure it signed over (kept by
``CBCM_AUDIT``), for a host restored without them to learn them back (ADR 23)."""


class AuditErasureNoticeV1(msgspec.Struct, frozen=True, kw_only=True):
    """An erasure the log held, as ids: a host whose database was restored from a copy taken
    before it learns it back (``cbcm audit learn-erasures``). Holds no personal data."""

    store: Annotated[str, msgspec.Meta(max_length=64, description="the store's id")]
    position: Annotated[int, msgspec.Meta(ge=1, description="the erasure event's position")]
    link: Annotated[str, msgspec.Meta(max_length=64, description="its chain link (hex)")]
    record: Annotated[str, msgspec.Meta(max_length=36, description="the record's id")]
    subject: Annotated[str, msgspec.Meta(max_length=64, description="whose data (a role)")]
    through: Annotated[
        int, msgspec.Meta(ge=0, description="every data key generation up to this is erased")
    ]
    mac: Annotated[
        str,
        msgspec.Meta(max_length=64, description="HMAC-SHA256 under the network's writer key"),
    ]


def encode_erasure_notice(notice: AuditErasureNoticeV1) -> bytes:
    return _ENCODER.encode(notice)


def decode_erasure_notice(raw: bytes) -> AuditErasureNoticeV1:
    return msgspec.json.decode(raw, type=AuditErasureNoticeV1)


def encode_cosignature(cosignature: AuditCosignatureV1) -> bytes:
    return _ENCODER.encode(cosignature)


def decode_cosignature(raw: bytes) -> AuditCosignatureV1:
    return msgspec.json.decode(raw, type=AuditCosignatureV1)


def encode_checkpoint(checkpoint: AuditCheckpointV1) -> bytes:
    """The JSON body of a checkpoint message."""
    return _ENCODER.encode(checkpoint)


def decode_checkpoint(raw: bytes) -> AuditCheckpointV1:
    """A checkpoint from its JSON body; ``msgspec.DecodeError`` or ``msgspec.ValidationError``
    if it is not one (the signature is not checked here)."""
    return _DECODER.decode(raw)


def checkpoint_json_schema() -> dict[str, Any]:
    """The published JSON Schema of :class:`AuditCheckpointV1`."""
    return struct_schema(AuditCheckpointV1, CHECKPOINT_SCHEMA)


def cosignature_json_schema() -> dict[str, Any]:
    """The published JSON Schema of :class:`AuditCosignatureV1`."""
    return struct_schema(AuditCosignatureV1, COSIGNATURE_SCHEMA)


def erasure_notice_json_schema() -> dict[str, Any]:
    """The published JSON Schema of :class:`AuditErasureNoticeV1`."""
    return struct_schema(AuditErasureNoticeV1, ERASURE_NOTICE_SCHEMA)
