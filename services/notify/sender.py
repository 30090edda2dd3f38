"""The outbox to the channels, and each notice into the event log once.

For one notice, each step is committed before the next (ADR 16):
1. ``sending``, the attempt counted (before any byte goes out);
2. each channel in turn; a channel that accepted is listed in ``done_channels`` at once,
   so a retry never sends on it again;
3. ``Notification.Sent`` recorded in the event store (its id is the notice's key: a second
   record is refused by the store, so the log holds it once whatever happens);
4. ``sent``.
A crash between the server's acceptance and step 2's commit sends that channel once more
on restart, with the same Message-ID: the send itself is at-least-once, the window one
message wide. A crash after step 3 is found on restart (``recover``): the log already has
the notice, the row is closed without sending again.

A channel's failure puts the notice back with a growing delay (``backoff``); after
``max_attempts`` it is given up: ``Notification.GivenUp`` in the log, ``undelivered`` in
the outbox (counted in the coordinator's digest). A notice to someone with no contact, or
whose addresses were erased, is given up at once (``no_address``).

Preferences: a non-urgent notice to someone in their quiet hours waits until they end; one
to someone who chose a digest is held for it. Urgent notices go at once, whatever either.
"""

# Table and column names in SQL text are constants of this module, never input.

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

import structlog

from domain.notification import (
    URGENT_KINDS,
    Notification,
    QuietHours,
    StaffContact,
    notification_id,
)
from domain.vocabulary import NotificationChannel, NotificationDelivery, NotificationKind
from services.application.mechanism import ComplaintMechanism
from services.notify import metrics, outbox
from services.notify.channels import Channel, SendFailed
from services.notify.messages import render
from services.notify.outbox import Notice

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

DIGEST_KINDS = frozenset({NotificationKind.DIGEST, NotificationKind.COORDINATOR_DIGEST})


def backoff(attempts: int, base: float, most: float) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: base, 2 base, 4 base... capped."""
    return timedelta(seconds=min(most, base * 2 ** max(0, attempts - 1)))


def _preferences(db: sqlite3.Connection, user: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM notify_contacts WHERE user = ?", (user,)
    ).fetchone()
    return row


def _quiet(row: sqlite3.Row) -> QuietHours | None:
    if row["quiet_start"] is None:
        return None
    return QuietHours(
        time.fromisoformat(row["quiet_start"]),
        time.fromisoformat(row["quiet_end"]),
        row["quiet_zone"],
    )


class Sender:
    """Sends what the outbox holds, one notice at a time, each step committed."""

    def __init__(
        self,
        db: sqlite3.Connection,
        app: ComplaintMechanism,
        channels: dict[NotificationChannel, Channel],
        *,
        base_url: str,
        max_attempts: int,
        retry_base: float,
        retry_max: float,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.app = app
        self.channels = channels
        self.base_url = base_url
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock = clock

    async def recover(self) -> int:
        """Put back what a stopped sender left in flight; close what the log already has."""
        left = await asyncio.to_thread(outbox.in_flight, self.db)
        for notice in left:
            if await asyncio.to_thread(self._recorded, notice):
                await asyncio.to_thread(
                    outbox.mark_final, self.db, notice.key, "sent", self.clock(), None
                )
            else:
                await asyncio.to_thread(outbox.retry_at, self.db, notice.key, self.clock())
        if left:
            log.info("notify.recovered", in_flight=len(left))
        return len(left)

    def _recorded(self, notice: Notice) -> bool:
        return self.app.notification_recorded(
            notification_id(notice.recipient, notice.kind, notice.about)
        )

    async def run_once(self, limit: int = 50) -> int:
        """Send what is due now; how many notices were handled."""
        now = self.clock()
        batch = await asyncio.to_thread(outbox.due, self.db, now, limit)
        for notice in batch:
            await self.handle(notice)
        return len(batch)

    async def handle(self, notice: Notice) -> None:
        now = self.clock()
        prefs = await asyncio.to_thread(_preferences, self.db, notice.recipient)
        urgent = notice.urgent or notice.kind in URGENT_KINDS
        if prefs is not None and not urgent and notice.kind not in DIGEST_KINDS:
            if prefs["delivery"] == NotificationDelivery.DIGEST:
                await asyncio.to_thread(outbox.hold, self.db, notice.key)
                return
            quiet = _quiet(prefs)
            until = None if quiet is None else quiet.quiet_until(now)
            if until is not None:
                await asyncio.to_thread(outbox.retry_at, self.db, notice.key, until)
                return
        contact = await asyncio.to_thread(self.app.staff_contact, notice.recipient)
        routes = self._routes(contact)
        if not routes:
            await self._give_up(notice, notice.attempts, "no_address")
            return
        attempts = notice.attempts + 1
        if not await asyncio.to_thread(outbox.mark_sending, self.db, notice.key, attempts):
            return  # another sender took it
        message = render(notice, self.base_url)
        done = list(notice.done_channels)
        for channel, address in routes:
            if channel.kind.value in done:
                continue
            try:
                await channel.send(address, message)
            except SendFailed as e:
                metrics.FAILED.labels(channel.kind.value).inc()
                log.warning(
                    "notify.send_failed",
                    channel=channel.kind.value,
                    kind=notice.kind.value,
                    attempts=attempts,
                    error=str(e),
                )
                if attempts >= self.max_attempts:
                    await self._give_up(notice, attempts, "send_failed")
                else:
                    wait = backoff(attempts, self.retry_base, self.retry_max)
                    await asyncio.to_thread(
                        outbox.retry_at, self.db, notice.key, self.clock() + wait, "send_failed"
                    )
                return
            done.append(channel.kind.value)
            await asyncio.to_thread(outbox.mark_channel_done, self.db, notice.key, tuple(done))
            metrics.SENT.labels(notice.kind.value, channel.kind.value).inc()
        sent_at = self.clock()
        metrics.LATENCY.observe(max(0.0, (sent_at - notice.created_at).total_seconds()))
        record = Notification.sent(
            recipient=notice.recipient,
            kind=notice.kind,
            about=notice.about,
            case_id=notice.case_id,
            urgent=urgent,
            count=notice.count,
            channels=tuple(NotificationChannel(c) for c in done),
            attempts=attempts,
            at=sent_at,
        )
        await asyncio.to_thread(self.app.record_notification, record)
        await asyncio.to_thread(outbox.mark_final, self.db, notice.key, "sent", sent_at, None)
        log.info(
            "notify.sent",
            recipient=notice.recipient,
            kind=notice.kind.value,
            channels=done,
            attempts=attempts,
        )

    def _routes(self, contact: StaffContact | None) -> list[tuple[Channel, str]]:
        if contact is None:
            return []
        found = []
        for kind in contact.channels:
            channel = self.channels.get(kind)
            address = contact.address(kind)
            if channel is not None and address is not None:
                found.append((channel, address))
        return found

    async def _give_up(self, notice: Notice, attempts: int, reason: str) -> None:
        at = self.clock()
        record = Notification.given_up(
            recipient=notice.recipient,
            kind=notice.kind,
            about=notice.about,
            case_id=notice.case_id,
            urgent=notice.urgent,
            count=notice.count,
            attempts=attempts,
            reason=reason,
            at=at,
        )
        await asyncio.to_thread(self.app.record_notification, record)
        await asyncio.to_thread(outbox.mark_final, self.db, notice.key, "undelivered", at, reason)
        metrics.GIVEN_UP.labels(reason).inc()
        log.warning(
            "notify.given_up",
            recipient=notice.recipient,
            kind=notice.kind.value,
            attempts=attempts,
            reason=reason,
        )
