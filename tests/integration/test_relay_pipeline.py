"""The relay's pipeline under attack (issue #16): a NATS that refuses one message of a
window, acknowledgements lost after the message was stored, any window and batch size.

What must hold whatever happens (ADR 3, ADR 10): the stream holds every published position
once, in position order, each with its ``Nats-Msg-Id`` and the ``Cbcm-Previous-Position`` of
the event before it; and the recorded position never passes an event the stream does not
hold (checked after every pass, failed or not).

The faults are made by a real nats-server: a "refused" message is sent with an expected last
sequence the stream does not have, so JetStream itself refuses it, and with it every message
of the window sent after it (their expected sequences assumed it stored). A "lost" ack is a
message JetStream stored whose acknowledgement the relay never gets (it sees a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import nats
import nats.js.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.catalogue import decode_message
from contracts.subjects import PREVIOUS_POSITION_HEADER, STREAM
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, demo_start, walk_cases
from services.nats.client import TRANSIENT
from services.nats.server import EmbeddedNats
from services.relay.publisher import AckPublisher
from services.relay.relay import (
    EXPECTED_LAST_SEQUENCE_HEADER,
    MSG_ID_HEADER,
    Relay,
    ensure_stream,
    store_id_of,
)
from services.settings import Settings

Fault = Literal["refuse", "lose_ack"]


class Crash(Exception):
    """The relay process dies here: the test drops that relay and starts a fresh one."""


class FaultyPublisher:
    """The relay's publisher (``AckPublisher``), but at the given indexes of the publishes
    to ``CBCM_EVENTS`` the real server refuses the message, or its acknowledgement is lost,
    or the relay crashes before sending it."""

    def __init__(
        self, publisher: AckPublisher, faults: dict[int, Fault], crash_at: int | None = None
    ) -> None:
        self._publisher = publisher
        self.faults = dict(faults)
        self.crash_at = crash_at
        self.sent = 0

    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Any]:
        fault = None
        if stream == STREAM:
            if self.sent == self.crash_at:
                self.crash_at = None
                raise Crash
            fault = self.faults.pop(self.sent, None)
            self.sent += 1
        if fault == "refuse" and headers is not None:
            wrong = int(headers.get(EXPECTED_LAST_SEQUENCE_HEADER, "0")) + 1_000_000
            headers = {**headers, EXPECTED_LAST_SEQUENCE_HEADER: str(wrong)}
        sent = await self._publisher.publish_async(subject, payload, stream=stream, headers=headers)
        if fault != "lose_ack":
            return sent
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def lose(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved
            if not lost.done():
                lost.set_exception(TimeoutError("acknowledgement lost"))

        sent.add_done_callback(lose)
        return lost


def published_positions(app: ComplaintMechanism) -> list[int]:
    return [
        n.id
        for n in app.recorder.select_notifications(1, 1_000_000)
        if is_published(app.mapper.to_domain_event(n))
    ]


async def stream_positions(js: JetStreamContext) -> list[tuple[int, str, int]]:
    """(position, message id, previous position) of every message, by sequence."""
    info = await js.stream_info(STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(STREAM, seq)
        assert raw.data is not None and raw.headers is not None
        position = decode_message(raw.data).position
        assert isinstance(position, int)
        found.append(
            (position, raw.headers[MSG_ID_HEADER], int(raw.headers[PREVIOUS_POSITION_HEADER]))
        )
    return found


async def last_position(js: JetStreamContext) -> int:
    """The position of the stream's last message (0: empty)."""
    info = await js.stream_info(STREAM)
    if not info.state.messages:
        return 0
    raw = await js.get_msg(STREAM, info.state.last_seq)
    position = decode_message(raw.data or b"").position
    assert isinstance(position, int)
    return position


async def publish_despite_faults(relay: Relay, js: JetStreamContext, passes: int = 60) -> int:
    """Passes until one goes through; after each, the recorded position is one the stream
    holds (never past an event it lacks). How many passes failed."""
    for failed in range(passes):
        try:
            await relay.publish_pending()
        except TRANSIENT:
            pass
        else:
            return failed
        finally:
            recorded = await relay.recorded_position()
            top = await last_position(js)
            assert recorded <= top, f"position {recorded} recorded, the stream holds up to {top}"
    raise AssertionError("the relay never got through")


def assert_exactly_once_in_order(app: ComplaintMechanism, held: list[tuple[int, str, int]]) -> None:
    positions = published_positions(app)
    sid = store_id_of(app.recorder)
    assert [p for p, _, _ in held] == positions, "a position lost, doubled or out of order"
    assert [m for _, m, _ in held] == [f"{sid}:{p}" for p in positions]
    assert [prev for _, _, prev in held] == [0, *positions[:-1]], "a broken previous link"


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> Any:
    client = await nats.connect(nats_server.url)
    await ensure_stream(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
def walked(app: ComplaintMechanism) -> ComplaintMechanism:
    start = demo_start()
    build_demo_network(app, start)
    walk_cases(app, 12, random.Random(16), start)
    return app


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("fault", ["refuse", "lose_ack"])
async def test_one_message_of_a_window_refused_or_its_ack_lost(
    walked: ComplaintMechanism, nc: NatsClient, fault: Fault
) -> None:
    # given a backlog, and a NATS that refuses (or loses the ack of) the 37th message sent,
    # in the middle of the second window
    total = len(published_positions(walked))
    assert total > 100
    js = nc.jetstream()
    faulty = FaultyPublisher(AckPublisher(nc), {36: fault})
    relay = Relay(walked, js, batch_size=64, window=30, publisher=faulty)

    # when the relay publishes the backlog
    failed = await publish_despite_faults(relay, js)

    # then the fault happened, and the stream is the store once, in order
    assert not faulty.faults
    assert_exactly_once_in_order(walked, await stream_positions(js))
    assert await relay.recorded_position() == published_positions(walked)[-1]
    assert failed <= 1


async def test_a_refusal_resolves_its_future(nc: NatsClient) -> None:
    # given the relay's publisher, and a message JetStream must refuse (it expects a last
    # sequence the stream does not have)
    publisher = AckPublisher(nc)
    headers = {MSG_ID_HEADER: "x:1", EXPECTED_LAST_SEQUENCE_HEADER: "41"}

    # when it is published, then its future fails with JetStream's refusal, at once (nats-py's
    # own publish_async leaves it pending for ever: nats-io/nats.py#985)
    future = await publisher.publish_async(
        "cbcm.v1.evt.network.network.x", b"{}", stream=STREAM, headers=headers
    )
    with pytest.raises(nats.js.errors.BadRequestError) as refused:
        await asyncio.wait_for(future, 10)
    assert refused.value.err_code == 10071  # wrong last sequence
    # and one that fits is acknowledged with its sequence
    ok = await publisher.publish_async(
        "cbcm.v1.evt.network.network.x", b"{}", stream=STREAM, headers={MSG_ID_HEADER: "x:2"}
    )
    ack = await asyncio.wait_for(ok, 10)
    assert (ack.stream, ack.seq, ack.duplicate) == (STREAM, 1, False)
    again = await publisher.publish_async(
        "cbcm.v1.evt.network.network.x", b"{}", stream=STREAM, headers={MSG_ID_HEADER: "x:2"}
    )
    assert (await asyncio.wait_for(again, 10)).duplicate
    assert publisher.pending == 0
    await publisher.close()


# One store for every example of the property below (built once, read only by the relays).
_EXAMPLES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComplaintMechanism]:
    root: Path = tmp_path_factory.mktemp("pipeline")
    app = complaint_mechanism(
        Settings(data_dir=root / "data", event_store=f"sqlite:///{root / 'events.sqlite3'}")
    )
    start = demo_start()
    build_demo_network(app, start)
    walk_cases(app, 6, random.Random(61), start)
    yield app
    app.close()


@pytest.fixture(scope="module")
def shared_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("pipeline-nats")).start()
    yield server
    server.stop()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    window=st.integers(1, 80),
    batch=st.integers(1, 120),
    faults=st.dictionaries(
        st.integers(0, 150), st.sampled_from(["refuse", "lose_ack"]), max_size=4
    ),
    crash_at=st.none() | st.integers(0, 160),
)
def test_any_window_any_batch_any_failure_points(
    shared_store: ComplaintMechanism,
    shared_nats: EmbeddedNats,
    window: int,
    batch: int,
    faults: dict[int, Fault],
    crash_at: int | None,
) -> None:
    n = _EXAMPLES["n"] = _EXAMPLES.get("n", 0) + 1

    async def example() -> None:
        nc = await nats.connect(shared_nats.url)
        try:
            js = nc.jetstream()
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(STREAM)
            await ensure_stream(js)
            faulty = FaultyPublisher(AckPublisher(nc), faults, crash_at)
            for _ in range(2):  # a crash drops the relay; a fresh one resumes
                relay = Relay(
                    shared_store,
                    js,
                    publisher=faulty,
                    tracking_name=f"cbcm-relay-example-{n}",
                    batch_size=batch,
                    window=window,
                    publish_timeout=5.0,
                )
                try:
                    await publish_despite_faults(relay, js)
                    break
                except Crash:
                    continue
            assert_exactly_once_in_order(shared_store, await stream_positions(js))
            assert await relay.recorded_position() == published_positions(shared_store)[-1]
        finally:
            await nc.close()

    asyncio.run(example())
