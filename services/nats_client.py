"""What every cbcm NATS client shares: quiet error reporting while the client reconnects,
and the streams that keep everything."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

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


DUPLICATE_WINDOW = 120.0
"""Seconds JetStream remembers a ``Nats-Msg-Id``: a re-sent message is dropped within it."""


def kept_stream(name: str, description: str, subject: str, replicas: int = 1) -> StreamConfig:
    """A stream that keeps everything: file storage, no delete, no purge (its messages are
    what rebuilds and audits start from)."""
    return StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_kept_stream(js: JetStreamContext, wanted: StreamConfig) -> StreamInfo:
    """Create the stream, or bring an existing one to ``wanted`` (idempotent)."""
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(wanted)
        log.info("nats.stream_created", stream=wanted.name, replicas=wanted.num_replicas)
        return info
    current = info.config
    if (
        current.subjects == wanted.subjects
        and current.storage == wanted.storage
        and current.num_replicas == wanted.num_replicas
        and current.duplicate_window == wanted.duplicate_window
        and current.deny_delete
        and current.deny_purge
    ):
        return info
    # deny_delete/deny_purge cannot be turned off by an update, only on: updating is safe.
    info = await js.update_stream(wanted)
    log.info("nats.stream_updated", stream=wanted.name, replicas=wanted.num_replicas)
    return info
