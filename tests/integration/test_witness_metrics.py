"""Metrics of the checkpoint publisher and the witness (issue #12), read from prometheus_client's
default registry as a scrape would: the age and position of the last checkpoint, checkpoints
held, contradictions seen. Real nats-server, a SQLite store."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from contracts.audit import CHECKPOINT_SUBJECT
from services.audit.checkpoints import (
    CheckpointPublisher,
    TreeHead,
    ensure_audit_stream,
    publish_checkpoint,
    sign_checkpoint,
)
from services.audit.metrics import CheckpointMetrics, checkpoint_metrics
from services.audit.witness import Witness, WitnessBook
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network
from services.event_store.chain import ChainRow
from services.nats.server import EmbeddedNats
from services.settings import Settings

START = datetime(2025, 9, 1, tzinfo=UTC)


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    assert found is not None, f"{name} is not registered"
    return found


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    server = EmbeddedNats(tmp_path / "nats")
    await asyncio.to_thread(server.start)
    client = await nats.connect(server.url)
    try:
        context = client.jetstream()
        await ensure_audit_stream(context)
        yield context
    finally:
        await client.close()
        await asyncio.to_thread(server.stop)


ORIGIN = "cbcm.test/log/metrics"


async def test_publisher_and_witness_metrics_follow_checkpoints_and_contradictions(
    tmp_path: Path, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CBCM_AUDIT_LOG_ORIGIN", ORIGIN)
    key = Ed25519PrivateKey.generate()
    app = complaint_mechanism(Settings(data_dir=tmp_path / "data"))
    book = WitnessBook.open(tmp_path / "witness" / "checkpoints.sqlite3")
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(build_demo_network, app, START)
        publisher = CheckpointPublisher(app, js, key)
        published = value("cbcm_checkpoint_published_total")
        before = time.time()
        honest = await publisher.publish_head()
        assert honest is not None

        # the publisher: one more published, its position, its signing time, and an age
        # computed at scrape time
        assert value("cbcm_checkpoint_published_total") == published + 1
        assert value("cbcm_checkpoint_position") == honest.position
        assert value("cbcm_checkpoint_head_position") == honest.position
        assert value("cbcm_checkpoint_last_signed_timestamp_seconds") >= math.floor(before)
        age = value("cbcm_checkpoint_age_seconds")
        assert 0 <= age < 60
        await asyncio.sleep(0.3)
        assert value("cbcm_checkpoint_age_seconds") > age  # it grows between scrapes

        # the witness: the honest checkpoint held, then a validly signed contradiction seen
        witness = Witness(book, js, key.public_key(), fetch_timeout=0.2)
        contradictions = value("cbcm_witness_contradictions_seen_total", kind="link")
        task = asyncio.create_task(witness.run(stop))
        await until(lambda: witness.recorded == 1, "the honest checkpoint")
        assert value("cbcm_witness_checkpoints_held") == 1
        assert value("cbcm_witness_contradictions_held") == 0
        other = ChainRow(honest.position, honest.position - 1, b"\x01" * 32)
        # another root for the tree size held (issue #15: the tree's contradiction)
        forked = TreeHead(ORIGIN, honest.position, b"\x01" * 32, 0, ())
        assert await publish_checkpoint(
            js, sign_checkpoint(key, honest.store, other, START, forked)
        )
        await js.publish(CHECKPOINT_SUBJECT, b"not a checkpoint")
        await until(lambda: witness.contradictions == 1 and witness.refused == 1, "the alarm")
        assert value("cbcm_witness_checkpoints_held") == 1
        assert value("cbcm_witness_contradictions_held") == 1
        assert value("cbcm_witness_contradictions_seen_total", kind="link") == contradictions + 1
        assert value("cbcm_witness_refused_total") >= 1
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stop.set()
        book.close()
        app.close()


def test_no_checkpoint_yet_has_no_age() -> None:
    metrics = checkpoint_metrics()
    fresh = CheckpointMetrics(
        published=metrics.published,
        position=metrics.position,
        head=metrics.head,
        signed_at=metrics.signed_at,
    )
    assert math.isnan(fresh.age())
