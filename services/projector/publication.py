"""The statistics service makes the releases that are due and publishes each new version on
``cbcm.v1.stats.release.<period>`` (issue #14). The live reports are never published."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from prometheus_client import Gauge

from contracts.subjects import STREAM, release_subject
from projections.base import ReadModelDb, get_position
from projections.stats import StatisticsProjection
from services.nats.client import nats_connect_options, nats_servers
from services.projector.runner import durable_name
from services.projector.storage import (
    PostgresReadModel,
    ReadModelStore,
    SqliteReadModel,
    status_place_of,
)
from services.runtime.backoff import Backoff
from services.runtime.metrics import serve_once
from services.runtime.threads import finished_in_thread
from services.runtime.worker_status import clear_stall, record_stall
from services.settings import Settings
from services.statistics.releases import (
    LedgerDb,
    LedgerPlace,
    ReleasePolicy,
    adopt_file_ledger,
    ledger_path,
    mark_published,
    policy_from,
    publishing,
    release_due,
    unpublished,
)

log = structlog.get_logger()

PUBLISHER = "publish-stats"
"""The worker name of the statistics publisher's record in ``services.runtime.worker_status``."""

UNPUBLISHED = Gauge(
    "cbcm_stats_reports_unpublished",
    "Statistics release versions not published because they outgrew NATS's payload limit",
    registry=None,
)

RELEASE_HEADER = "Cbcm-Release"
"""The header naming the release version a message carries (``2026-q1-v2``)."""


PUBLISH_RETRY = 1.0
"""Seconds after a failed publication before it is tried again from the read model."""

PUBLISH_RETRY_MOST = 30.0
"""While publication keeps failing (NATS away), the wait between attempts doubles from
``PUBLISH_RETRY`` up to this many seconds, until the releases have gone out."""


class StatisticsPublisher:
    """An ``on_commit`` hook: after a committed batch, make the statistics releases that are
    due (``services.statistics.releases``, at most once per ``every`` seconds) and publish
    every version not published yet, each once, as the ledger stores it: a restart publishes
    what it had not, with the same bytes, and makes nothing new from the same facts.
    ``nats_options``: credentials and TLS (default: ``CBCM_NATS_*``, user ``project-stats``).
    ``policy`` (default: ``CBCM_STATS_*``) and ``clock`` (default: now, UTC) decide what is
    due. The ledger is the read-model database's when ``store`` is on PostgreSQL (schema
    ``<prefix>_stats_releases``, ADR 27), else ``stats_releases.sqlite`` in ``data_dir``
    (default: beside the read model's file).

    It makes and publishes only while it holds the ledger's lock
    (``services.statistics.releases.publishing``): a second publisher (another host's, a
    standby taking over while the first still runs) finds it held, publishes nothing and
    tries again ``PUBLISH_RETRY`` later, by which time what the first made and published is
    in the ledger. Each version is made once and published once, with the ledger's bytes.

    Its connection's own errors are debug lines: the projector's connection to the same
    servers already tells of an outage (once per ten seconds), and a publish that fails
    raises to the projector, which reconnects and says so; a warning here would only repeat
    it, or tell of the server stopping before this process on a clean stop. The failed
    publication itself is tried again ``PUBLISH_RETRY`` seconds later from the read model,
    and, if that fails too (a warning, ``stats.publish_failed``), again and again at waits
    doubling up to ``PUBLISH_RETRY_MOST``, until it has gone out: no next commit is needed.

    A commit within ``every`` of the last publication is not lost: a trailing publication
    follows ``every`` after the last one, from a read-only connection of its own to the read
    model (the projector may be applying the next batch meanwhile), so that the reports of
    the last batch before a quiet spell are published too.

    A release larger than the server's payload limit is not sent (NATS would refuse it, and
    refusing it again at every batch would only stop the others): ``stats.report_too_large``
    says so once, with its size and the limit, ``cbcm_stats_reports_unpublished`` counts it,
    and with ``data_dir`` a record ``publish-stats`` makes ``/status`` name it; the other
    releases go out. It is published once it fits (a server with a larger limit); it stays
    readable over HTTP meanwhile. (A release covers one period, so only very many agencies
    make it that large.)
    """

    def __init__(
        self,
        nats_url: str,
        every: float = 2.0,
        *,
        nats_options: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        policy: ReleasePolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        store: ReadModelStore | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nats_url = nats_url
        self._store = store
        self.policy = policy if policy is not None else policy_from(Settings())
        self.clock = clock if clock is not None else (lambda: datetime.now(UTC))
        self.every = every
        self._timer = timer  # what ``every`` is counted on (seconds, monotonic)
        self._options = (
            nats_options
            if nats_options is not None
            else nats_connect_options(Settings(), "project-stats")
        )
        self._data_dir = data_dir
        self._nc: NatsClient | None = None
        self._last = 0.0
        self._too_large: set[str] = set()
        self._trailing: asyncio.Task[None] | None = None
        serve_once(UNPUBLISHED)  # only a process that publishes statistics serves it
        UNPUBLISHED.set(0)

    async def __call__(self, db: ReadModelDb, position: int) -> None:
        now = self._timer()
        if self._trailing is None and now - self._last >= self.every:
            try:
                done = await self.publish(db, position)
            except Exception:
                # Not lost: published again from the read model in a moment. The commit that
                # failed to publish may be the last before a quiet spell (no next commit for
                # hours), and a client timing out on a loaded machine is enough for it.
                self._later(db, max(self.every, PUBLISH_RETRY))
                raise
            finally:
                # the interval runs from the end of a publication: making releases can take
                # a while, and the next batch must not follow at once
                self._last = self._timer()
            if not done:  # another publisher holds the ledger: after it, from the read model
                self._later(db, PUBLISH_RETRY)
            return
        if self._trailing is None:
            self._later(db, max(0.0, self._last + self.every - now))

    def _later(self, db: ReadModelDb, delay: float) -> None:
        """Publish what the read model holds ``delay`` seconds from now (once)."""
        store = self._store
        if store is None:
            path = _file_of(db)
            store = None if path is None else SqliteReadModel(path)
        if store is not None and self._trailing is None:
            self._trailing = asyncio.ensure_future(self._publish_later(store, delay))

    async def _publish_later(self, store: ReadModelStore, delay: float) -> None:
        """Publish what the read model holds ``delay`` seconds from now, and keep at it until
        it has gone out: another publisher holding the ledger lets go of it soon (tried again
        ``PUBLISH_RETRY`` later); a failure (NATS away, a client timing out) is tried again
        after a wait that doubles from ``PUBLISH_RETRY`` to ``PUBLISH_RETRY_MOST``. The first
        failure of a run is a warning, the others debug lines (the projector's own connection
        tells of an outage). A commit meanwhile starts no other attempt: this one publishes
        what the read model holds when it succeeds. Before, a second failure gave up, and the
        last batch before a quiet spell waited for the next commit, hours or days later."""
        failures = Backoff(PUBLISH_RETRY, PUBLISH_RETRY_MOST)  # stopped by ``close``'s cancel
        try:
            await asyncio.sleep(delay)
            while True:
                try:
                    with store.reading() as db:
                        position = await finished_in_thread(get_position, db)
                        done = await self.publish(db, position)
                except Exception as e:  # not lost: tried again after the wait below
                    said = log.warning if failures.delay == failures.first else log.debug
                    said("stats.publish_failed", error=type(e).__name__, retry_in=failures.delay)
                    await failures.wait()
                    continue
                finally:
                    self._last = self._timer()
                if done:
                    return
                failures.reset()
                await asyncio.sleep(PUBLISH_RETRY)  # the ledger's holder lets go of it soon
        finally:
            self._trailing = None

    async def publish(self, db: ReadModelDb, position: int) -> bool:
        """Make the releases due now, and publish every version not published yet; False
        when another publisher held the ledger (nothing done)."""
        if self._nc is None or not self._nc.is_connected:
            self._nc = NatsClient()
            await self._nc.connect(
                nats_servers(self.nats_url),
                # Connected again by the next publish rather than by the client: a client
                # closed while it reconnects can miss the cancellation (nats-py 2.16 on
                # Python 3.11) and hold the process's exit for its 60 attempts.
                allow_reconnect=False,
                # Nor does its first connection wait out nats-py's 60 attempts, 2 s apart,
                # on a server that refuses (allow_reconnect does not bound those): the commit
                # hook held the projector two minutes while NATS was away. Each server twice,
                # a second apart; the
                # publication is tried again PUBLISH_RETRY later.
                max_reconnect_attempts=1,
                reconnect_time_wait=1,
                connect_timeout=2,
                error_cb=_client_error,
                **self._options,
            )
        # The releases are made in a thread (the projector is not using the connection
        # meanwhile: it waits for this hook), so the event loop keeps answering NATS.
        place = self._ledger(db)
        behind = await self._behind()
        held = contextlib.ExitStack()
        try:
            # (inside the try: a cancellation while it opens still closes what it opened,
            # the ledger's lock with it)
            led = await finished_in_thread(held.enter_context, publishing(place))
            if led is None:
                log.debug("stats.ledger_busy", detail="another publisher holds the ledger")
                return False
            await self._publish_held(db, led, position, make=not behind)
        finally:
            await finished_in_thread(held.close)
        return True

    async def _publish_held(
        self, db: ReadModelDb, led: LedgerDb, position: int, *, make: bool
    ) -> None:
        """``publish`` while holding the ledger's lock."""
        assert self._nc is not None
        documents = await finished_in_thread(self._due, db, led, make)
        limit = self._nc.max_payload
        sent: list[str] = []
        before = set(self._too_large)
        for name, period, payload in documents:
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
            await self._nc.publish(release_subject(period), payload, headers={RELEASE_HEADER: name})
            sent.append(name)
        await self._nc.flush()
        if sent:
            await finished_in_thread(_mark_published, led, sent)
        if self._too_large != before:
            self._tell_unpublished(position)
        if sent:
            log.info("stats.published", releases=sent, position=position)

    def _ledger(self, db: ReadModelDb) -> LedgerPlace:
        if isinstance(self._store, PostgresReadModel):
            # the read models' database, which every host reaches (ADR 27)
            return status_place_of(self._store)
        if self._data_dir is not None:
            return ledger_path(self._data_dir)
        path = _file_of(db)
        if path is None:
            raise ValueError("a statistics publisher on a read model in memory needs data_dir")
        return ledger_path(path.parent)

    def _due(self, db: ReadModelDb, led: LedgerDb, make: bool) -> list[tuple[str, str, bytes]]:
        if isinstance(self._store, PostgresReadModel) and self._data_dir is not None:
            # read models moved to PostgreSQL: the file's releases are kept, not made again
            taken = adopt_file_ledger(led, ledger_path(self._data_dir))
            if taken:
                log.info("stats.ledger_taken_over", releases=taken)
        if make:
            try:
                release_due(db, led, self.policy, self.clock())
            except ValueError as e:
                # A release that cannot be made (its tables do not add up) is held back
                # and said, loudly; the read model goes on, and what was made before is
                # still published (attack review of #22). The message names tables only.
                log.error("stats.release_failed", error=type(e).__name__, detail=str(e))
        return unpublished(led)

    async def _behind(self) -> bool:
        """Whether the statistics projector's consumer still has messages to deliver (a
        catch-up, a replay into a rebuilt read model). Releases are made from a caught-up
        read model only: made halfway through a replay, they would hold half the facts, and
        the rest would come as revisions. Its last batch commits with nothing pending, and
        makes them (or the trailing publication after it does)."""
        assert self._nc is not None
        try:
            info = await self._nc.jetstream().consumer_info(
                STREAM, durable_name(StatisticsProjection()), timeout=2.0
            )
        except Exception as e:  # no consumer (no projector): nothing to wait for
            log.debug("stats.consumer_unknown", error=type(e).__name__)
            return False
        return bool(info.num_pending)

    def _tell_unpublished(self, position: int) -> None:
        UNPUBLISHED.set(len(self._too_large))
        if self._data_dir is None:
            return
        # with read models on PostgreSQL the record is in their database (ADR 27)
        place = self._data_dir if self._store is None else status_place_of(self._store)
        if self._too_large:
            record_stall(
                place,
                PUBLISHER,
                position=position,
                message_type=",".join(sorted(self._too_large)),
                error="ReportLargerThanMaxPayload",
            )
        else:
            clear_stall(place, PUBLISHER)

    async def close(self) -> None:
        if self._trailing is not None:
            self._trailing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trailing
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await nc.close()


def _file_of(db: ReadModelDb) -> Path | None:
    """The file of ``db``'s main database (None in memory, or not SQLite)."""
    if not isinstance(db, sqlite3.Connection):
        return None
    for _seq, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return Path(file)
    return None


def _mark_published(led: LedgerDb, ids: list[str]) -> None:
    for id_ in ids:
        mark_published(led, id_)


async def _client_error(exc: Exception) -> None:
    log.debug("stats.nats_client_error", error=type(exc).__name__)
