"""The one retry delay the workers share (issue #13): while a worker waits out an outage of
NATS or the event store, it waits ``first`` seconds, then twice as long each time, up to
``most``; a success puts it back to ``first``. Setting ``stop`` (or cancelling the task)
ends a wait at once."""

from __future__ import annotations

import asyncio

from services.nats.client import wait_for_stop

__all__ = ["Backoff"]


class Backoff:
    """A delay that doubles from ``first`` to ``most`` between retries."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        if not 0 < first <= most:
            raise ValueError(f"a back-off from {first} s to {most} s: 0 < first <= most")
        self.first = first
        self.most = most
        self.delay = first
        """The next wait, in seconds (what a log line calls ``retry_in``)."""

    def reset(self) -> None:
        """After a success: the next wait is ``first`` again."""
        self.delay = self.first

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Wait the current delay (less if ``stop`` is set meanwhile), then double it. With no
        ``stop``, only cancelling the waiting task ends the wait early."""
        if stop is None:
            await asyncio.sleep(self.delay)
        else:
            await wait_for_stop(stop, self.delay)
        self.delay = min(self.delay * 2, self.most)
