"""Retried writes take effect once: a record of each ``Idempotency-Key`` is saved in the same
transaction as what the request recorded.

The record's id is derived from the user and the key, so a retry (or a concurrent duplicate)
finds it without an index, and the database's uniqueness of (id, version) lets only one of two
racing duplicates be saved. The record keeps the answer that was given, so the retry gets the
same answer. A receipt code in that answer is kept only encrypted under a key derived from the
``Idempotency-Key`` itself, which the store never holds: only the client that sent the key can
have the code shown again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from datetime import datetime
from uuid import UUID, uuid5

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import register_topic

from domain.recording import RecordedAggregate

IDEMPOTENCY_NAMESPACE = UUID("c3a1e6d4-54b7-4f7b-a0f2-9d8e7c6b5a41")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{16,128}$")
"""A UUID fits; short keys are refused because they would be guessable."""


def record_id(user: str, key: str) -> UUID:
    """The record of ``key`` sent by ``user`` (another user's same key is another record)."""
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{user}\n{key}")


def fingerprint(method: str, path: str, body: bytes, *, key: str, rid: UUID) -> str:
    """What the request asked for: a retry must ask for exactly the same.

    Keyed by the Idempotency-Key, which the store never holds: a plain hash of the body would
    let anyone with the database confirm a guessed value of an erased personal field."""
    derived = HKDF(
        algorithm=SHA256(), length=32, salt=rid.bytes, info=b"cbcm request fingerprint"
    ).derive(key.encode())
    digest = hmac.new(derived, digestmod=hashlib.sha256)
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _cipher(key: str, rid: UUID) -> AESGCM:
    derived = HKDF(algorithm=SHA256(), length=32, salt=rid.bytes, info=b"cbcm receipt").derive(
        key.encode()
    )
    return AESGCM(derived)


def seal(secret: str, key: str, rid: UUID) -> bytes:
    """``secret`` encrypted under the Idempotency-Key (bound to the record)."""
    nonce = os.urandom(12)
    return nonce + _cipher(key, rid).encrypt(nonce, secret.encode(), rid.bytes)


def unseal(sealed: bytes, key: str, rid: UUID) -> str:
    return _cipher(key, rid).decrypt(sealed[:12], sealed[12:], rid.bytes).decode()


class IdempotentRequest(RecordedAggregate):
    """One write request, identified by its sender and Idempotency-Key, and its answer."""

    class Recorded(Aggregate.Created):
        user: str
        key_fingerprint: str
        request_fingerprint: str
        status_code: int
        answer: str
        sealed_secret: bytes | None

    @staticmethod
    def create_id(user: str, key_fingerprint: str, **_: object) -> UUID:
        return UUID(key_fingerprint)

    @classmethod
    def record(
        cls,
        *,
        user: str,
        key: str,
        request_fingerprint: str,
        status_code: int,
        answer: str,
        sealed_secret: bytes | None,
        at: datetime,
    ) -> IdempotentRequest:
        return cls(
            user=user,
            key_fingerprint=str(record_id(user, key)),
            request_fingerprint=request_fingerprint,
            status_code=status_code,
            answer=answer,
            sealed_secret=sealed_secret,
            timestamp=at,
        )

    @event(Recorded)
    def __init__(
        self,
        *,
        user: str,
        key_fingerprint: str,
        request_fingerprint: str,
        status_code: int,
        answer: str,
        sealed_secret: bytes | None,
        timestamp: datetime,
    ) -> None:
        self.user = user
        self.request_fingerprint = request_fingerprint
        self.status_code = status_code
        self.answer = answer
        self.sealed_secret = sealed_secret


# Stored under services.idempotency until issue 13's re-layout: events recorded before
# it name these topics (their own, and their aggregate's as originator).
register_topic("services.idempotency:IdempotentRequest", IdempotentRequest)
register_topic("services.idempotency:IdempotentRequest.Recorded", IdempotentRequest.Recorded)
