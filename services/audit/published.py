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
    AUDIT_STREAM,
    COSIGNATURE_SUBJECT,
    agency_cosignature_subject,
    decode_cosignature,
)

WITNESS_SUFFIX = ".witness.cbcm.invalid"
"""How a witness's cosigner name ends (``services.audit.witness.cosigner_name``)."""


def _subjects(witnesses: list[str]) -> list[str]:
    """Where the named witnesses publish: the network's own subject, and the subject of each
    agency whose witness the policy names."""
    subjects = [COSIGNATURE_SUBJECT]
    for name in witnesses:
        if name.endswith(WITNESS_SUFFIX):
            agency = name.removesuffix(WITNESS_SUFFIX)
            subject = agency_cosignature_subject(agency)
            if agency and "." not in agency and subject not in subjects:
                subjects.append(subject)
    return subjects


async def published_cosignatures(
    url: str,
    options: dict[str, Any],
    js_options: dict[str, Any],
    origin: str,
    witnesses: list[str],
) -> list[str]:
    """The latest cosigned note of the log ``origin`` that ``CBCM_AUDIT`` holds from each of
    the ``witnesses`` (cosigner names) and from the network's own witness: the largest tree
    each vouched for, which is what the policy holds the store to (one look each, however
    long the stream)."""
    nc = await nats.connect(url, **options)
    try:
        jsm = nc.jetstream(**js_options)
        notes: list[str] = []
        for subject in _subjects(witnesses):
            try:
                msg = await jsm.get_last_msg(AUDIT_STREAM, subject)
            except nats.js.errors.NotFoundError:
                continue
            try:
                cosignature = decode_cosignature(msg.data or b"")
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if cosignature.origin == origin:
                notes.append(cosignature.note)
        return notes
    finally:
        await nc.close()
