"""The relay given several NATS servers (issue #7): ``CBCM_NATS_URL=a,b,c`` is the client's
server pool, so a node that is down does not keep the relay from the others."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from contracts.subjects import STREAM
from services.application.mechanism import ComplaintMechanism
from services.nats.server import EmbeddedNats, free_port
from services.relay.relay import run_relay
from services.settings import Settings
from tests.integration.test_relay import assert_stream_is_the_store, stream_messages, walk


async def test_the_relay_publishes_through_whichever_of_its_servers_is_up(
    app: ComplaintMechanism, settings: Settings, tmp_path: Path
) -> None:
    # given a store with events, and two servers of which only the second is up
    await walk(app, 5, seed=11)
    server = EmbeddedNats(tmp_path / "nats")
    await asyncio.to_thread(server.start)
    down = f"nats://127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    nc = await nats.connect(server.url)
    try:
        # when the relay runs with both, the one that is down first
        relay = asyncio.ensure_future(run_relay(settings, stop, f"{down}, {server.url}"))
        js = nc.jetstream()
        stored = len(app.recorder.select_notifications(1, 1_000_000))
        deadline = time.monotonic() + 30
        while True:
            try:
                if (await js.stream_info(STREAM)).state.messages >= stored:
                    break
            except nats.js.errors.NotFoundError:
                pass
            assert time.monotonic() < deadline, "the relay published nothing"
            await asyncio.sleep(0.05)

        # then every event reaches the stream through the server that is up
        assert_stream_is_the_store(app, await stream_messages(js))
        stop.set()
        await asyncio.wait_for(relay, 30)
    finally:
        stop.set()
        await nc.close()
        await asyncio.to_thread(server.stop)
