"""A retried request is recognised by a fingerprint that reveals nothing of its body to whoever
reads the store: it is keyed by the Idempotency-Key, which the store never holds."""

from __future__ import annotations

import hashlib

from services.application.idempotency import fingerprint, record_id

BODY = b'{"alleged_perpetrator": "Driver Jean Dupont"}'
KEY = "6f0e2c1a-9d8b-4c7e-a5f3-1b2d3c4e5f60"


def _plain(body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (b"POST", b"/v1/cases/x/assessment", body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def test_the_same_request_under_the_same_key_has_the_same_fingerprint():
    rid = record_id("fp-1", KEY)
    first = fingerprint("POST", "/v1/cases/x/assessment", BODY, key=KEY, rid=rid)
    again = fingerprint("POST", "/v1/cases/x/assessment", BODY, key=KEY, rid=rid)
    other = fingerprint("POST", "/v1/cases/x/assessment", BODY + b" ", key=KEY, rid=rid)
    assert first == again != other


def test_a_guessed_value_cannot_be_confirmed_from_the_stored_fingerprint():
    # given the fingerprint stored for a body holding a name later erased
    rid = record_id("fp-1", KEY)
    stored = fingerprint("POST", "/v1/cases/x/assessment", BODY, key=KEY, rid=rid)

    # when someone with the database hashes a guess of the body, then it does not match
    assert _plain(BODY) != stored
    # ... nor does the same body under another key
    other_rid = record_id("fp-1", KEY[::-1])
    assert fingerprint("POST", "/v1/cases/x/assessment", BODY, key=KEY[::-1], rid=other_rid) != (
        stored
    )
