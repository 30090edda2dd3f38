"""The workers' shared retry delay (services/runtime/backoff.py, issue #13)."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.runtime.backoff import Backoff


async def test_it_doubles_to_its_most_and_a_success_starts_it_again() -> None:
    backoff = Backoff(0.001, 0.004)
    stop = asyncio.Event()
    seen = []
    for _ in range(4):
        seen.append(backoff.delay)
        await backoff.wait(stop)
    assert seen == [0.001, 0.002, 0.004, 0.004]
    backoff.reset()
    assert backoff.delay == 0.001


async def test_stop_ends_a_wait_at_once() -> None:
    backoff = Backoff(30, 60)
    stop = asyncio.Event()
    started = time.monotonic()
    waiting = asyncio.create_task(backoff.wait(stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(waiting, 5)  # not 30 s
    assert time.monotonic() - started < 5


async def test_without_a_stop_a_wait_ends_at_its_delay_or_when_cancelled() -> None:
    backoff = Backoff(0.001, 0.002)
    await backoff.wait()
    assert backoff.delay == 0.002
    long = Backoff(30, 60)
    waiting = asyncio.create_task(long.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)  # not 30 s
    assert long.delay == 30  # a wait cut short does not grow the next


@pytest.mark.parametrize(("first", "most"), [(0, 1), (-1, 1), (2, 1)])
def test_a_delay_that_cannot_grow_is_refused(first: float, most: float) -> None:
    with pytest.raises(ValueError, match="first <= most"):
        Backoff(first, most)
