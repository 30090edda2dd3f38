"""The relay SIGKILLed while it publishes a backlog, again and again (issue #16, ADR 27).

Its pipeline keeps a window of messages in flight while the next batch is read, and records
its position at most every second: a kill lands between a window's sends and their
acknowledgements, with a read under way and a position recorded well behind the stream. A
backlog is written with no relay running; ``cbcm relay`` is started on it and SIGKILLed
(no clean-up of any kind) each time the stream has grown by a random number of messages,
``KILLS`` times, then started once more and left to finish. The stream must then hold every
published event of the store exactly once, in store order, each linked to the one before
it (``Cbcm-Previous-Position``), and in each subject's own order; the recorded position is
the last published one. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import nats
import nats.js.errors
import pytest

from contracts.catalogue import decode_message
from contracts.subjects import STREAM
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, demo_start, walk_cases
from services.nats.server import EmbeddedNats
from services.relay.relay import APPLICATION_NAME, Relay
from services.settings import Settings
from tests.fault.stack import Service, check_stream_is_store, service_env, wait_until

pytestmark = pytest.mark.fault

EVENTS = 6000
KILLS = 5
SEED = 2026_12_07


async def _in_stream(url: str) -> int:
    nc = await nats.connect(url)
    try:
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


async def _subjects(url: str) -> dict[str, list[int]]:
    """Per subject, the positions of its messages in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        per: dict[str, list[int]] = defaultdict(list)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(STREAM, seq)
            position = decode_message(raw.data or b"").position
            assert isinstance(position, int) and raw.subject is not None
            per[raw.subject].append(position)
        return per
    finally:
        await nc.close()


def test_a_relay_killed_mid_window_again_and_again_loses_and_doubles_nothing(
    store_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    settings = Settings(data_dir=tmp_path / "data", event_store=store_url)
    app = complaint_mechanism(settings)
    start = demo_start()
    build_demo_network(app, start)
    day = 0
    while (app.recorder.max_notification_id() or 0) < EVENTS:
        walk_cases(app, 200, rng, start + timedelta(hours=1, days=day))
        day += 1
    published = [
        n.id
        for n in app.recorder.select_notifications(1, 10_000_000)
        if is_published(app.mapper.to_domain_event(n))
    ]
    server = EmbeddedNats(tmp_path / "nats").start()
    relay = Service(
        "relay",
        ["relay"],
        service_env(
            CBCM_DATA_DIR=str(settings.data_dir),
            CBCM_EVENT_STORE=store_url,
            CBCM_NATS_URL=server.url,
        ),
        tmp_path,
        "relay.resuming",
    )
    try:
        kills: list[int] = []
        for _ in range(KILLS):
            before = asyncio.run(_in_stream(server.url))
            grow = rng.randint(1, max(2, (len(published) - before) // (KILLS + 1)))
            relay.start()
            wait_until(
                lambda: asyncio.run(_in_stream(server.url)) >= before + grow,  # noqa: B023
                120,
                "the relay publishing",
                relay.check_alive,
                interval=0.01,
            )
            relay.kill()
            kills.append(asyncio.run(_in_stream(server.url)))
        # every kill landed while the backlog was being published
        assert all(0 < k < len(published) for k in kills), kills
        relay.start()
        wait_until(
            lambda: asyncio.run(_in_stream(server.url)) >= len(published),
            180,
            "the whole backlog",
            relay.check_alive,
        )
        check_stream_is_store(server.url, published)
        for subject, positions in asyncio.run(_subjects(server.url)).items():
            assert positions == sorted(set(positions)), f"{subject}: out of order or doubled"

        async def recorded() -> int:
            nc = await nats.connect(server.url)
            try:
                reader = Relay(app, nc.jetstream(), tracking_name=APPLICATION_NAME)
                return await reader.recorded_position()
            finally:
                await nc.close()

        wait_until(lambda: asyncio.run(recorded()) == published[-1], 30, "the last position")
        assert relay.terminate() == 0
    finally:
        relay.reap()
        server.stop()
        app.close()
