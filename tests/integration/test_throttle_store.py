"""Throttles shared by API instances through Redis (issue #16): a limit reached through one
instance holds on another, and the store forgets idle clients by itself.

Uses the Redis at ``CBCM_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``, which this
machine runs) under a key prefix of its own, deleted afterwards. Never skipped: without a
Redis the test fails and says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.application.receipts import ALPHABET
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import cheap_hasher, make_world

REDIS_URL = os.environ.get("CBCM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FORM = {"agency": "unhcr", "narrative": "a worker asked for money for a ration card"}
LOOK_UP = "/v1/public/receipt-lookups"
WINDOW = 600


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"these tests need the Redis at {REDIS_URL} (CBCM_TEST_REDIS_URL): {e}")
    name = f"cbcm-test-{uuid.uuid4().hex}"
    yield name
    for key in client.scan_iter(match=f"{name}:*"):
        client.delete(key)
    client.close()


LIMITS = {
    "public_intake_per_client": 2,
    "public_intake_window_seconds": WINDOW,
    "receipt_failures_per_locator": 2,
    "receipt_failures_per_client": 20,
    "receipt_failure_window_seconds": WINDOW,
}


@pytest.fixture
def two(tmp_path: Path, prefix: str) -> Iterator[tuple[FastAPI, FastAPI]]:
    """Two API instances over one event store, their throttles in the one Redis."""
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    shared = {"throttle_store": REDIS_URL, "throttle_key_prefix": prefix, **LIMITS}
    first = make_world(tmp_path, mechanism, **shared)
    second = create_app(
        Settings(data_dir=tmp_path, **shared), mechanism=mechanism, receipt_hasher=cheap_hasher()
    )
    yield first.api, second
    mechanism.close()


def test_a_limit_reached_through_one_instance_holds_on_the_other(
    two: tuple[FastAPI, FastAPI], prefix: str
) -> None:
    one, other = two
    with TestClient(one) as a, TestClient(other) as b:
        # given a client that sent its 2 web-form complaints through instance A
        assert [a.post("/v1/public/complaints", json=FORM).status_code for _ in range(2)] == [
            201,
            201,
        ]
        # when it turns to instance B; then B refuses it too
        assert b.post("/v1/public/complaints", json=FORM).status_code == 429
    # and a receipt guessed wrong twice (its locator's limit) through B, by one client, cannot
    # be read through A by another, even with the right code
    with (
        TestClient(one, client=("192.0.2.7", 5000)) as a,
        TestClient(other, client=("192.0.2.8", 5000)) as b,
    ):
        receipt = a.post("/v1/public/complaints", json=FORM).json()["receipt_code"]
        wrong = receipt[:-1] + (ALPHABET[0] if receipt[-1] != ALPHABET[0] else ALPHABET[1])
        assert [b.post(LOOK_UP, json={"code": wrong}).status_code for _ in range(2)] == [404, 404]
        assert a.post(LOOK_UP, json={"code": receipt}).status_code == 429
    # and every key the throttles wrote is under the configured prefix and expires by itself
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(match=f"{prefix}:*"))
    assert keys
    assert all(0 < store.ttl(key) <= 2 * WINDOW for key in keys)
    assert not [k for k in keys if receipt.replace("-", "")[8:].encode() in k]
