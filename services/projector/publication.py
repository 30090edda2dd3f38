"""The statistics service publishes every report on ``cbcm.v1.stats.<report>``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient

from contracts.subjects import stats_subject
from projections import stats
from services.nats_client import nats_connect_options, nats_servers
from services.settings import Settings

log = structlog.get_logger()


class StatisticsPublisher:
    """An ``on_commit`` hook: after a committed batch, publish the reports (at most once per
    ``every`` seconds, so a catch-up of thousands of events is not thousands of reports).
    ``nats_options``: credentials and TLS (default: ``CBCM_NATS_*``, user ``project-stats``).

    Its connection's own errors are debug lines: the projector's connection to the same
    servers already tells of an outage (once per ten seconds), and a publish that fails
    raises to the projector, which retries and says so; a warning here would only repeat
    it, or tell of the server stopping before this process on a clean stop.

    A report larger than the server's payload limit is not sent (NATS would refuse it, and
    refusing it again at every batch would only stop the others): ``stats.report_too_large``
    says so once, with its size and the limit, and the other reports go out. It is published
    again once it fits. (The door's bounds keep reports small; only events stored before
    them, such as a complaint of the year 1, can make one outgrow the limit.)
    """

    def __init__(
        self, nats_url: str, every: float = 2.0, nats_options: dict[str, Any] | None = None
    ) -> None:
        self.nats_url = nats_url
        self.every = every
        self._options = (
            nats_options
            if nats_options is not None
            else nats_connect_options(Settings(), "project-stats")
        )
        self._nc: NatsClient | None = None
        self._last = 0.0
        self._too_large: set[str] = set()

    async def __call__(self, db: sqlite3.Connection, position: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        await self.publish(db, position)

    async def publish(self, db: sqlite3.Connection, position: int) -> None:
        """Publish every report now (suppressed cells as null)."""
        if self._nc is None or not self._nc.is_connected:
            self._nc = NatsClient()
            await self._nc.connect(
                nats_servers(self.nats_url),
                # Connected again by the next publish rather than by the client: a client
                # closed while it reconnects can miss the cancellation (nats-py 2.16 on
                # Python 3.11) and hold the process's exit for its 60 attempts.
                allow_reconnect=False,
                error_cb=_client_error,
                **self._options,
            )
        # The reports are read in a thread (the projector is not using the connection
        # meanwhile: it waits for this hook), so the event loop keeps answering NATS.
        documents = await asyncio.to_thread(_documents, db, position)
        limit = self._nc.max_payload
        sent = 0
        for name, payload in documents.items():
            if len(payload) > limit:
                if name not in self._too_large:
                    self._too_large.add(name)
                    log.error(
                        "stats.report_too_large",
                        report=name,
                        bytes=len(payload),
                        max_payload=limit,
                        position=position,
                    )
                continue
            if name in self._too_large:
                self._too_large.discard(name)
                log.info("stats.report_fits_again", report=name, bytes=len(payload))
            await self._nc.publish(stats_subject(name), payload)
            sent += 1
        await self._nc.flush()
        log.info("stats.published", reports=sent, position=position)

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.close()


def _documents(db: sqlite3.Connection, position: int) -> dict[str, bytes]:
    """Every report as the message published for it (suppressed cells as null)."""
    tables = stats.reports(db, k=stats.threshold(db))
    return {
        name: json.dumps({"position": position, **stats.report_document(report)}).encode()
        for name, report in tables.items()
    }


async def _client_error(exc: Exception) -> None:
    log.debug("stats.nats_client_error", error=type(exc).__name__)
