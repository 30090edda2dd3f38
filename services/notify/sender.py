"""The outbox to the channels, and each notice into the event log once.

The sender works on its own file (``notify-sender.sqlite3``), into which it copies the
intake's notices (``outbox.pull``). For a batch of due notices, each step is committed
before the next (ADR 18):
1. ``sending``, each notice's attempt counted (before any byte goes out);
2. each notice, each channel in turn; a channel that accepted is listed in
   ``done_channels`` at once, so a retry never sends on it again;
3. the batch's ``Notification.Sent``/``GivenUp`` recorded in the event store in one commit
   (a notice's id is its key: a second record is refused by the store, so the log holds it
   once whatever happens);
4. the batch's rows closed, ``sent`` or ``undelivered``.
A crash between a server's acceptance and step 2's commit sends that channel once more on
restart, with the same Message-ID: the send itself is at-least-once, the window one message
wide. A crash after step 2 sends nothing again; after step 3 ``recover`` finds the notice
in the log and closes its row as the log has it.

A channel's failure puts the notice back with a growing delay (``backoff``); after
``max_attempts`` it is given up: ``Notification.GivenUp`` in the log, ``undelivered`` in
the outbox (counted in the coordinator's digest). A notice to someone with no contact, or
whose addresses were erased, is given up at once (``no_address``).

Preferences: a non-urgent notice to someone in their quiet hours waits until they end; one
to someone who chose a digest is held for it. Urgent notices go at once, whatever either.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import structlog

from domain.errors import VersionConflict
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
Record = Callable[[], Notification]
"""Makes a notice's event (made again for each try at recording it: a failed commit
leaves an aggregate with nothing pending to save)."""

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


@dataclass
class _Plan:
    send: list[tuple[Notice, list[tuple[Channel, str]]]] = field(default_factory=list)
    no_address: list[tuple[Notice, str]] = field(default_factory=list)


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
        source: sqlite3.Connection | None = None,
    ) -> None:
        self.db = db
        self.source = db if source is None else source
        """The intake's file (its notices, contacts' preferences); ``db`` when it is one."""
        self.app = app
        self.channels = channels
        self.base_url = base_url
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock = clock

    async def recover(self) -> int:
        """Put back what a stopped sender left in flight; close what the log already has
        (as sent, or as given up, whichever the log says)."""
        left = await asyncio.to_thread(outbox.in_flight, self.db)
        for notice in left:
            outcome = await asyncio.to_thread(self._outcome, notice)
            if outcome is not None:
                await asyncio.to_thread(
                    outbox.mark_final, self.db, notice.key, outcome, self.clock(), None
                )
            else:
                await asyncio.to_thread(outbox.retry_at, self.db, notice.key, self.clock())
        if left:
            log.info("notify.recovered", in_flight=len(left))
        return len(left)

    def _outcome(self, notice: Notice) -> str | None:
        return self.app.notification_outcome(
            notification_id(notice.recipient, notice.kind, notice.about)
        )

    async def run_once(self, limit: int = 50) -> int:
        """Send what is due now, as one batch; how many notices were handled.

        The batch's bookkeeping is grouped (its attempts counted in one commit before any
        byte goes out, its events in one commit to the log, its end in one commit), but
        each message a channel accepted is committed as such at once, so the window in
        which a crash repeats a message stays one message wide."""
        if self.source is not self.db:
            await asyncio.to_thread(outbox.pull, self.db, self.source)
        now = self.clock()
        batch = await asyncio.to_thread(outbox.due, self.db, now, limit)
        if not batch:
            return 0
        plan = await asyncio.to_thread(self._plan, batch, now)
        taken = await asyncio.to_thread(
            outbox.mark_sending_many,
            self.db,
            [(notice.key, notice.attempts + 1) for notice, _ in plan.send],
        )
        finished: list[tuple[Notice, Record, str, str | None]] = []
        for notice, reason in plan.no_address:
            finished.append(
                (notice, self._given_up(notice, notice.attempts, reason), "undelivered", reason)
            )
        for notice, routes in plan.send:
            if notice.key not in taken:
                continue  # another sender took it
            outcome = await self._send(notice, routes)
            if outcome is not None:
                finished.append(outcome)
        if finished:
            await asyncio.to_thread(self._record, [record for _, record, _, _ in finished])
            at = self.clock()
            await asyncio.to_thread(
                outbox.finish_many,
                self.db,
                [(notice.key, state, reason) for notice, _, state, reason in finished],
                at,
            )
            for told, record, state, why in finished:
                self._told(told, record, state, why)
        return len(batch)

    def _plan(self, batch: list[Notice], now: datetime) -> _Plan:
        """What to do with each notice of a batch (in a worker thread: it reads the store):
        hold it for a digest, wait for the end of quiet hours, give it up, or send it."""
        plan = _Plan()
        contacts: dict[str, StaffContact | None] = {}
        later: list[tuple[str, str | None, datetime | None]] = []
        for notice in batch:
            prefs = _preferences(self.source, notice.recipient)
            urgent = notice.urgent or notice.kind in URGENT_KINDS
            if prefs is not None and not urgent and notice.kind not in DIGEST_KINDS:
                if prefs["delivery"] == NotificationDelivery.DIGEST:
                    later.append((notice.key, "held", None))
                    continue
                quiet = _quiet(prefs)
                until = None if quiet is None else quiet.quiet_until(now)
                if until is not None:
                    later.append((notice.key, None, until))
                    continue
            if notice.recipient not in contacts:
                contacts[notice.recipient] = self.app.staff_contact(notice.recipient)
            routes = self._routes(contacts[notice.recipient])
            if routes:
                plan.send.append((notice, routes))
            else:
                plan.no_address.append((notice, "no_address"))
        if later:
            outbox.postpone_many(self.db, later)
        return plan

    async def _send(
        self, notice: Notice, routes: list[tuple[Channel, str]]
    ) -> tuple[Notice, Record, str, str | None] | None:
        """Each channel in turn; the record to write when it ended (``None``: retried)."""
        attempts = notice.attempts + 1
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
                    reason = "send_failed"
                    return notice, self._given_up(notice, attempts, reason), "undelivered", reason
                wait = backoff(attempts, self.retry_base, self.retry_max)
                await asyncio.to_thread(
                    outbox.retry_at, self.db, notice.key, self.clock() + wait, "send_failed"
                )
                return None
            done.append(channel.kind.value)
            await asyncio.to_thread(outbox.mark_channel_done, self.db, notice.key, tuple(done))
            metrics.SENT.labels(notice.kind.value, channel.kind.value).inc()
        sent_at = self.clock()
        metrics.LATENCY.observe(max(0.0, (sent_at - notice.created_at).total_seconds()))

        def record() -> Notification:
            return Notification.sent(
                recipient=notice.recipient,
                kind=notice.kind,
                about=notice.about,
                case_id=notice.case_id,
                urgent=notice.urgent or notice.kind in URGENT_KINDS,
                count=notice.count,
                channels=tuple(NotificationChannel(c) for c in done),
                attempts=attempts,
                at=sent_at,
            )

        return notice, record, "sent", None

    def _record(self, records: list[Record]) -> None:
        """The batch's notices into the log in one commit; one at a time if one of them is
        already there (a notice recorded before a crash: the log keeps the first)."""
        try:
            self.app.record_notifications([make() for make in records])
        except VersionConflict:
            for make in records:
                self.app.record_notification(make())

    def _given_up(self, notice: Notice, attempts: int, reason: str) -> Record:
        at = self.clock()

        def record() -> Notification:
            return Notification.given_up(
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

        return record

    @staticmethod
    def _told(notice: Notice, record: Record, state: str, reason: str | None) -> None:
        if state == "sent":
            log.info(
                "notify.sent",
                recipient=notice.recipient,
                kind=notice.kind.value,
                attempts=notice.attempts + 1,
            )
            return
        metrics.GIVEN_UP.labels(reason or "unknown").inc()
        log.warning(
            "notify.given_up",
            recipient=notice.recipient,
            kind=notice.kind.value,
            attempts=notice.attempts,
            reason=reason,
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
