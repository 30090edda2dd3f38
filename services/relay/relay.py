"""The relay (ADR 3): the event store's notification log -> JetStream stream ``CBCM_EVENTS``.

In position order: each stored event is translated into its contract message and published
with ``Nats-Msg-Id: <store-id>:<position>``. Publishes are pipelined (a window of messages in
flight) for throughput, and each carries ``Nats-Expected-Last-Sequence``, so JetStream itself
refuses to store a message unless every one before it is stored: the stream's order is the
store's order with no gaps. What fails is sent again, same message ids, so JetStream drops
what had in fact been stored.

The position is recorded in the event store's database (eventsourcing tracking table,
application name ``cbcm-relay``) only after the acknowledgements of the events it covers: at
most every ``RECORD_SECONDS`` while a backlog is published, and whenever everything read is
published. A crash re-reads at most that much; the stream's tail makes it skip what is stored.

The pipeline (ADR 27, ADR 31): the next batch is read and translated while a window's
acknowledgements are awaited, in a worker thread or, for ``cbcm relay``, in a process of its
own (``translating.TranslatorProcess``: two cores at work on a backlog); each stored state is
parsed once and only the personal fields the translation reads are opened; the stream's tail
is known from the relay's own acks after a clean window (read from the stream after any
failure); the batch's data keys are read in one query; publishes go through
``publisher.AckPublisher``, whose futures resolve on a refusal too.

Following the log: on PostgreSQL ``LISTEN`` on the recorder's channel rings a bell, on SQLite
by polling; both read in batches from the position read. NATS being unreachable only pauses
the relay: what it read stays in memory and is retried with backoff, its recorded position
does not move, and it catches up when NATS is back.

Sealed shares (issue #6, ADR 7): a transfer or an investigation referral that shares
personal data with another agency also gets a share message, sealed to that agency's key
(``services.relay.sharing``), published to stream ``CBCM_SHARES`` in the same window under the same
rules (expected last sequence, tail read first, ``Nats-Msg-Id: <store-id>:<position>:share``).
A position counts as published only once its event *and* its share are stored: the recorded
position never passes a share that is not. The event message itself is unchanged. After a
case's erasure, what was shared of it is withdrawn: a notice to each recipient
(``Nats-Msg-Id: <store-id>:<position>:withdrawn:<agency>``), then its shares are purged.
Every message id the relay publishes is built and read back by ``MessageId``.

A stall (issue #12, ADR 10): an event the relay cannot translate, route or seal (an error
that is not NATS or the store being unreachable, which only pause it) stops the relay at that
position. Everything before it is published and recorded; then the relay says so once (log
line ``relay.stalled``, its stall record in ``services.runtime.worker_status``, the
``cbcm_relay_stalled`` gauge) and waits, alive, for its stop. Nothing after it is published,
nothing is skipped: the operator deploys a fix and restarts it, and it goes on from that
position and clears the record. Its metrics are in ``services.relay.metrics``.

The event store library is synchronous: every call to it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from eventsourcing.persistence import (
    IntegrityError,
    Notification,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from psycopg.sql import SQL, Identifier

from contracts.shares import SHARE_MSG_ID_SUFFIX, SHARING_EVENTS
from contracts.subjects import (
    PREVIOUS_POSITION_HEADER,
    SHARE_SUBJECTS,
    SHARES_STREAM,
    STREAM,
    record_shares,
)
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.event_store.errors import EventStoreUnavailable
from services.event_store.store_id import store_id_of
from services.nats.client import (
    DUPLICATE_WINDOW,
    TRANSIENT,
    ensure_stream,
    nats_connect_options,
    nats_replicas,
    nats_servers,
    quiet_errors,
    unless_stopped,
    wait_for_stop,
)
from services.relay import metrics
from services.relay.leader import lead, leader_lock, wait_for_leadership
from services.relay.publisher import AckPublisher
from services.relay.routing import Router
from services.relay.sharing import Sharer, withdrawal_notice
from services.relay.translating import (
    Outgoing,
    Poison,
    Translated,
    Translator,
    TranslatorProcess,
    TranslatorUnavailable,
)
from services.runtime.backoff import Backoff
from services.runtime.worker_status import (
    Place,
    Stall,
    clear_stall,
    record_stall,
    stall_of,
    status_place,
)
from services.settings import Settings

log = structlog.get_logger()

APPLICATION_NAME = "cbcm-relay"
"""The relay's name in the event store's tracking table."""

WORKER: Final = "relay"
"""The relay's name in the workers' stall records (``services.runtime.worker_status``)."""

MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE_HEADER = "Nats-Expected-Last-Sequence"

HEAD_REFRESH_SECONDS = 1.0
"""At most one query of the store's head this often, and only while a backlog is read
(a full batch): the head otherwise comes from what the reads return."""

RECORD_SECONDS = 1.0
"""While a backlog is published, the position is recorded at most this often (and always
once everything read is published): one tracking write per window cost as much as the
window's publishing on PostgreSQL. A crash re-reads at most this long's worth, which the
stream's tail makes it skip (``_publish_window``)."""

NOTIFY_FALLBACK_SECONDS = 1.0
"""On PostgreSQL, a pass over the log starts at least this often without a notification."""

MessageKind = Literal["event", "share", "withdrawn"]
WITHDRAWN_MSG_ID_INFIX: Final = ":withdrawn:"


@dataclass(frozen=True)
class MessageId:
    """A ``Nats-Msg-Id`` the relay publishes: ``<store-id>:<position>`` (an event,
    ``CBCM_EVENTS``), ``<store-id>:<position>:share`` (its share, ``CBCM_SHARES``) or
    ``<store-id>:<position>:withdrawn:<agency>`` (the notice that an erased case's shares to
    ``agency`` were withdrawn, ``CBCM_SHARES``). Built and parsed here only, so that every id
    the relay publishes is one it reads back."""

    store: str
    position: int
    kind: MessageKind = "event"
    agency: str | None = None

    @staticmethod
    def of_event(store: str, position: int) -> str:
        """``str(MessageId(store, position))``, without the object (one an event)."""
        return f"{store}:{position}"

    def __str__(self) -> str:
        head = MessageId.of_event(self.store, self.position)
        if self.kind == "share":
            return f"{head}{SHARE_MSG_ID_SUFFIX}"
        if self.kind == "withdrawn":
            return f"{head}{WITHDRAWN_MSG_ID_INFIX}{self.agency}"
        return head

    @classmethod
    def parse(cls, value: str) -> MessageId | None:
        """The id ``value`` names, or None for one the relay never publishes."""
        store, colon, rest = value.partition(":")
        if not store or not colon:
            return None
        position, _, tail = rest.partition(":")
        if not (position.isascii() and position.isdigit()):
            return None
        if not tail:
            return cls(store, int(position))
        if f":{tail}" == SHARE_MSG_ID_SUFFIX:
            return cls(store, int(position), "share")
        kind, _, agency = tail.partition(":")
        if f":{kind}:" == WITHDRAWN_MSG_ID_INFIX and agency:
            return cls(store, int(position), "withdrawn", agency)
        return None


def shares_stream_config(replicas: int = 1, max_age_days: float = 30.0) -> StreamConfig:
    """The ``CBCM_SHARES`` stream: file storage, shares expire after ``max_age_days``
    (``CBCM_SHARES_MAX_AGE_DAYS``). Unlike ``CBCM_EVENTS`` it may be purged or have messages
    deleted (after a key was compromised, say): nothing is rebuilt from it."""
    max_age = max_age_days * 86_400.0
    return StreamConfig(
        name=SHARES_STREAM,
        description="Personal data shared with one agency, sealed to its public key",
        subjects=[SHARE_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=max_age,
        # JetStream refuses a duplicate window longer than max_age
        duplicate_window=min(DUPLICATE_WINDOW, max_age),
    )


async def ensure_shares_stream(
    js: JetStreamContext, replicas: int = 1, max_age_days: float = 30.0
) -> StreamInfo:
    """Create ``CBCM_SHARES``, or bring an existing one to its configuration (idempotent)."""
    wanted = shares_stream_config(replicas, max_age_days)
    try:
        info = await js.stream_info(SHARES_STREAM)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(wanted)
        log.info("nats.stream_created", stream=SHARES_STREAM, replicas=replicas)
        return info
    current = info.config
    if (
        current.subjects == wanted.subjects
        and current.storage == wanted.storage
        and current.num_replicas == wanted.num_replicas
        and current.max_age == wanted.max_age
        and current.duplicate_window == wanted.duplicate_window
    ):
        return info
    info = await js.update_stream(wanted)
    log.info("nats.stream_updated", stream=SHARES_STREAM, replicas=replicas)
    return info


class Publisher(Protocol):
    """What sends a window: ``JetStreamContext`` or ``publisher.AckPublisher``."""

    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Any]: ...


class StreamOfAnotherStore(RuntimeError):
    """The stream's last message was not published from this event store: publishing after
    it would mix two stores' positions. Not retried: an operator must look."""


class _Envelope(msgspec.Struct):
    """What ``_stream_holds_the_store_at`` reads of a published message."""

    id: str


class StreamAheadOfStore(StreamOfAnotherStore):
    """The stream holds positions beyond the event store's head: the store was restored from
    an older backup (or replaced). Events recorded now would take positions the stream
    already holds and be skipped as published: refused until the streams are emptied
    (docs/backup-and-restore.md)."""


class RelayStalled(RuntimeError):
    """The relay published and recorded everything before ``poison`` and cannot go past it."""

    def __init__(self, poison: Poison) -> None:
        super().__init__(
            f"the relay cannot handle the event at position {poison.position} "
            f"({poison.message_type}): {poison.error}"
        )
        self.poison = poison


def _stored_prefix(
    sent: list[tuple[Outgoing, asyncio.Future[Any]]], stored: int
) -> tuple[int, int, BaseException | None]:
    """Of messages sent in order to one stream: the position up to which that stream now
    holds them (from ``stored``, what it held before), how many were acknowledged, and the
    failure that cut the rest (None: none). Every outcome is retrieved, so that none is
    logged as "exception never retrieved"."""
    acked = 0
    failure: BaseException | None = None
    for item, future in sent:
        if failure is None:
            if future.cancelled():
                failure = TimeoutError("no acknowledgement in time")
                continue
            failure = future.exception()
            if failure is None:
                acked += 1
                stored = item.position
        elif future.done() and not future.cancelled():
            future.exception()
    return stored, acked, failure


def _tail_after(
    before: tuple[int, int], sent: list[tuple[Outgoing, asyncio.Future[Any]]], failure: object
) -> tuple[int, int] | None:
    """A stream's tail (last sequence, position held up to) after a window sent ``sent`` to
    it from tail ``before``, as the acknowledgements tell: None when they do not tell it
    for sure (a failure, a duplicate, a sequence not right after the one before), and the
    tail is then read from the stream before the next window."""
    if failure is not None:
        return None
    if not sent:
        return before
    seq = before[0]
    for _, future in sent:
        ack = future.result()
        if getattr(ack, "duplicate", False) or int(ack.seq) != seq + 1:
            return None
        seq += 1
    return seq, sent[-1][0].position


class Relay:
    """Publishes the store's events after the recorded position, in order, exactly once in
    effect. One ``Relay`` per store must run at a time (it owns the ``cbcm-relay`` position).
    """

    def __init__(
        self,
        app: ComplaintMechanism,
        js: JetStreamContext,
        *,
        tracking_name: str = APPLICATION_NAME,
        batch_size: int = 500,
        window: int = 500,
        publish_timeout: float = 5.0,
        max_backoff: float = 5.0,
        data_dir: Place | None = None,
        publisher: Publisher | None = None,
        process: TranslatorProcess | None = None,
    ) -> None:
        """``data_dir``: where the relay's stall is recorded for other processes
        (``services.runtime.worker_status``); None records none (the log and gauge still tell).
        ``publisher``: what sends the windows (``publisher.AckPublisher`` on the connection;
        by default nats-py's ``publish_async``, whose futures never resolve on a refusal).
        ``process``: the process that reads and translates the log (None: this process's
        worker thread does; ``translating.TranslatorProcess``, whose owner closes it)."""
        metrics.register()
        self._app = app
        self._js = js
        self._publisher: Publisher = publisher or js
        self._tracking_name = tracking_name
        self._batch_size = batch_size
        self._window = window
        self._publish_timeout = publish_timeout
        self._max_backoff = max_backoff
        self._translator = Translator(app)
        self._router = self._translator.router
        self._sharer = self._translator.sharer
        self._process = process
        self._tracking: TrackingRecorder | None = None
        self._store_id: str | None = None
        self._recorded: int | None = None
        """Position stored in the tracking table (None until read)."""
        self._acked = 0
        """Last position JetStream acknowledged (may be ahead of ``_recorded``)."""
        self._pending: list[Outgoing] = []
        """Read and translated, not yet acknowledged: kept across failures so that the
        router (fed in log order) never sees an event twice."""
        self._read = 0
        """Last position read from the log (translated into ``_pending`` or published)."""
        self._published = 0
        """Position of the last event translated for publication (an internal record read
        after it moves ``_read``, not this): the next message's previous position."""
        self.failures = 0
        """How many times following the log paused on a NATS or database failure (health)."""
        self._data_dir = data_dir
        self._poison: Poison | None = None
        """The event this relay cannot handle: nothing from it on is read or published."""
        self._stall: Stall | None = None
        """The stall recorded by an earlier relay, until this one goes past its position."""
        self._head_checked = 0.0
        """When the store's head was last queried (monotonic seconds)."""
        self._recorded_at = 0.0
        """When the position was last recorded (monotonic seconds)."""
        self._tails: dict[str, tuple[int, int]] = {}
        """Per stream, its last sequence and the position it holds up to, as this relay's
        own acknowledgements left them; absent: read the stream's tail before the next
        window (at the start, after any failure, duplicate or withdrawal)."""

    # ------------------------------------------------------------------ state

    @property
    def router(self) -> Router:
        return self._router

    @property
    def sharer(self) -> Sharer:
        return self._sharer

    @property
    def store_id(self) -> str | None:
        """The store's id (None until the store holds an event)."""
        return self._store_id

    @property
    def poison(self) -> Poison | None:
        """The event this relay stopped at (None: it has not stalled)."""
        return self._poison

    @property
    def published_position(self) -> int:
        """Every event up to this position is published (the mechanism's own records, never
        published, count as passed); a stalled relay's is the position before its stall."""
        return self._pending[0].position - 1 if self._pending else self._read

    async def recorded_position(self) -> int:
        """The position recorded in the tracking table (0: nothing published yet)."""
        tracking = await self._tracking_recorder()
        recorded = await asyncio.to_thread(tracking.max_tracking_id, self._tracking_name)
        return recorded or 0

    async def _tracking_recorder(self) -> TrackingRecorder:
        if self._tracking is None:
            # Creating it creates its table: a database call.
            self._tracking = await asyncio.to_thread(self._app.factory.tracking_recorder)
        return self._tracking

    async def _start(self) -> None:
        if self._recorded is None:
            # Every query first: one that fails (the store unreachable) leaves nothing half
            # set, and the next attempt starts over.
            recorded = await self.recorded_position()
            head = await asyncio.to_thread(self._app.recorder.max_notification_id)
            metrics.reset_positions()
            metrics.observe_head(head or 0)
            metrics.observe_published(recorded)
            # after the gauges: while NATS cannot be asked, the lag still shows
            resume = await self._resume_point(recorded, head or 0)
            published = await asyncio.to_thread(self._published_up_to, resume)
            if self._data_dir is not None:
                self._stall = await asyncio.to_thread(stall_of, self._data_dir, WORKER)
            self._head_checked = time.monotonic()
            self._recorded = recorded
            self._acked = self._read = resume
            self._published = published
            metrics.observe_published(resume)
            metrics.set_stalled(self._stall is not None)
            log.info("relay.resuming", after_position=resume)
            self._clear_stall_passed()

    async def _resume_point(self, recorded: int, head: int) -> int:
        """Where to read the log from: the recorded position, unless the stream says the
        store or the stream was restored (issue #17). A stream that ends before the recorded
        position lost messages (a new NATS after a disaster): what it lacks is published
        again, from its tail. A stream that holds positions beyond the store's head belongs
        to a newer state of the store than the one restored: refused (``StreamAheadOfStore``),
        since the events recorded now would take those positions and be skipped."""
        if head == 0 and recorded == 0:
            return 0
        if await self._ensure_store_id() is None:
            return recorded
        last_seq, in_stream = await self._stream_tail()
        if in_stream and not await self._stream_holds_the_store_at(last_seq, in_stream):
            raise StreamAheadOfStore(
                f"{STREAM}'s last message (position {in_stream}) is not the event this store "
                f"holds at that position (its head: {head}): the store was restored from an "
                "older backup, and events recorded since would be skipped as published. "
                "Empty the streams first (docs/backup-and-restore.md)"
            )
        if in_stream < recorded:
            log.warning("relay.stream_behind", recorded_position=recorded, in_stream=in_stream)
            return in_stream
        return recorded

    async def _stream_holds_the_store_at(self, last_seq: int, position: int) -> bool:
        """The stream's message ``last_seq`` is this store's event at ``position`` (the same
        event: not one a restore took away, in whose place another was recorded)."""
        raw = await self._js.get_msg(STREAM, last_seq)
        found = await asyncio.to_thread(
            self._app.recorder.select_notifications, position, 1, stop=position
        )
        if not found or found[0].id != position:
            return False
        # The same event: the CloudEvents id is its originator and version (to_cloud_event).
        # Read from the message's envelope alone: nothing decoded, nothing decrypted.
        try:
            sent = msgspec.json.decode(raw.data or b"", type=_Envelope).id
        except msgspec.DecodeError:
            return False
        stored = found[0]
        return sent == f"{stored.originator_id}:{stored.originator_version}"

    def _published_up_to(self, position: int) -> int:
        """The last published event's position at or below ``position`` (0 if none)."""
        while position > 0:
            start = max(1, position - 999)
            found = self._app.recorder.select_notifications(start, 1000, stop=position)
            for n in reversed(found):
                if is_published(self._app.mapper.to_domain_event(n)):
                    return n.id
            position = start - 1
        return 0

    async def _ensure_store_id(self) -> str | None:
        if self._store_id is None:
            self._store_id = await asyncio.to_thread(store_id_of, self._app.recorder)
        return self._store_id

    # ------------------------------------------------------------------ reading

    def _translate(self, notifications: Sequence[Notification]) -> Translated:
        """Stored events -> messages, in this process (a worker thread: it may read the
        store); see ``Translator.translate``."""
        assert self._store_id is not None
        return self._translator.translate(
            notifications, read=self._read, published=self._published, store_id=self._store_id
        )

    async def _accept(self, notifications: Sequence[Notification]) -> None:
        """Translate notifications read after ``_read`` into ``_pending`` (none after a
        poison)."""
        fresh = [n for n in notifications if n.id > self._read]
        if not fresh or self._poison is not None:
            return
        metrics.observe_head(fresh[-1].id)
        await self._ensure_store_id()
        self._take(await asyncio.to_thread(self._translate, fresh))

    def _take(self, done: Translated, transient: BaseException | None = None) -> None:
        """Take what a translation pass made into ``_pending`` (and raise the failure that
        cut it short, if any: what was translated before it is kept, since the router and
        the sharer have seen those events)."""
        self._pending.extend(done.out)
        self._read, self._published = done.read, done.published
        if done.poison is not None and (
            self._poison is None or done.poison.position < self._poison.position
        ):
            self._poison = done.poison
        if self._poison is not None:
            # A read under way when the relay stopped at a poison (a share it could not
            # reseal, a message too large) comes back with what follows the poison: cut it
            # again, or those events would be published and recorded past the one never
            # published, and a relay restarted after the fix would resume beyond it.
            self._cut_at(self._poison)
        metrics.observe_published(self.published_position)
        failure = done.transient or transient
        if failure is not None:
            raise failure

    async def _observe_backlog(self, read: int) -> None:
        """A full batch was read: the store may hold more; query its head (at most once
        every ``HEAD_REFRESH_SECONDS``) so that the lag shows a backlog."""
        if read < self._batch_size:
            return
        now = time.monotonic()
        if now - self._head_checked < HEAD_REFRESH_SECONDS:
            return
        self._head_checked = now
        head = await asyncio.to_thread(self._app.recorder.max_notification_id)
        metrics.observe_head(head or 0)

    async def _read_more(self) -> int:
        if self._poison is not None:
            return 0  # nothing after the event it cannot handle
        if self._process is not None:
            return await self._read_in_process(self._process)
        notifications = await asyncio.to_thread(
            self._app.recorder.select_notifications,
            self._read,
            self._batch_size,
            inclusive_of_start=False,
        )
        await self._observe_backlog(len(notifications))
        await self._accept(notifications)
        return len(notifications)

    async def _read_in_process(self, process: TranslatorProcess) -> int:
        """``_read_more`` by the translating process: it reads the batch after ``_read`` and
        sends back its messages."""
        batch = await asyncio.to_thread(
            process.next_batch, self._read, self._published, self._batch_size
        )
        if batch.count:
            metrics.observe_head(batch.last)
        if batch.store_id is not None and self._store_id is None:
            self._store_id = await self._ensure_store_id()
        transient = None
        if batch.transient is not None:
            transient = TranslatorUnavailable(f"the store is unreachable ({batch.transient})")
        self._take(batch.translated, transient)
        await self._observe_backlog(batch.count)
        return batch.count

    # ------------------------------------------------------------------ publishing

    async def _flush(self) -> int:
        """Publish ``_pending`` in order, then record the position. Raises on a NATS failure,
        leaving what was not acknowledged in ``_pending``."""
        published = 0
        try:
            while self._pending:
                published += await self._publish_window()
        finally:
            await self._record()
            metrics.observe_published(self.published_position)
            self._clear_stall_passed()
        return published

    def _cut_at(self, poison: Poison) -> None:
        """Stop at ``poison``: nothing from its position on is published by this relay (a
        relay restarted with a fix reads it again from the recorded position)."""
        if self._poison is None or poison.position < self._poison.position:
            self._poison = poison
        self._pending = [item for item in self._pending if item.position < poison.position]
        self._read = min(self._read, poison.position - 1)

    def _stalled(self) -> None:
        """Raise ``RelayStalled`` once everything before the poison is published."""
        if self._poison is not None and not self._pending:
            raise RelayStalled(self._poison)

    def _clear_stall_passed(self) -> None:
        """Forget an earlier relay's stall once this one published past its position."""
        stall = self._stall
        if stall is None or self.published_position < stall.position:
            return
        self._stall = None
        if self._data_dir is not None:
            clear_stall(self._data_dir, WORKER)
        metrics.set_stalled(False)
        log.info("relay.stall_cleared", position=stall.position)

    async def _report_stall(self, poison: Poison) -> None:
        """Say once, everywhere an operator looks, where the relay stopped and why."""
        log.error(
            "relay.stalled",
            position=poison.position,
            message_type=poison.message_type,
            error=poison.error,
            published_position=self.published_position,
        )
        metrics.set_stalled(True)
        same = self._stall is not None and (
            (self._stall.position, self._stall.message_type, self._stall.error)
            == (poison.position, poison.message_type, poison.error)
        )
        if self._data_dir is not None and not same:  # a restart keeps the first "since"
            try:
                self._stall = await asyncio.to_thread(
                    record_stall,
                    self._data_dir,
                    WORKER,
                    position=poison.position,
                    message_type=poison.message_type,
                    error=poison.error,
                )
            except OSError as e:  # the log line and the gauge still tell
                log.warning("relay.stall_not_recorded", error=type(e).__name__)

    async def _stream_tail(
        self, stream: str = STREAM, kinds: frozenset[MessageKind] = frozenset({"event"})
    ) -> tuple[int, int]:
        """The stream's last sequence, and the store position of its last message (0: empty).

        Thanks to the ordering guarantee, everything up to that position is in the stream.
        ``kinds``: the messages the relay publishes to ``stream`` (``MessageId``).

        In ``CBCM_SHARES`` the last message may be a withdrawal notice of the erasure at
        position P: it is sent only once every position up to P is done (event and share
        stored), so every share up to P is in the stream (or was withdrawn with its case).
        A share of a later position may have been stored before the notice (same window):
        the last share before the notices, looked for a few messages back, counts too.
        """
        info = await self._js.stream_info(stream)
        last_seq = int(info.state.last_seq)
        if not info.state.messages:
            return last_seq, 0
        try:
            raw = await self._js.get_msg(stream, last_seq)
        except nats.js.errors.NotFoundError:
            if stream == STREAM:
                raise
            # The last share was deleted or expired: what follows is sent again, and
            # JetStream drops what it stored within its duplicate window.
            return last_seq, 0
        msg_id = (raw.headers or {}).get(MSG_ID_HEADER, "")
        parsed = MessageId.parse(msg_id)
        if parsed is None or parsed.store != self._store_id or parsed.kind not in kinds:
            raise StreamOfAnotherStore(
                f"the last message of {stream} (sequence {last_seq}) has Nats-Msg-Id "
                f"{msg_id!r}, not one this relay publishes there from this event store "
                f"({self._store_id}): the stream must hold the messages of one store only"
            )
        if parsed.kind == "withdrawn":
            first_seq = int(info.state.first_seq)
            return last_seq, await self._last_share_before(stream, last_seq, first_seq, parsed)
        return last_seq, parsed.position

    async def _last_share_before(
        self, stream: str, seq: int, first_seq: int, notice: MessageId, lookback: int = 32
    ) -> int:
        """Up to which position ``stream`` holds the shares, its last message being the
        withdrawal ``notice``: the notice's position, or that of the last share stored
        before it (a few messages back at most: notices, and shares purged with their case,
        are skipped)."""
        position = notice.position
        for earlier in range(seq - 1, max(first_seq, seq - lookback) - 1, -1):
            try:
                raw = await self._js.get_msg(stream, earlier)
            except nats.js.errors.NotFoundError:
                continue  # purged with its case
            parsed = MessageId.parse((raw.headers or {}).get(MSG_ID_HEADER, ""))
            if parsed is None or parsed.store != self._store_id:
                break
            position = max(position, parsed.position)
            if parsed.kind == "share":
                break
        return position

    async def _done(
        self, window: list[Outgoing], events_stored: int, shares_stored: int
    ) -> tuple[int, BaseException | None, Poison | None]:
        """How many of the window's first items are done: the event stored, its share too,
        and after an erasure what was shared of the case withdrawn; the failure that stopped
        the count, if transient, or the item it cannot handle."""
        done = 0
        for item in window:
            if item.position > events_stored:
                break
            if item.share is not None and item.position > shares_stored:
                break
            if item.erasure is not None:
                try:
                    await self._withdraw_shares(item)
                except TRANSIENT as e:  # the position waits until the withdrawal is done
                    log.info("relay.withdrawal_deferred", position=item.position)
                    return done, e, None
                except Exception as e:
                    return done, None, Poison(item.position, item.topic, type(e).__name__)
            done += 1
        return done, None, None

    async def _withdraw_shares(self, item: Outgoing) -> None:
        """After a case's erasure is stored: tell every agency that received a share of the
        case, then delete those shares from ``CBCM_SHARES`` (idempotent: a relay that
        restarts does it again; a notice re-sent within the duplicate window is dropped)."""
        self._tails.pop(SHARES_STREAM, None)  # notices and purges move its tail
        event = item.erasure
        case_id = str(event.originator_id)
        filters = [record_shares("case", name, case_id) for name in SHARING_EVENTS]
        recipients: set[str] = set()
        for subject_filter in filters:
            try:
                info = await self._js.stream_info(SHARES_STREAM, subjects_filter=subject_filter)
            except nats.js.errors.NotFoundError:
                return  # no share stream: nothing was ever shared
            recipients.update(s.split(".")[3] for s in (info.state.subjects or {}))
        source = f"urn:cbcm:store:{self._store_id}"
        for recipient in sorted(recipients):
            subject, payload = withdrawal_notice(
                event, recipient=recipient, position=item.position, source=source
            )
            await self._js.publish(
                subject,
                payload,
                stream=SHARES_STREAM,
                headers={
                    MSG_ID_HEADER: str(
                        MessageId(self._store_id or "", item.position, "withdrawn", recipient)
                    )
                },
                timeout=self._publish_timeout,
            )
        for subject_filter in filters:
            await self._js.purge_stream(SHARES_STREAM, subject=subject_filter)
        if recipients:
            log.info("relay.shares_withdrawn", position=item.position, agencies=sorted(recipients))

    def _reseal_shares(self) -> Poison | None:
        """Seal the window's shares again from the store as it is now (in a worker thread):
        between translation and sending, the case's personal data may have been erased.
        The first share that cannot be sealed again is returned (not raised)."""
        assert self._store_id is not None
        source = f"urn:cbcm:store:{self._store_id}"
        for i, item in enumerate(self._pending[: self._window]):
            if item.share is not None and item.step is not None:
                try:
                    share = self._sharer.reseal(item.share, item.step, item.position, source)
                except TRANSIENT:
                    raise
                except Exception as e:
                    return Poison(item.position, item.topic, type(e).__name__)
                self._pending[i] = item._replace(share=share)
        return None

    async def _send(
        self,
        window: list[Outgoing],
        events: tuple[int, int, list[tuple[Outgoing, asyncio.Future[Any]]]],
        shares: tuple[int, int, list[tuple[Outgoing, asyncio.Future[Any]]]],
    ) -> Poison | None:
        """Send the window's events and shares that their streams do not hold yet; each
        stream is (last sequence, position it holds up to, the sent list to append to).
        Stops at a message too large to ever be published, returned as a poison."""
        assert self._store_id is not None
        last_seq, events_in_stream, sent_events = events
        shares_seq, shares_in_stream, sent_shares = shares
        for item in window:
            try:
                if item.position > events_in_stream:
                    headers = {
                        MSG_ID_HEADER: MessageId.of_event(self._store_id, item.position),
                        PREVIOUS_POSITION_HEADER: str(item.previous),
                        EXPECTED_LAST_SEQUENCE_HEADER: str(last_seq + len(sent_events)),
                    }
                    future = await self._publisher.publish_async(
                        item.subject, item.payload, stream=STREAM, headers=headers
                    )
                    sent_events.append((item, future))
                if item.share is not None and item.position > shares_in_stream:
                    headers = {
                        MSG_ID_HEADER: str(MessageId(self._store_id, item.position, "share")),
                        EXPECTED_LAST_SEQUENCE_HEADER: str(shares_seq + len(sent_shares)),
                    }
                    future = await self._publisher.publish_async(
                        item.share.subject,
                        item.share.payload,
                        stream=SHARES_STREAM,
                        headers=headers,
                    )
                    sent_shares.append((item, future))
            except nats.errors.MaxPayloadError as e:
                # Never publishable as it is, however often it is sent again: a stall.
                return Poison(item.position, item.topic, type(e).__name__)
        return None

    async def _tails_for(self, window: list[Outgoing]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The tails of ``CBCM_EVENTS`` and (if the window has shares) ``CBCM_SHARES``: as
        this relay's acknowledgements left them, else read from the streams."""
        events_tail = self._tails.pop(STREAM, None)
        if events_tail is None:
            events_tail = await self._stream_tail()
        shares_tail: tuple[int, int] | None = (0, 0)
        if any(item.share is not None for item in window):
            shares_tail = self._tails.pop(SHARES_STREAM, None)
            if shares_tail is None:
                shares_tail = await self._stream_tail(
                    SHARES_STREAM, frozenset({"share", "withdrawn"})
                )
        assert shares_tail is not None
        return events_tail, shares_tail

    def _keep_tail(self, stream: str, tail: tuple[int, int] | None) -> None:
        """Remember ``stream``'s tail for the next window (None: read it then)."""
        if tail is not None:
            self._tails[stream] = tail

    async def _publish_window(self) -> int:
        """Send up to ``window`` pending messages without waiting between them; how many
        events JetStream newly stored, from the first, in order.

        Pipelining must not let the stream skip or reorder: every message carries
        ``Nats-Expected-Last-Sequence`` = the stream's last sequence + its index in the window.
        JetStream stores a message only if the stream ends exactly where expected, so a
        message is stored only after every message before it in the window was (a lost or
        refused one makes all that follow it fail, and they are sent again).

        Before each window the stream's tail says up to which position it already holds this
        store's events: those are not sent again (an acknowledgement lost in an outage, a
        lost or rewound tracking position). JetStream checks the expected sequence before
        the message id, so re-sending them would fail rather than be dropped as duplicates.

        Shares go to ``CBCM_SHARES`` in the same way, each right after its event, with its
        own expected sequences and tail. A pending position is done, and leaves the window,
        only when its event and its share (if any) are both stored; an event stored whose
        share is not stays pending, and only its share is sent again.
        """
        assert self._store_id is not None
        if any(item.share is not None for item in self._pending[: self._window]):
            unsealable = await asyncio.to_thread(self._reseal_shares)
            if unsealable is not None:
                self._cut_at(unsealable)
        window = self._pending[: self._window]
        if not window:
            return 0
        events_tail, shares_tail = await self._tails_for(window)
        last_seq, events_in_stream = events_tail
        shares_seq, shares_in_stream = shares_tail
        skipped = sum(1 for item in window if item.position <= events_in_stream)
        if skipped:
            log.info(
                "relay.already_in_stream",
                up_to_position=window[skipped - 1].position,
                skipped=skipped,
            )
        events: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        shares: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        started = time.perf_counter()
        try:
            too_large = await self._send(
                window, (last_seq, events_in_stream, events), (shares_seq, shares_in_stream, shares)
            )
            futures = [f for _, f in events] + [f for _, f in shares]
            if futures:
                await asyncio.wait(futures, timeout=self._publish_timeout)
                metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        finally:
            for _, future in events + shares:
                if not future.done():
                    future.cancel()
        events_stored, acked, event_failure = _stored_prefix(events, events_in_stream)
        shares_stored, shares_acked, share_failure = _stored_prefix(shares, shares_in_stream)
        if too_large is not None:  # not stored: nothing from it on counts as done
            events_stored = min(events_stored, too_large.position - 1)
            shares_stored = min(shares_stored, too_large.position - 1)
        if too_large is None:
            self._keep_tail(STREAM, _tail_after(events_tail, events, event_failure))
            if any(item.share is not None for item in window):  # else its tail was not taken
                self._keep_tail(SHARES_STREAM, _tail_after(shares_tail, shares, share_failure))
        done, withdrawal_failure, unhandled = await self._done(window, events_stored, shares_stored)
        event_failure = event_failure or withdrawal_failure
        if done:
            self._acked = window[done - 1].position
            del self._pending[:done]
        for poison in (too_large, unhandled):
            if poison is not None:
                self._cut_at(poison)
        failure = event_failure or share_failure
        if failure is not None:
            log.info(
                "relay.window_cut",
                acked=acked,
                sent=len(events),
                shares_acked=shares_acked,
                shares_sent=len(shares),
                error=type(failure).__name__,
            )
            if done == 0 and acked == 0 and shares_acked == 0:
                # Not even the first: NATS is unreachable, or another writer appended to a
                # stream since its tail was read. The caller backs off and tries again.
                raise failure
        return acked

    async def _record(self) -> None:
        assert self._recorded is not None
        if self._acked <= self._recorded:
            return
        position = self._acked
        tracking = await self._tracking_recorder()
        # Single-row tracking refuses a position that does not move forward: only advance.
        try:
            await asyncio.to_thread(
                tracking.insert_tracking, Tracking(self._tracking_name, position)
            )
        except IntegrityError:
            # Refused: the store holds this position or a later one. An insert can commit
            # unheard (its wait cancelled while the thread went on, as when leadership is
            # lost; a connection dropped after the commit), and this is it again. Taken as a
            # failure, it was retried for good: a cancelled relay never stopped. The store
            # says what is recorded; only a position it does not hold is a failure.
            held = await asyncio.to_thread(tracking.max_tracking_id, self._tracking_name)
            if held is None or held < position:
                raise
        self._recorded = position
        self._recorded_at = time.monotonic()

    async def publish_pending(self) -> int:
        """One pass: publish every event after the recorded position; how many were published.

        Raises a NATS error if a publish fails (nothing after the failed event is sent, the
        position covers only what was acknowledged; call again to resume), and
        ``RelayStalled`` once everything before an event it cannot handle is published.
        """
        await self._start()
        return await self._pipeline(self._read_more)

    async def _pipeline(
        self, read: Callable[[], Awaitable[int]], stop: asyncio.Event | None = None
    ) -> int:
        """Publish what ``read`` brings (it reads the next batch into ``_pending`` and says
        how many notifications it read, 0: none for now), reading ahead while a window's
        acknowledgements are awaited; how many events were published. Returns when ``read``
        finds nothing and everything read is published, or once ``stop`` is set.

        The overlap is the whole pipeline: one read (the store's rows, decoding, routing,
        sealing: in a worker thread) is under way while the loop sends a window and gathers
        its acknowledgements, so that neither waits for the other. The read is never
        cancelled: the router and the share keys are fed each event once, in log order, so
        what a read translated is always taken into ``_pending``. The position is recorded
        when everything read is published and otherwise at most every ``RECORD_SECONDS``,
        never past an event not acknowledged (``_acked``).
        """
        published = 0
        reading: asyncio.Future[int] | None = None
        try:
            while stop is None or not stop.is_set():
                if reading is None and self._poison is None and len(self._pending) <= self._window:
                    reading = asyncio.ensure_future(read())
                if self._pending:
                    published += await self._publish_window()
                    if time.monotonic() - self._recorded_at >= RECORD_SECONDS:
                        await self._record()
                    metrics.observe_published(self.published_position)
                    self._clear_stall_passed()
                    continue
                # Everything read is published: the position is recorded before waiting.
                await self._record()
                metrics.observe_published(self.published_position)
                self._clear_stall_passed()
                self._stalled()
                if reading is None:
                    break
                got = await asyncio.shield(reading)
                reading = None
                if got == 0 and not self._pending:
                    self._stalled()
                    break
        finally:
            if reading is not None and not reading.done():
                # what it read goes into _pending (see above); its failure, if any, is the
                # next pass's to meet
                with contextlib.suppress(Exception):
                    await asyncio.shield(reading)
            if reading is not None and reading.done() and not reading.cancelled():
                reading.exception()  # retrieved: a failed read is read again next pass
            await self._record()
            metrics.observe_published(self.published_position)
            self._clear_stall_passed()
        return published

    # ------------------------------------------------------------------ following

    async def run(self, stop: asyncio.Event, poll_interval: float = 0.025) -> None:
        """Follow the log until ``stop`` is set; NATS or database failures pause and retry.

        At an event it cannot handle, it publishes everything before it, reports the stall
        once and waits for ``stop``, alive (a restart loop would only repeat the error).
        """
        backoff = Backoff(0.1, self._max_backoff)
        while not stop.is_set():
            try:
                await self._start()
                if self._subscription_supported():
                    await self._follow_notify(stop, NOTIFY_FALLBACK_SECONDS)
                else:
                    await self._follow_polling(stop, poll_interval)
                backoff.reset()
            except RelayStalled as e:
                await self._report_stall(e.poison)
                await stop.wait()
            except TRANSIENT as e:
                self.failures += 1
                log.warning(
                    "relay.paused",
                    error=type(e).__name__,
                    acked_position=self._acked,
                    retry_in=round(backoff.delay, 2),
                )
                await backoff.wait(stop)
            except Exception as e:
                # Only the type: a traceback's locals could hold events' personal data.
                log.error("relay.failed", error=type(e).__name__, acked_position=self._acked)
                raise
        with contextlib.suppress(*TRANSIENT):
            await self._record()
        log.info("relay.stopped", recorded_position=self._recorded)

    def _subscription_supported(self) -> bool:
        # The SQLite store has no notifications to listen to: it is polled.
        return isinstance(self._app.recorder, PostgresApplicationRecorder)

    async def _follow_polling(self, stop: asyncio.Event, poll_interval: float) -> None:
        # On SQLite the poll interval is most of the end-to-end lag (half of it at the median,
        # measured in tests/bench/test_event_flow.py); one indexed SELECT per poll is cheap.
        while not stop.is_set():
            if await self._pipeline(self._read_more, stop) == 0:
                await wait_for_stop(stop, poll_interval)

    async def _follow_notify(self, stop: asyncio.Event, fallback: float) -> None:
        """PostgreSQL: follow the log with ``LISTEN`` on the recorder's channel as a doorbell
        (the library's recorder sends ``NOTIFY`` on it with every write), and read it as on
        SQLite, in large batches from the position read (``_read_more``).

        Not the library's subscription: it hands notifications over one at a time (a
        thread-to-loop hop each, the relay's backlog rate halved) and selects every row a
        second time for itself. The bell is cleared before each pass, so a write committed
        during a pass rings for the next one; a pass also starts every ``fallback`` seconds
        without a ring (a notification lost with its connection costs that long at most).
        """
        recorder = self._app.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        loop = asyncio.get_running_loop()
        bell = asyncio.Event()
        listening = threading.Event()
        stopped = threading.Event()
        failed: list[BaseException] = []

        def ring() -> None:
            bell.set()

        def listen() -> None:
            try:
                with recorder.datastore.get_connection() as conn:
                    conn.execute(SQL("LISTEN {0}").format(Identifier(recorder.channel_name)))
                    listening.set()
                    while not stopped.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            loop.call_soon_threadsafe(ring)
            except BaseException as e:  # handed to the loop, which decides
                failed.append(e)
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(ring)
            finally:
                listening.set()

        thread = threading.Thread(target=listen, name="cbcm-relay-listen", daemon=True)
        thread.start()
        try:
            # listening before the first read: nothing written after it goes unrung
            await asyncio.to_thread(listening.wait)
            while not stop.is_set():
                bell.clear()
                if failed:
                    raise failed[0]
                if await self._pipeline(self._read_more, stop) == 0:
                    await _wait_for_any(bell, stop, fallback)
        finally:
            stopped.set()
            await asyncio.to_thread(thread.join, 5.0)


async def _wait_for_any(bell: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Until ``bell`` or ``stop`` is set, or ``seconds`` passed."""
    waits = {asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


NATS_QUIET_SECONDS = 2.0
"""How long after the server closed the connection its failed reconnections stay quiet: a
stack stopping cleanly may stop nats-server a moment before the relay."""


class _NatsErrors:
    """nats-py's error and reconnection callbacks for the relay.

    The server closing the connection (``UnexpectedEOF``) is a restart or a stop, not yet an
    outage: one info line. Reconnections failing past ``NATS_QUIET_SECONDS`` are the outage,
    warned of at most every 10 s (``quiet_errors``); once the relay is stopping, nothing
    is worth more than a debug line.
    """

    def __init__(self, stop: asyncio.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self._stop = stop
        self._clock = clock
        self._warn = quiet_errors("relay.nats_unreachable")
        self._down_since: float | None = None

    async def error(self, exc: Exception) -> None:
        now = self._clock()
        if self._stop.is_set():
            log.debug("relay.nats_error_while_stopping", error=type(exc).__name__)
        elif isinstance(exc, nats.errors.UnexpectedEOF):
            self._down_since = now
            log.info("relay.nats_disconnected", error=type(exc).__name__)
        elif self._down_since is not None and now - self._down_since < NATS_QUIET_SECONDS:
            log.debug("relay.nats_reconnecting", error=type(exc).__name__)
        else:
            await self._warn(exc)

    async def reconnected(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.info("relay.nats_reconnected")


async def connect_nats(
    url: str,
    stop: asyncio.Event,
    max_backoff: float = 5.0,
    *,
    options: dict[str, Any] | None = None,
) -> NatsClient:
    """Connect, waiting (with backoff) while the server is unreachable; reconnects forever.

    ``url`` may name several servers, comma-separated (a cluster's nodes): the client fails
    over between them."""
    backoff = Backoff(0.1, max_backoff)
    callbacks = _NatsErrors(stop)
    while True:
        try:
            connected = await unless_stopped(
                nats.connect(
                    nats_servers(url),
                    name="cbcm-relay",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    # nats-py retries the first connection itself and never raises here, so
                    # its error callback is where an unreachable server shows, and only the
                    # stop event ends the wait (a SIGTERM was ignored for minutes).
                    error_cb=callbacks.error,
                    reconnected_cb=callbacks.reconnected,
                    **(options or {}),  # credentials and TLS (services.nats.client)
                ),
                stop,
            )
            if connected is None:
                raise nats.errors.ConnectionClosedError
            return connected
        except (nats.errors.Error, OSError, TimeoutError) as e:
            if stop.is_set():
                raise
            log.warning("relay.nats_unreachable", error=type(e).__name__, retry_in=backoff.delay)
            await backoff.wait(stop)


async def _open_store(settings: Settings, stop: asyncio.Event) -> ComplaintMechanism | None:
    """The application on the configured store, waiting while the database is unreachable
    (None: asked to stop first)."""
    backoff = Backoff(0.1, 5.0)
    while True:
        try:
            return await asyncio.to_thread(complaint_mechanism, settings)
        except EventStoreUnavailable as e:
            log.warning("relay.store_unavailable", error=type(e).__name__, retry_in=backoff.delay)
            await backoff.wait(stop)
            if stop.is_set():
                return None


async def _ensure_streams(js: JetStreamContext, settings: Settings, stop: asyncio.Event) -> None:
    """Both streams as configured, waiting while JetStream is starting or unreachable."""
    replicas = nats_replicas(settings)
    backoff = Backoff(0.1, 5.0)
    while not stop.is_set():
        try:
            await ensure_stream(js, replicas)
            await ensure_shares_stream(js, replicas, settings.shares_max_age_days)
            break
        except nats.js.errors.APIError as e:
            # JetStream starting (503) is worth waiting for; a refused configuration
            # (say, an existing stream on memory storage) is for an operator.
            if not isinstance(e, nats.js.errors.ServiceUnavailableError):
                log.error("relay.stream_refused", error=type(e).__name__, code=e.err_code)
                raise
            log.warning("relay.stream_unavailable", error=type(e).__name__)
            await backoff.wait(stop)
        except TRANSIENT as e:
            log.warning("relay.stream_unavailable", error=type(e).__name__)
            await backoff.wait(stop)


def _translator_process(settings: Settings) -> TranslatorProcess | None:
    """A started translating process, if the relay translates in one (the setting)."""
    if not settings.relay_translator_process:
        return None
    process = TranslatorProcess(settings)
    process.start()
    return process


async def run_relay(settings: Settings, stop: asyncio.Event, nats_url: str) -> None:
    """``cbcm relay``: follow the event store and publish until ``stop`` is set, while this
    relay holds the store's leader lock (``services.relay.leader``); standby until then.
    ``nats_url`` may name several servers, comma-separated."""
    metrics.register()
    # A translating process per term (each term's router and sharer start afresh), started
    # ahead of it: it opens the store while this process connects and waits for the lock.
    process = await asyncio.to_thread(_translator_process, settings)
    app = await _open_store(settings, stop)
    if app is None:
        if process is not None:
            await asyncio.to_thread(process.close)
        return
    nc: NatsClient | None = None
    try:
        try:
            nc = await connect_nats(nats_url, stop, options=nats_connect_options(settings, "relay"))
        except (nats.errors.Error, OSError, TimeoutError):
            return  # asked to stop before NATS was ever reachable
        js = nc.jetstream()
        publisher = AckPublisher(nc)
        status = status_place(settings)  # where a stall is recorded (ADR 27)
        await _ensure_streams(js, settings, stop)
        started = time.monotonic()
        # Issue #7, ADR 9: only the holder of the store's leader lock publishes; a standby
        # waits for it, and each term starts a fresh Relay from the recorded position.
        lock = leader_lock(settings, APPLICATION_NAME)
        metrics.set_leader(False)
        while await wait_for_leadership(lock, stop, settings.relay_leader_poll_seconds):
            metrics.set_leader(True)
            relay = Relay(app, js, data_dir=status, publisher=publisher, process=process)
            try:
                lost = await lead(
                    lock, functools.partial(relay.run, stop), settings.relay_leader_check_seconds
                )
            finally:
                metrics.set_leader(False)
                if process is not None:
                    await asyncio.to_thread(process.close)
            if not lost:
                break
            process = await asyncio.to_thread(_translator_process, settings)
        log.info("relay.exit", seconds=round(time.monotonic() - started, 1))
    finally:
        if process is not None:
            await asyncio.to_thread(process.close)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await asyncio.to_thread(app.close)
