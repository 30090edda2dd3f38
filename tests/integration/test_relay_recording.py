"""The relay's recorded position when the answer to recording it is lost (on SQLite and
PostgreSQL).

The relay records the position it has published up to with a single-row tracking insert that
refuses a position that does not move forward. An insert can commit while the relay never
hears so:

- its leadership is lost while it records: ``lead()`` cancels it, and the insert goes on in
  its worker thread; the relay then records the same position once more on its way out;
- the connection drops after the commit.

Either way the next recording of the same position is refused. Taken as a database failure,
that refusal kept a cancelled relay following the log (and publishing, without its lock) and
``lead()`` waiting on it for good: it never stood by, so it never led again. The store knows
what is recorded: a refused position the store already holds is recorded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, Tracking
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.application.mechanism import ComplaintMechanism
from services.relay.relay import Relay, ensure_stream
from tests.integration.test_relay import assert_stream_is_the_store, stream_messages, walk


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stream(context)
    return context


def wrap_inserts(
    app: ComplaintMechanism,
    monkeypatch: pytest.MonkeyPatch,
    wrapper: Callable[[Callable[[Tracking], None], Tracking, int], None],
) -> None:
    """Every tracking recorder the relay makes records through ``wrapper(insert, tracking,
    call number)``."""
    made = app.factory.tracking_recorder
    calls = 0

    def factory(*args: Any, **kwargs: Any) -> Any:
        recorder = made(*args, **kwargs)
        insert = recorder.insert_tracking

        def wrapped(tracking: Tracking) -> None:
            nonlocal calls
            calls += 1
            wrapper(insert, tracking, calls)

        recorder.insert_tracking = wrapped
        return recorder

    monkeypatch.setattr(app.factory, "tracking_recorder", factory)


async def test_a_relay_cancelled_while_it_records_stops_with_its_position_recorded(
    app: ComplaintMechanism,
    js: JetStreamContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a relay following a log, whose first recording of its position is slow, and
    # whose recordings are one at a time (as the store's row lock makes them)
    await walk(app, 3, seed=31)
    entered, release = threading.Event(), threading.Event()
    one_at_a_time = threading.Lock()

    def slow_first(insert: Callable[[Tracking], None], tracking: Tracking, call: int) -> None:
        with one_at_a_time:
            if call == 1:
                entered.set()
                release.wait(60)
            insert(tracking)

    wrap_inserts(app, monkeypatch, slow_first)
    relay = Relay(app, js, data_dir=tmp_path)
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop))
    try:
        assert await asyncio.to_thread(entered.wait, 60), "the relay never recorded"

        # when it is cancelled while it records (its leadership lost), and the insert then
        # commits
        # (the cancellation reaches it whichever comes first: its wait is cancelled, and on
        # its way out it records again, after the first insert, one at a time)
        task.cancel()
        release.set()

        # then it stops (lead() waits for it), having recorded what it published
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, "the cancelled relay went on following the log"
        assert task.cancelled()
    finally:
        release.set()
        stop.set()
        if not task.done():
            await asyncio.wait({task}, timeout=30)
    published = await stream_messages(js)
    assert_stream_is_the_store(app, published)
    assert await Relay(app, js, data_dir=tmp_path).recorded_position() == published[-1].position


async def test_a_position_recorded_whose_answer_was_lost_is_not_refused_next_pass(
    app: ComplaintMechanism,
    js: JetStreamContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a relay whose first recording commits but whose answer is lost (the connection
    # dropped after the commit)
    await walk(app, 3, seed=32)

    def answer_lost(insert: Callable[[Tracking], None], tracking: Tracking, call: int) -> None:
        insert(tracking)
        if call == 1:
            raise OperationalError("the connection dropped after the commit")

    wrap_inserts(app, monkeypatch, answer_lost)
    relay = Relay(app, js, data_dir=tmp_path)
    with pytest.raises(OperationalError):
        await relay.publish_pending()

    # when it makes its next pass, with nothing new to publish
    # then the pass succeeds: the position it could not confirm is the store's already
    assert await relay.publish_pending() == 0
    published = await stream_messages(js)
    assert_stream_is_the_store(app, published)
    assert await relay.recorded_position() == published[-1].position

    # and it goes on recording as events come
    await walk(app, 1, seed=33)
    assert await relay.publish_pending() > 0
    published = await stream_messages(js)
    assert await relay.recorded_position() == published[-1].position
