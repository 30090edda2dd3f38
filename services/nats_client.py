"""What every cbcm NATS client shares: quiet error reporting while the client reconnects."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


def quiet_errors(
    event: str = "nats.client_error", every: float = 10.0
) -> Callable[[Exception], Awaitable[None]]:
    """An ``error_cb`` for nats-py: a warning ``event`` at most every ``every`` seconds.

    nats-py reconnects by itself; its default callback prints a traceback per attempt,
    thousands of lines during an outage.
    """
    last = [0.0]

    async def report(exc: Exception) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            log.warning(event, error=type(exc).__name__)
        else:
            log.debug(event, error=type(exc).__name__)

    return report
