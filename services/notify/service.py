"""``cbcm notify``: the intake, the scheduler and the sender in one process.

The intake is the projector's runner on ``NotifierIntake`` (durable consumer ``cbcm-notify``,
lease, gap and stall handling as every projector); the scheduler and the sender work on the
same SQLite file through their own connections, and only in the process holding the
sender's lease (``<data dir>/read_models/notify-sender.sqlite3.lease``), so two notifiers
never send the same notice. A committed intake batch wakes the sender at once: an urgent
complaint is on its way to the SMTP server within a second of reaching the notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from domain.vocabulary import NotificationChannel
from projections.base import ReadModelDb, open_read_model
from services.application.mechanism import ComplaintMechanism
from services.event_store.errors import EventStoreUnavailable
from services.nats.client import wait_for_stop
from services.notify import metrics, outbox, scheduler, webhooks
from services.notify.channels import Channel, channels_from
from services.notify.intake import NAME, NotifierIntake, notify_since
from services.notify.sender import Sender
from services.notify.settings import NotifySettings
from services.projector.runner import open_projection, run_projector
from services.projector.storage import ReadModelLease, read_model_path

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

SENDER_POLL = 0.5
"""Longest wait between two looks at the outbox when nothing woke the sender (retries and
quiet hours fall due by the clock, not by an event)."""


def notifier_path(data_dir: Path) -> Path:
    """``<data dir>/read_models/notify.sqlite3``: the intake's file (what deciding needs,
    and the notices the events called for)."""
    return read_model_path(data_dir, NAME)


def sender_path(data_dir: Path) -> Path:
    """``<data dir>/read_models/notify-sender.sqlite3``: every notice's delivery."""
    return read_model_path(data_dir, f"{NAME}-sender")


def _pending(db: sqlite3.Connection) -> int:
    row = db.execute(
        "SELECT count(*) FROM notify_outbox WHERE state IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])


async def run_notifier(
    app: ComplaintMechanism,
    settings: NotifySettings,
    data_dir: Path,
    nats_url: str,
    stop: asyncio.Event,
    *,
    clock: Clock = lambda: datetime.now(UTC),
    channels: dict[NotificationChannel, Channel] | None = None,
    nats_options: dict[str, Any] | None = None,
    tick_seconds: float | None = None,
) -> None:
    """Notify until ``stop`` is set."""
    path = notifier_path(data_dir)
    intake = NotifierIntake(
        now=clock(), history_grace=timedelta(hours=settings.notify_history_grace_hours)
    )
    made = open_projection(intake, path)  # the intake's file is always SQLite
    assert isinstance(made, sqlite3.Connection)
    made.close()
    wake = asyncio.Event()
    chosen = channels if channels is not None else channels_from(settings)

    def woken(_db: ReadModelDb, _position: int) -> None:
        wake.set()

    tasks = [
        asyncio.create_task(
            run_projector(
                intake,
                path,
                nats_url,
                stop,
                on_commit=woken,
                nats_options=nats_options,
                data_dir=data_dir,
            ),
            name="notify-intake",
        ),
        asyncio.create_task(
            _send_and_schedule(
                app,
                settings,
                path,
                stop,
                wake,
                clock,
                chosen,
                settings.notify_tick_seconds if tick_seconds is None else tick_seconds,
            ),
            name="notify-sender",
        ),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                stop.set()
                raise task.exception()  # type: ignore[misc]
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for channel in chosen.values():
            await channel.close()


async def _send_and_schedule(  # noqa: PLR0917 - one private call site
    app: ComplaintMechanism,
    settings: NotifySettings,
    path: Path,
    stop: asyncio.Event,
    wake: asyncio.Event,
    clock: Clock,
    channels: dict[NotificationChannel, Channel],
    tick_seconds: float,
) -> None:
    lease = ReadModelLease(path.with_name(f"{NAME}-sender.sqlite3"))
    while not lease.try_take():
        await wait_for_stop(stop, 0.25)
        if stop.is_set():
            return
    source = open_read_model(path)
    db = open_read_model(path.with_name(f"{NAME}-sender.sqlite3"))
    db.execute("BEGIN IMMEDIATE")
    outbox.create(db)
    webhooks.create(db)
    db.execute("COMMIT")
    sender = Sender(
        db,
        app,
        channels,
        base_url=settings.notify_inbox_url,
        max_attempts=settings.notify_max_attempts,
        retry_base=settings.notify_retry_base_seconds,
        retry_max=settings.notify_retry_max_seconds,
        clock=clock,
        source=source,
    )
    due_soon = timedelta(hours=settings.notify_due_soon_hours)
    grace = timedelta(hours=settings.notify_history_grace_hours)
    try:
        await sender.recover()
        last_tick = -1.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            wake.clear()
            if loop.time() - last_tick >= tick_seconds:
                last_tick = loop.time()
                await asyncio.to_thread(
                    functools.partial(
                        scheduler.tick,
                        db,
                        clock(),
                        due_soon=due_soon,
                        digest_hour=settings.notify_digest_hour,
                        source=source,
                    )
                )
                await _follow_registry(db, source, app, grace)
            handled = await sender.run_once()
            metrics.PENDING.set(await asyncio.to_thread(_pending, db))
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(wake, stop), SENDER_POLL)
    finally:
        db.close()
        source.close()
        lease.release()


async def _follow_registry(
    db: sqlite3.Connection,
    source: sqlite3.Connection,
    app: ComplaintMechanism,
    grace: timedelta,
) -> None:
    """The webhook endpoints disabled since the last tick, into the outbox
    (``services.notify.webhooks``); the store away: tried again at the next tick."""
    since = await asyncio.to_thread(notify_since, source)
    try:
        added = await asyncio.to_thread(
            functools.partial(
                webhooks.follow,
                db,
                source,
                app,
                history_from=None if since is None else since - grace,
            )
        )
    except EventStoreUnavailable as e:
        log.info("notify.registry_unavailable", error=type(e).__name__)
        return
    if added:
        log.info("notify.webhook_disabled", notices=added)


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    waits = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
