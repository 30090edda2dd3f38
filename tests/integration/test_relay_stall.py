"""A relay that cannot handle an event stops at it, loudly, once (issue #12, ADR 10).

An event the relay cannot translate, route or seal stays in the log forever: restarting into
it would only repeat the error. The relay publishes and records everything before it, says so
once (``relay.stalled``, the worker's stall record, ``cbcm_relay_stalled``), then waits,
alive, for its stop. Restarted with a fix, it goes on from that position and clears the
record. On SQLite (polling) and on a real PostgreSQL (LISTEN/NOTIFY), with a real nats-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.nats.server import EmbeddedNats
from services.relay.relay import Relay, RelayStalled, ensure_stream, run_relay
from services.relay.translation import to_cloud_event
from services.runtime.worker_status import stall_of, status_dir
from services.settings import Settings
from tests.integration.test_relay import (
    assert_stream_is_the_store,
    stored,
    stream_messages,
    wait_until,
    walk,
)

SECRET = "CANARY-7f3a personal words"
"""What the poisoned translation's error says: it must appear in no log line."""


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stream(context)
    return context


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def published_positions(app: ComplaintMechanism) -> list[int]:
    return [n.id for n in stored(app) if is_published(app.mapper.to_domain_event(n))]


def poison_at(monkeypatch: pytest.MonkeyPatch, position: int) -> None:
    """Make the relay's translation fail on the event at ``position`` (a bug to fix)."""

    def failing(event: Any, *, source: str, position: int) -> Any:
        if position == poison:
            raise ValueError(SECRET)
        return to_cloud_event(event, source=source, position=position)

    poison = position
    monkeypatch.setattr("services.relay.translating.to_cloud_event", failing)


def metric(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def stream_positions(js: JetStreamContext) -> list[int]:
    return [m.position for m in await stream_messages(js)]


async def test_a_relay_stops_at_an_event_it_cannot_handle_says_so_once_and_resumes_after_a_fix(
    app: ComplaintMechanism,
    settings: Settings,
    js: JetStreamContext,
    nats_server: EmbeddedNats,
    reopen: Callable[[], ComplaintMechanism],
    monkeypatch: pytest.MonkeyPatch,
    logs: list[MutableMapping[str, Any]],
) -> None:
    # given a log whose event in the middle the relay cannot translate
    await walk(app, 4, seed=21)
    public = published_positions(app)
    poison = public[len(public) // 2]
    before = [p for p in public if p < poison]
    topic = next(n.topic for n in stored(app) if n.id == poison)
    poison_at(monkeypatch, poison)

    # when the relay process runs
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(settings, stop, nats_server.url))
    try:

        async def stall_recorded() -> bool:
            return stall_of(settings.data_dir, "relay") is not None

        await wait_until(stall_recorded, what="the stall record")

        # then it published everything before the event, and nothing from it on
        assert await stream_positions(js) == before
        assert await Relay(reopen(), js).recorded_position() == before[-1]
        # and its stall record names the position, the stored type and the error's type
        stall = stall_of(settings.data_dir, "relay")
        assert stall is not None
        assert (stall.worker, stall.position, stall.message_type, stall.error) == (
            "relay",
            poison,
            topic,
            "ValueError",
        )
        assert metric("cbcm_relay_stalled") == 1
        assert metric("cbcm_relay_published_position") == poison - 1
        head = float(app.recorder.max_notification_id() or 0)
        assert metric("cbcm_relay_store_head_position") == head
        assert metric("cbcm_relay_lag_positions") == head - (poison - 1)

        # when intake goes on while it is stalled
        await walk(app, 2, seed=22)
        await asyncio.sleep(0.5)  # twenty polls: it must not move, and must not exit

        # then it stays alive, publishes nothing more and says nothing more
        assert not task.done()
        assert await stream_positions(js) == before
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)  # a clean stop, no exception

    stalled = [entry for entry in logs if entry["event"] == "relay.stalled"]
    assert stalled == [
        {
            "event": "relay.stalled",
            "log_level": "error",
            "position": poison,
            "message_type": topic,
            "error": "ValueError",
            "published_position": poison - 1,
        }
    ]
    assert not [entry for entry in logs if entry["event"] in ("relay.failed", "relay.paused")]
    assert SECRET not in repr(logs)

    # when it is restarted without a fix
    written = (status_dir(settings.data_dir) / "relay.json").stat().st_mtime_ns
    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(settings, stop, nats_server.url))
    try:

        async def stalled_again() -> bool:
            return len([e for e in logs if e["event"] == "relay.stalled"]) == 2

        await wait_until(stalled_again, what="the restarted relay to stall")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    # then it stops at the same position, and the record still says since when
    assert stall_of(settings.data_dir, "relay") == stall
    assert (status_dir(settings.data_dir) / "relay.json").stat().st_mtime_ns == written
    assert await stream_positions(js) == before

    # when the fix is deployed and the relay restarted
    monkeypatch.undo()
    observer = Relay(reopen(), js)
    last = int(stored(app)[-1].id)

    async def caught_up() -> bool:
        return await observer.recorded_position() >= last

    stop = asyncio.Event()
    task = asyncio.create_task(run_relay(settings, stop, nats_server.url))
    try:
        await wait_until(caught_up, within=20, what="the relay to catch up")

        async def stall_cleared() -> bool:
            return stall_of(settings.data_dir, "relay") is None

        await wait_until(stall_cleared, what="the stall record to be cleared")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    # then it went on from that position: every event once, in order, nothing skipped
    assert_stream_is_the_store(app, await stream_messages(js))
    assert metric("cbcm_relay_stalled") == 0
    assert [e["position"] for e in logs if e["event"] == "relay.stall_cleared"] == [poison]
    assert len([e for e in logs if e["event"] == "relay.stalled"]) == 2


async def test_a_pass_publishes_and_records_up_to_the_event_and_then_refuses_to_go_on(
    app: ComplaintMechanism,
    js: JetStreamContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a log whose event a third of the way in the relay cannot translate, and a relay
    # reading small batches in small windows
    await walk(app, 6, seed=23)
    public = published_positions(app)
    poison = public[len(public) // 3]
    poison_at(monkeypatch, poison)
    relay = Relay(app, js, data_dir=tmp_path, batch_size=7, window=3)

    # when it makes a pass: the position is recorded up to the event, and it says why it
    # cannot go on (again on a second pass, which publishes nothing more)
    for _ in range(2):
        with pytest.raises(RelayStalled) as stalled:
            await relay.publish_pending()
        assert stalled.value.poison.position == poison
        assert SECRET not in str(stalled.value)
        assert await stream_positions(js) == [p for p in public if p < poison]
        assert await relay.recorded_position() == max(p for p in public if p < poison)
    assert relay.published_position == poison - 1

    # when a relay with the fix makes a pass
    monkeypatch.undo()
    assert await Relay(app, js, data_dir=tmp_path).publish_pending() > 0

    # then the stream is the store
    assert_stream_is_the_store(app, await stream_messages(js))
