"""The cosignatures witnesses published on NATS (issue 15): collected from ``CBCM_AUDIT``
for ``cbcm audit verify --cosignatures-from-nats``.

The network's own witness publishes on ``cbcm.v1.audit.cosignature``; each agency's witness,
from its own account, on ``cbcm.v1.audit.cosignature.<agency>``, which the services' account
imports into the stream. A message is a C2SP tlog-cosignature: the checkpoint's signed note
with the witness's cosignature line. Nothing here is trusted: ``evidence.gather`` checks the
log's signature and each cosignature against the policy's keys, and ignores what does not
verify (anyone who may publish there could publish junk).
"""

from __future__ import annotations

from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors

from contracts.audit import (
    AGENCY_COSIGNATURE_SUBJECTS,
    AUDIT_STREAM,
    COSIGNATURE_SUBJECT,
    decode_cosignature,
)

MAX_MESSAGES = 100_000
"""At most this many cosignatures are read (a flood is not read to its end)."""


async def published_cosignatures(
    url: str, options: dict[str, Any], js_options: dict[str, Any], origin: str
) -> list[str]:
    """The cosigned notes of the log ``origin`` that ``CBCM_AUDIT`` holds, oldest first
    (one look at the stream, each message by the stream's own next-by-subject look-up)."""
    nc = await nats.connect(url, **options)
    try:
        jsm = nc.jetstream(**js_options)
        notes: list[str] = []
        for subject in (COSIGNATURE_SUBJECT, AGENCY_COSIGNATURE_SUBJECTS):
            sequence = 1
            while len(notes) < MAX_MESSAGES:
                try:
                    msg = await jsm.get_msg(AUDIT_STREAM, sequence, subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                sequence = (msg.seq or sequence) + 1
                try:
                    cosignature = decode_cosignature(msg.data or b"")
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if cosignature.origin == origin:
                    notes.append(cosignature.note)
        return notes
    finally:
        await nc.close()
