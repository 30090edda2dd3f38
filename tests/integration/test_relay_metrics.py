"""The relay's Prometheus metrics (issue #12): store head, published position, lag, leader
or standby, publish latency, stalled, read back from prometheus_client's default registry
(what ``cbcm relay`` serves on ``CBCM_METRICS_ADDR``). On SQLite and PostgreSQL, with a real
nats-server."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY

from contracts.subjects import STREAM
from services.application.mechanism import ComplaintMechanism
from services.nats.client import TRANSIENT
from services.nats.server import EmbeddedNats
from services.relay import metrics
from services.relay.leader import leader_lock
from services.relay.relay import APPLICATION_NAME, Relay, ensure_stream, run_relay
from services.settings import Settings
from tests.integration.test_relay import (
    assert_stream_is_the_store,
    stored,
    stream_messages,
    wait_until,
    walk,
)


@pytest.fixture(autouse=True)
def relay_process() -> None:
    """This process runs a relay: its metrics are served (as ``cbcm relay`` does)."""
    metrics.register()


def value(name: str) -> float:
    found = REGISTRY.get_sample_value(name)
    assert found is not None, f"{name} is not registered"
    return found


def head_of(app: ComplaintMechanism) -> float:
    return float(app.recorder.max_notification_id() or 0)


async def test_after_publishing_the_positions_lag_and_latency_are_those_of_the_store(
    app: ComplaintMechanism, nc: NatsClient
) -> None:
    js = nc.jetstream()
    await ensure_stream(js)
    rounds = value("cbcm_relay_publish_seconds_count")

    # given events published by a relay in several windows
    await walk(app, 8, seed=31)
    relay = Relay(app, js, window=50)
    published = await relay.publish_pending()

    # then head and published position are the store's last, the lag nothing
    assert value("cbcm_relay_store_head_position") == head_of(app)
    assert value("cbcm_relay_published_position") == head_of(app)
    assert value("cbcm_relay_lag_positions") == 0
    # and each window's publish round was timed
    windows = -(-published // 50)
    assert value("cbcm_relay_publish_seconds_count") - rounds == windows
    assert value("cbcm_relay_publish_seconds_sum") > 0

    # when more is stored and published by the same relay
    await walk(app, 3, seed=32)
    await relay.publish_pending()

    # then the figures follow
    assert value("cbcm_relay_published_position") == head_of(app)
    assert value("cbcm_relay_store_head_position") == head_of(app)
    assert value("cbcm_relay_lag_positions") == 0
    assert_stream_is_the_store(app, await stream_messages(js))


async def test_a_backlog_the_relay_cannot_publish_shows_as_lag(
    app: ComplaintMechanism, nc: NatsClient
) -> None:
    # given a store with events and a stream that does not exist yet (NATS refuses them)
    await walk(app, 3, seed=33)
    js = nc.jetstream(timeout=1)
    relay = Relay(app, js, publish_timeout=1)

    # when the relay tries to publish
    with pytest.raises(TRANSIENT):
        await relay.publish_pending()

    # then it knows the head, has published nothing, and the lag is the whole log
    assert value("cbcm_relay_store_head_position") == head_of(app)
    assert value("cbcm_relay_published_position") == 0
    assert value("cbcm_relay_lag_positions") == head_of(app)

    # when the stream is there
    await ensure_stream(js)
    await relay.publish_pending()

    # then the lag is gone
    assert value("cbcm_relay_lag_positions") == 0


async def test_a_standby_relay_shows_leader_0_and_the_leader_1(
    app: ComplaintMechanism, settings: Settings, nc: NatsClient, nats_server: EmbeddedNats
) -> None:
    # given another relay holding the store's leader lock
    fast = settings.model_copy(
        update={"relay_leader_poll_seconds": 0.1, "relay_leader_check_seconds": 0.1}
    )
    other = leader_lock(fast, APPLICATION_NAME)
    assert await other.try_acquire()
    await walk(app, 2, seed=34)
    js = nc.jetstream()
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_relay(fast, stop, nats_server.url))
        try:
            # when this relay starts, it stands by
            async def standing_by() -> bool:
                return any(entry["event"] == "relay.standby" for entry in logs)

            await wait_until(standing_by, what="the relay to stand by")

            # then it shows as standby
            assert value("cbcm_relay_leader") == 0

            # when the other lets go
            await other.release()

            # then this one leads, shows it, and publishes
            async def leading() -> bool:
                return value("cbcm_relay_leader") == 1

            await wait_until(leading, what="the relay to lead")
            total = len(stored(app))

            async def published() -> bool:
                return int((await js.stream_info(STREAM)).state.messages) == total

            await wait_until(published, what="the events")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await other.release()

    # and once stopped, it no longer counts as the leader
    assert value("cbcm_relay_leader") == 0
    assert value("cbcm_relay_lag_positions") == 0
