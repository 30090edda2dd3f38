"""Run a projection from the ``CBCM_EVENTS`` stream into its SQLite read model (ADR 3).

Live (``run_projector``): a durable pull consumer ``cbcm-<name>`` (filter ``cbcm.v1.evt.>``,
explicit ack). Each fetched batch is decoded, applied in ONE SQLite transaction together
with the new position, committed, and only then acked. A message at or below the recorded
position is a redelivery: acked and skipped. A message beyond recorded + 1 is a gap: what
came before it is committed, the consumer is re-created once to start right after the
position (a message whose ack was lost comes back only after ``ack_wait``, so later ones can
overtake it), and if the gap persists the projector stops with ``PositionGap`` rather than
silently skip an event.

A stall (issue #12, ADR 10): a message the projection cannot apply (``apply`` or
``end_batch`` raises anything but a failure of the machine under it: disk, memory, a locked
file), or a message this version of the contracts cannot read (an unknown type: upgrade the
projector before the publisher), stops the projector at that message. Everything before it
is committed (the batch is applied again one message at a time to find it); then the
projector says so once (log line ``projector.stalled`` with the position, the message's type
and the error's type, never the payload nor the error's text; its stall record in
``services.runtime.worker_status``; the ``cbcm_projector_stalled`` gauge), hands the message back
and waits, alive, for its stop: no exit, no restart loop, nothing skipped. Restarted with a
fix deployed, it goes on from that position and clears the record once past it.

The durable consumer is created with "deliver all" on a fresh read model. When the
projector starts again it checks the consumer: if a killed run left messages delivered but
unacknowledged (JetStream would hold them back until ``ack_wait`` and deliver later ones
first, which would look like a gap), or the consumer does not stand where the read model
does, it is re-created to start right after the recorded position. The read model's
position is the truth; the consumer's state is only a cursor.

When NATS is down, or the stream does not exist yet (the relay creates it), the projector
retries with a bounded back-off until ``stop`` is set. It says so at once at info level
(``projector.nats_unavailable``, ``projector.stream_missing``), warns (the same event) only
when it lasts ``NATS_GRACE`` seconds, once, and says ``projector.nats_back`` after a warning
(``NatsHealth``). A fetch that finds nothing is not an outage: nats-py 2.16 ends it with
either ``TimeoutError`` (its own or the builtin one) or an empty list, and the projector
just fetches again, silently. Once ``stop`` is set, the client's errors (the server closing
first on a clean stop of the stack: ``UnexpectedEOF``) are debug lines only. Metrics:
``services.projector.metrics``.

Rebuild (``rebuild``): drop the tables, replay the whole stream up to its last message at
the start through a pull consumer of the rebuild's own (``services.projector.replay``: one
batch asked for at a time, so a slow applying holds the server back), committing batch by
batch with the position (so an interrupted rebuild leaves a consistent prefix the live
projector can continue). Into PostgreSQL the batches go into a scratch SQLite file of the
data dir, copied in at the end in one transaction (``services.projector.staging``): an
interrupted rebuild leaves the read model as it was. Stop the live projector of that read
model while rebuilding: a rebuild refuses a read model whose lease a projector holds.

Several instances (ADR 9, "Projectors sharing a consumer"): any number of ``cbcm project
NAME`` processes may run on one read model and its durable consumer. One of them is active:
the one holding the read model's lease, an exclusive ``flock`` on ``<read model>.lease``;
the others are standbys that try to take it every ``LEASE_POLL`` seconds and touch neither
the read model nor the consumer meanwhile. The kernel releases the lock the moment its
holder exits, however it exits (SIGKILL included), so a standby takes over within a poll,
with no expiry to wait out and no clock to trust; it then starts as a restarted projector
does (the consumer re-created from the read model's position if a killed run left
messages pending). Exactly-once does not rest on the lease: every batch still checks, in
its own transaction, that it follows the recorded position.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import psycopg
import psycopg.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.catalogue import UnknownMessageType, decode_message
from contracts.envelope import CloudEvent
from contracts.subjects import EVENT_SUBJECTS, PREVIOUS_POSITION_HEADER, STREAM
from projections.base import (
    Projection,
    ReadModelDb,
    create_position_table,
    drop_position_table,
    get_position,
    get_schema_version,
    set_position,
    set_schema_version,
)
from services.nats.client import (
    nats_connect_options,
    nats_servers,
    quiet_errors,
    unless_stopped,
    wait_for_stop,
)
from services.projector.metrics import ProjectorMetrics
from services.projector.replay import PullReader, ReadFailed, rebuild_consumer
from services.projector.staging import StagingError, check_alike, copy_stage, stage
from services.projector.storage import (
    Lease,
    PostgresReadModel,
    PostgresReadModelDb,
    ReadModelLease,
    ReadModelStore,
    SqliteReadModel,
    as_store,
    begin_write,
    close_db,
    data_dir_of,
    lease_path,
    pipelined,
    read_model_path,
    rollback,
    status_place_of,
)
from services.runtime.backoff import Backoff
from services.runtime.threads import finished_in_thread
from services.runtime.worker_status import Place, Stall, clear_stall, record_stall, stall_of
from services.settings import Settings

log = structlog.get_logger(__name__)

# what callers found here before the stores moved to services.projector.storage
__reexported__ = (ReadModelLease, data_dir_of, lease_path, read_model_path)

ACK_WAIT = 30.0
"""Seconds JetStream waits for an ack before redelivering. A batch is applied in
milliseconds; a redelivery is harmless anyway (skipped by position)."""
FETCH_TIMEOUT = 1.0
"""Longest wait for a batch; also how soon the runner notices ``stop``."""
MAX_BACKOFF = 5.0
LEASE_POLL = 0.25
"""Seconds between a standby's attempts to take the read model's lease: the longest a
takeover waits once the active instance is gone."""


OnCommit = Callable[[ReadModelDb, int], Awaitable[None] | None]


class ProjectorError(RuntimeError):
    """The projector cannot go on without someone looking (never retried)."""


class PositionGap(ProjectorError):
    """A message came beyond the next expected position: an event would be skipped."""


class ReadModelInUse(ProjectorError):
    """Another process holds the read model's lease (a rebuild refuses to write under it)."""


def durable_name(projection: Projection) -> str:
    return f"cbcm-{projection.name}"


def worker_name(name: str) -> str:
    """The projector of read model ``name`` in the workers' stall records
    (``services.runtime.worker_status``): ``project-<name>``, as its NATS user and its log
    service."""
    return f"project-{name}"


def read_position(where: Path | ReadModelStore) -> int:
    """The position a read model has applied (0 if it does not exist yet)."""
    return as_store(where).position() or 0


def open_projection(projection: Projection, where: Path | ReadModelStore) -> ReadModelDb:
    """Open the read model of a SQLite file (a test's, or a copy) and make sure its tables
    and position row exist. A projector opens its store with ``open_store``."""
    store = as_store(where)
    lease = store.lease()
    if isinstance(store, SqliteReadModel):
        return prepare(projection, store.writer(lease))
    if not lease.try_take():
        raise ReadModelInUse(f"{store.where} is kept up to date by {lease.holder()}")
    return prepare(projection, store.writer(lease))


def prepare(projection: Projection, db: ReadModelDb) -> ReadModelDb:
    """Make sure the read model's tables and position row exist, at the projection's schema
    version: a read model made with another version is dropped and starts again from
    position 0 (it is replayed from the stream; ADR 16)."""
    begin_write_new(db)
    try:
        found = get_schema_version(db)
        if found is not None and found != projection.schema_version:
            log.warning(
                "projector.schema_changed",
                projection=projection.name,
                found=found,
                version=projection.schema_version,
            )
            projection.drop_tables(db)
            drop_position_table(db)
        projection.create_tables(db)
        create_position_table(db)
        set_schema_version(db, projection.schema_version)
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        close_db(db)
        raise
    return db


def begin_write_new(db: ReadModelDb) -> None:
    """A write transaction on a read model whose position table may not exist yet."""
    db.execute("BEGIN IMMEDIATE")


def reset_projection(projection: Projection, db: ReadModelDb) -> None:
    """Drop and re-create the read model's tables, position 0, in one transaction."""
    begin_write_new(db)
    try:
        projection.drop_tables(db)
        drop_position_table(db)
        projection.create_tables(db)
        create_position_table(db)
        set_schema_version(db, projection.schema_version)
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


# ------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Poison:
    """The message a batch stopped at because the projection cannot take it: its index in
    the batch, its position, its type and the error's type (words safe to log and show:
    never the payload, never the error's text)."""

    index: int
    position: int
    message_type: str
    error: str


@dataclass(frozen=True)
class Undecodable:
    """A stream message this version of the contracts cannot read: its position and type as
    far as they can be read (``position`` ``None``: not at all), and why."""

    position: int | None
    message_type: str
    error: str


Item = tuple[int, CloudEvent[Any]] | Undecodable
"""One message of a batch: (position, message), or one that could not be decoded."""


@dataclass(frozen=True)
class Applied:
    """What one batch did: messages applied, redeliveries skipped, the position after, and
    where a gap stopped it (``gap``: the index of the first message not taken, and why), or
    the message it stalled at (``stall``)."""

    applied: int
    skipped: int
    position: int
    gap: tuple[int, str] | None = None
    stall: Poison | None = None

    @property
    def taken(self) -> int:
        """How many messages of the batch were applied or skipped (may be acked)."""
        return self.applied + self.skipped


def decode(raw: bytes, stream_seq: int | None = None) -> tuple[int, CloudEvent[Any]]:
    """A stream message's position and contract message, or ``ProjectorError``."""
    try:
        message = decode_message(raw)
    except UnknownMessageType as exc:
        raise ProjectorError(
            f"stream sequence {stream_seq}: {exc}; upgrade the projector's contracts"
        ) from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProjectorError(f"stream sequence {stream_seq}: undecodable message: {exc}") from exc
    if not isinstance(message.position, int):
        raise ProjectorError(f"stream sequence {stream_seq}: message {message.id} has no position")
    return message.position, message


class _Head(msgspec.Struct):
    position: int | None = None
    type: str | None = None


_SAFE_TYPE = re.compile(r"[A-Za-z0-9._:-]{1,200}")
"""What a message type looks like; anything else is not repeated in logs or records."""


def read_item(raw: bytes, stream_seq: int | None = None) -> Item:
    """``decode``, or what can be read of a message that cannot be decoded (a stall, not a
    crash: the projector stops at it)."""
    try:
        return decode(raw, stream_seq)
    except ProjectorError as exc:
        cause = exc.__cause__
        error = type(cause).__name__ if cause is not None else "MissingPosition"
    try:
        head = msgspec.json.decode(raw, type=_Head)
        position, kind = head.position, head.type
    except (msgspec.DecodeError, msgspec.ValidationError):
        position, kind = None, None
    safe = kind if kind is not None and _SAFE_TYPE.fullmatch(kind) else "unreadable"
    return Undecodable(position, safe, error)


def previous_positions(msgs: list[Msg]) -> dict[int, int]:
    """Position -> the position published just before it, from the relay's header.

    Store positions are not always contiguous (PostgreSQL hands out a sequence number to a
    write that then fails), so "the next message" is the one whose predecessor is the
    recorded position, not recorded + 1. A message that cannot be read names none.
    """
    found: dict[int, int] = {}
    for msg in msgs:
        header = (msg.headers or {}).get(PREVIOUS_POSITION_HEADER)
        if header is None:
            continue
        try:
            position = msgspec.json.decode(msg.data, type=_Position).position
            previous = int(header)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            continue
        if position is not None:
            found[position] = previous
    return found


_MACHINE_ERRORS = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
    }
)
"""SQLite's primary result codes that tell of the disk, memory or another process, not of
the message being applied."""


_PG_MACHINE_ERRORS = (
    psycopg.OperationalError,  # the session lost, the server shutting down, a deadlock...
    psycopg.InterfaceError,
    psycopg.InternalError,
    psycopg.errors.InsufficientResources,  # disk full, out of memory, too many connections
)
"""PostgreSQL's errors that tell of the server, the network or another session, not of the
message being applied."""


def is_machine_error(error: BaseException) -> bool:
    """Whether ``error`` is a failure of the machine under the projection (the process
    exits and is restarted), rather than one of applying this message (a stall)."""
    if not isinstance(error, Exception) or isinstance(error, OSError | MemoryError):
        return True
    if isinstance(error, _PG_MACHINE_ERRORS):
        return True
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _MACHINE_ERRORS
    return False


def apply_batch(
    projection: Projection,
    db: ReadModelDb,
    messages: Sequence[Item],
    previous: Mapping[int, int] | None = None,
) -> Applied:
    """Apply ``messages`` (position, message) in one transaction with the new position.

    Messages at or below the recorded position are skipped. A message whose predecessor
    (``previous[position]``, else ``position - 1``) is not the recorded position means a
    gap: it stops there, what came before is committed, and ``gap`` says where and why (the
    caller raises ``PositionGap``).

    A message that cannot be decoded, or whose ``apply`` (or the batch's ``end_batch``)
    raises, is a stall: everything before it is committed and ``stall`` names it (the
    batch is rolled back and applied again one message at a time to find it, so the
    position ends exactly before it). A failure of the machine (``is_machine_error``) rolls
    the batch back and is raised.
    """
    try:
        return _apply(projection, db, messages, previous or {})
    except Exception as exc:
        if is_machine_error(exc):
            raise
    _discard_deferred(projection, db)
    return _apply_one_by_one(projection, db, messages, previous or {})


def _gap(projection: Projection, position: int, at: int) -> str:
    return (
        f"read model {projection.name} is at position {position} and received "
        f"position {at}: the positions between are missing from the stream"
    )


def _apply(
    projection: Projection,
    db: ReadModelDb,
    messages: Sequence[Item],
    previous: Mapping[int, int],
    *,
    start: int = 0,
    limit: int | None = None,
) -> Applied:
    """Apply ``messages[start:]`` (at most ``limit`` of them) in one transaction with the
    new position; raise what ``apply`` or ``end_batch`` raises, nothing kept."""
    begin_write(db)
    gap: tuple[int, str] | None = None
    stall: Poison | None = None
    try:
        with pipelined(db):
            position, applied, skipped, gap, stall = _apply_in_transaction(
                projection, db, messages, previous, start=start, limit=limit
            )
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return Applied(applied, skipped, position, gap, stall)


def _apply_in_transaction(
    projection: Projection,
    db: ReadModelDb,
    messages: Sequence[Item],
    previous: Mapping[int, int],
    *,
    start: int,
    limit: int | None,
) -> tuple[int, int, int, tuple[int, str] | None, Poison | None]:
    """``_apply``'s work inside its transaction: (position, applied, skipped, gap, stall)."""
    gap: tuple[int, str] | None = None
    stall: Poison | None = None
    position = get_position(db)
    applied = skipped = 0
    for index in range(start, len(messages)):
        if applied == limit:
            break
        item = messages[index]
        if isinstance(item, Undecodable):
            if item.position is not None and item.position <= position:
                skipped += 1
                continue
            if (
                item.position is not None
                and previous.get(item.position, item.position - 1) != position
            ):
                gap = (index, _gap(projection, position, item.position))
                break
            at = position + 1 if item.position is None else item.position
            stall = Poison(index, at, item.message_type, item.error)
            break
        at, message = item
        if at <= position:
            skipped += 1
            continue
        if previous.get(at, at - 1) != position:
            gap = (index, _gap(projection, position, at))
            break
        projection.apply(db, message)
        position = at
        applied += 1
    if applied:
        projection.end_batch(db)
        set_position(db, position)
    return position, applied, skipped, gap, stall


def _apply_one_by_one(
    projection: Projection,
    db: ReadModelDb,
    messages: Sequence[Item],
    previous: Mapping[int, int],
) -> Applied:
    """Apply ``messages`` in one transaction per message: the first whose ``apply`` or
    ``end_batch`` raises is the stall, and everything before it is committed."""
    applied = skipped = 0
    position = get_position(db)
    for index, item in enumerate(messages):
        at = item.position if isinstance(item, Undecodable) else item[0]
        if at is not None and at <= position:
            skipped += 1
            continue
        try:
            step = _apply(projection, db, messages, previous, start=index, limit=1)
        except Exception as exc:
            if is_machine_error(exc) or isinstance(item, Undecodable):
                raise
            _discard_deferred(projection, db)
            poison = Poison(index, item[0], item[1].type, type(exc).__name__)
            return Applied(applied, skipped, position, None, poison)
        applied += step.applied
        position = step.position
        if step.gap is not None or step.stall is not None:
            return Applied(applied, skipped, position, step.gap, step.stall)
    return Applied(applied, skipped, position)


def _discard_deferred(projection: Projection, db: ReadModelDb) -> None:
    """Forget the work ``apply`` deferred to ``end_batch`` for a batch that was rolled
    back: run ``end_batch`` in a transaction that is rolled back too."""
    db.execute("BEGIN")
    try:
        projection.end_batch(db)
    except Exception:  # noqa: S110 - the batch failed already; only its leftovers go
        pass
    finally:
        rollback(db)


# ------------------------------------------------------------------------------- NATS


class _Position(msgspec.Struct):
    position: int | None = None


NATS_GRACE = 5.0
"""Seconds NATS (or the stream) may be away before the projector warns: a server restarting,
or stopping with the rest of the stack, takes less, and is an info line only."""


class NatsHealth:
    """How the projector tells of NATS being away: at once an info line, a warning only
    when it lasts ``NATS_GRACE`` seconds (once per outage), an info line when it is back,
    and nothing above debug once ``stop`` is set (the server stopping first on a clean stop
    of the whole stack: ``UnexpectedEOF``).

    ``trouble`` starts the grace, ``ok`` ends it; ``callbacks`` gives one connection's
    nats-py callbacks, which ignore what happens while the projector closes it itself.
    """

    def __init__(self, projection: str, stop: asyncio.Event, grace: float | None = None) -> None:
        self.projection = projection
        self.stop = stop
        self.grace = NATS_GRACE if grace is None else grace
        self._timer: asyncio.Future[None] | None = None
        self._warned = False
        self._kind = "nats_unavailable"
        self._error = ""

    def trouble(self, kind: str, error: str) -> None:
        """NATS (``nats_unavailable``) or the stream (``stream_missing``) is away."""
        self._kind, self._error = kind, error
        if self._timer is None and not self._warned and not self.stop.is_set():
            log.info(f"projector.{kind}", projection=self.projection, error=error)
            self._timer = asyncio.ensure_future(self._warn_after_grace())

    def ok(self) -> None:
        """Consuming again."""
        self.close()
        if self._warned:
            self._warned = False
            log.info("projector.nats_back", projection=self.projection)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _warn_after_grace(self) -> None:
        await wait_for_stop(self.stop, self.grace)
        self._timer = None
        if not self.stop.is_set():
            self._warned = True
            log.warning(
                f"projector.{self._kind}",
                projection=self.projection,
                error=self._error,
                seconds=self.grace,
            )

    def callbacks(self) -> _ConnectionCallbacks:
        return _ConnectionCallbacks(self)


_CONNECTION_ERRORS = (
    nats.errors.StaleConnectionError,  # UnexpectedEOF too: the server closed the connection
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    OSError,  # refused, reset, unreachable
    TimeoutError,
)
"""The client's errors that say the server is away (the grace applies); any other (a
permission refused, a slow consumer) is a warning at once."""


class _ConnectionCallbacks:
    """One connection's ``error_cb``, ``disconnected_cb`` and ``reconnected_cb``."""

    def __init__(self, health: NatsHealth) -> None:
        self.health = health
        self.closing = False
        self._other = quiet_errors()

    def _quiet(self) -> bool:
        return self.closing or self.health.stop.is_set()

    async def error(self, exc: Exception) -> None:
        if self._quiet():
            log.debug("nats.client_error", error=type(exc).__name__)
        elif isinstance(exc, _CONNECTION_ERRORS):
            log.debug("nats.client_error", error=type(exc).__name__)
            self.health.trouble("nats_unavailable", type(exc).__name__)
        else:
            await self._other(exc)

    async def disconnected(self) -> None:
        if not self._quiet():
            self.health.trouble("nats_unavailable", "Disconnected")

    async def reconnected(self) -> None:
        self.health.ok()

    def options(self) -> dict[str, Any]:
        return {
            "error_cb": self.error,
            "disconnected_cb": self.disconnected,
            "reconnected_cb": self.reconnected,
        }


async def _connect(
    url: str,
    options: dict[str, Any],
    *,
    reconnect: bool = True,
    callbacks: _ConnectionCallbacks | None = None,
) -> NatsClient:
    """A client of ``url``: one that retries forever, or (``reconnect=False``) one that
    gives up at once when no server answers (each server tried twice).

    Not ``max_reconnect_attempts=0`` for the latter: nats-py 2.16 discards a server from
    its pool only when that number is positive, so 0 retried a refused server forever
    (`cbcm projections rebuild` without NATS never ended)."""
    given = callbacks.options() if callbacks is not None else {"error_cb": quiet_errors()}
    return await nats.connect(
        nats_servers(url),
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        **given,
        **options,
    )


async def close_client(nc: NatsClient) -> None:
    """Close ``nc``, and make sure its reconnection task is gone.

    nats-py 2.16 on Python 3.11 can lose the cancellation ``close`` sends a client that is
    reconnecting (its ``wait_for`` on a refused connection returns the refusal instead), and
    the task then goes on reconnecting: forever with this runner's options, holding the
    process's exit. So it is cancelled again until it ends (a bounded wait).
    """
    try:
        await nc.close()
    except Exception:  # closing a broken connection
        log.debug("nats.close_failed")
    except asyncio.CancelledError:
        # A server going away as the client closes can end nats-py's wait for the socket to
        # close with a cancellation that is not this task's (seen in `make test` under load:
        # a projector stopping with its server ended in CancelledError). Only this task's
        # own cancellation goes on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.debug("nats.close_failed")
    task: asyncio.Task[None] | None = getattr(nc, "_reconnection_task", None)
    for _ in range(50):
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    log.warning("nats.reconnection_left_running")


def _options(projection: Projection, given: dict[str, Any] | None) -> dict[str, Any]:
    """``given``, or the projector's credentials and TLS from the environment (its user in
    deploy/nats is ``project-<name>``)."""
    if given is not None:
        return given
    return nats_connect_options(Settings(), f"project-{projection.name}")


async def _position_at(js: JetStreamContext, seq: int) -> int | None:
    """The position of the stream message at sequence ``seq`` (``None`` if unknown)."""
    if seq <= 0:
        return 0
    try:
        raw = await js.get_msg(STREAM, seq=seq)
        return msgspec.json.decode(raw.data or b"{}", type=_Position).position
    except (nats.js.errors.NotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _connect_unless_stopped(
    url: str, options: dict[str, Any], stop: asyncio.Event, callbacks: _ConnectionCallbacks
) -> NatsClient | None:
    """Connect (the client retries on its own while NATS is down), or ``None`` once
    ``stop`` is set first."""
    return await unless_stopped(_connect(url, options, callbacks=callbacks), stop)


async def _start_sequence(js: JetStreamContext, recorded: int) -> int:
    """The stream sequence of the first message after position ``recorded``.

    Positions increase along the stream but may skip numbers (holes in PostgreSQL
    positions), so the message of position ``recorded`` is found by a binary search on the
    stream (a few ``get_msg`` calls). If it cannot be found (the stream was republished
    after the duplicate window), start from the beginning and let positions skip what is
    already applied.
    """
    if recorded == 0:
        return 1
    if await _position_at(js, recorded) == recorded:
        return recorded + 1
    state = (await js.stream_info(STREAM)).state
    low, high = state.first_seq, state.last_seq
    while low <= high:
        middle = (low + high) // 2
        position = await _position_at(js, middle)
        if position is None:
            break
        if position == recorded:
            return middle + 1
        if position < recorded:
            low = middle + 1
        else:
            high = middle - 1
    log.warning("projector.start_from_first", recorded=recorded)
    return 1


def consumer_config(name: str, start_seq: int, max_ack_pending: int) -> ConsumerConfig:
    by_sequence = start_seq > 1
    return ConsumerConfig(
        durable_name=name,
        description="cbcm read model projector",
        filter_subject=EVENT_SUBJECTS,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if by_sequence else DeliverPolicy.ALL,
        opt_start_seq=start_seq if by_sequence else None,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )


async def _ensure_consumer(
    js: JetStreamContext, name: str, recorded: int, max_ack_pending: int, *, force: bool = False
) -> None:
    """Reuse the durable consumer if nothing is pending on it and its cursor stands at the
    read model's position (unless ``force``); otherwise (re-)create it to start right after
    that position."""
    try:
        info = await js.consumer_info(STREAM, name)
    except nats.js.errors.NotFoundError:
        info = None
    if info is not None:
        delivered = (info.delivered.stream_seq if info.delivered else 0) or 0
        fits = (
            not force
            and info.num_ack_pending == 0
            and info.config.filter_subject == EVENT_SUBJECTS
            and info.config.ack_policy == AckPolicy.EXPLICIT
            and await _position_at(js, delivered) == recorded
        )
        if fits:
            log.info("projector.consumer_reused", consumer=name, delivered=delivered)
            return
        await js.delete_consumer(STREAM, name)
        log.info(
            "projector.consumer_reset",
            consumer=name,
            delivered=delivered,
            ack_pending=info.num_ack_pending,
            position=recorded,
        )
    start_seq = await _start_sequence(js, recorded)
    await js.add_consumer(STREAM, consumer_config(name, start_seq, max_ack_pending))


async def _call(hook: OnCommit, db: ReadModelDb, position: int) -> None:
    result = hook(db, position)
    if inspect.isawaitable(result):
        await result


class _Projector:
    """One active projector's state: its read model, its metrics, and the stall an earlier
    run recorded (until this one applies past it)."""

    def __init__(
        self,
        projection: Projection,
        db: ReadModelDb,
        data_dir: Place,
        on_commit: OnCommit | None,
    ) -> None:
        self.projection = projection
        self.db = db
        self.data_dir = data_dir
        self.worker = worker_name(projection.name)
        self.on_commit = on_commit
        self.metrics = ProjectorMetrics(projection.name)
        self.earlier: Stall | None = None
        self.health: NatsHealth | None = None

    async def start(self) -> int:
        """The recorded position; forget an earlier stall already passed (a rebuild), keep
        the gauge up for one not yet passed."""
        position = await asyncio.to_thread(get_position, self.db)
        self.metrics.position(position)
        self.earlier = await asyncio.to_thread(stall_of, self.data_dir, self.worker)
        self.metrics.stalled(self.earlier is not None)
        await self._passed(position)
        return position

    async def _passed(self, position: int) -> None:
        stall = self.earlier
        if stall is None or position < stall.position:
            return
        self.earlier = None
        try:
            await asyncio.to_thread(clear_stall, self.data_dir, self.worker)
        except OSError as e:
            log.warning(
                "projector.stall_not_cleared",
                projection=self.projection.name,
                error=type(e).__name__,
            )
        self.metrics.stalled(False)
        log.info(
            "projector.stall_cleared",
            projection=self.projection.name,
            position=stall.position,
            applied_position=position,
        )

    async def handle(self, msgs: list[Msg]) -> Applied:
        """Apply, commit and ack one fetched batch; at a gap or a stall, hand back what
        was not taken."""
        started = time.perf_counter()
        try:
            items = [read_item(m.data, m.metadata.sequence.stream) for m in msgs]
            done = await finished_in_thread(
                apply_batch, self.projection, self.db, items, previous_positions(msgs)
            )
        except BaseException:
            await _nak(msgs)
            raise
        for m in msgs[: done.taken]:
            await m.ack()
        self.metrics.batch(time.perf_counter() - started, done.applied, done.position)
        log.info(
            "projector.batch",
            projection=self.projection.name,
            applied=done.applied,
            skipped=done.skipped,
            position=done.position,
        )
        if done.applied:
            if self.earlier is not None:
                await self._passed(done.position)
            if self.on_commit is not None:
                await _call(self.on_commit, self.db, done.position)
        if done.gap is not None or done.stall is not None:
            await _nak(msgs[done.taken :])
        return done

    async def stalled(self, poison: Poison, applied_position: int, stream_seq: int) -> None:
        """Say once, everywhere an operator looks, where the projector stopped and why."""
        log.error(
            "projector.stalled",
            projection=self.projection.name,
            position=poison.position,
            message_type=poison.message_type,
            error=poison.error,
            applied_position=applied_position,
            stream_sequence=stream_seq,
        )
        self.metrics.stalled(True)
        try:
            await asyncio.to_thread(
                record_stall,
                self.data_dir,
                self.worker,
                position=poison.position,
                message_type=poison.message_type,
                error=poison.error,
            )
        except OSError as e:  # the log line and the gauge still tell
            log.warning(
                "projector.stall_not_recorded",
                projection=self.projection.name,
                error=type(e).__name__,
            )


async def _consume(
    projector: _Projector, nc: NatsClient, stop: asyncio.Event, *, batch: int
) -> Poison | None:
    """Follow the stream until ``stop`` (``None``), or until a message stalls the projector
    (that message, once reported)."""
    projection = projector.projection
    js = nc.jetstream()
    name = durable_name(projection)
    reseeked = False
    while not stop.is_set():
        recorded = await asyncio.to_thread(get_position, projector.db)
        await _ensure_consumer(js, name, recorded, max_ack_pending=batch * 4, force=reseeked)
        sub = await js.pull_subscribe_bind(durable=name, stream=STREAM)
        log.info("projector.consuming", projection=projection.name, position=recorded)
        if projector.health is not None:
            projector.health.ok()
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT)
                except TimeoutError:
                    # Nothing to fetch. nats-py 2.16 raises its own TimeoutError, or the
                    # builtin one when the answer to its no-wait probe comes at the end of
                    # the wait: neither says anything about the server (both used to be
                    # taken for an outage, a warning and a reconnection on an idle stream).
                    continue
                if not msgs:  # a late status of an earlier pull ended this one: nothing
                    continue
                done = await projector.handle(msgs)
                if done.stall is not None:
                    seq = msgs[done.stall.index].metadata.sequence.stream
                    await projector.stalled(done.stall, done.position, seq)
                    return done.stall
                if done.gap is None:
                    reseeked = reseeked and not done.applied
                    continue
                # Messages delivered but never acked (an ack lost while NATS restarted)
                # come back only after ack_wait, so later ones can arrive first. Seek
                # once, right after the recorded position; a gap that persists is real.
                if reseeked:
                    log.error("projector.gap", projection=projection.name, position=done.position)
                    raise PositionGap(done.gap[1])
                log.warning("projector.reseek", projection=projection.name, position=done.position)
                reseeked = True
                break
        finally:
            await sub.unsubscribe()
    return None


async def _nak(msgs: list[Msg]) -> None:
    """Hand messages back at once, so a restarted projector is not held up by ack_wait."""
    for m in msgs:
        try:
            await m.nak()
        except Exception:  # noqa: S112 - best effort; the caller's error matters
            continue


_RETRIED = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    TimeoutError,
)


async def run_projector(
    projection: Projection,
    where: Path | ReadModelStore,
    nats_url: str,
    stop: asyncio.Event,
    *,
    batch: int = 256,
    on_commit: OnCommit | None = None,
    nats_options: dict[str, Any] | None = None,
    data_dir: Path | None = None,
) -> None:
    """Keep ``projection``'s read model (a SQLite file's path, or a ``ReadModelStore``) up
    to date until ``stop`` is set.

    While another instance holds the read model's lease, waits as a standby until it can
    take it (or ``stop`` is set). ``on_commit(db, position)`` (plain or async) runs after
    each committed batch that applied something. Raises ``ProjectorError`` (``PositionGap``)
    when it cannot go on; waits and retries while NATS or the stream is unavailable. At a
    message it cannot apply it stalls: reports it once and waits for ``stop`` (module
    docstring). ``nats_options``: the connection's credentials and TLS (default:
    ``CBCM_NATS_*``, user ``project-<name>``). ``data_dir``: where its stall is recorded
    for other processes (default: the store's, ``data_dir_of`` a file).
    """
    store = as_store(where)
    options = _options(projection, nats_options)
    lease = store.lease()
    try:
        if await _take_lease(lease, store, projection, stop):
            await _project(
                projection,
                store,
                lease,
                nats_url,
                stop,
                batch=batch,
                on_commit=on_commit,
                options=options,
                data_dir=data_dir if data_dir is not None else status_place_of(store),
            )
    finally:
        await _off_loop(lease, lease.release)


async def _off_loop(lease: Lease, call: Callable[[], Any]) -> Any:
    """``call()`` of a lease: at once for a file lock, in a worker thread for PostgreSQL's
    (a query over the network)."""
    if isinstance(lease, ReadModelLease):
        return call()
    return await asyncio.to_thread(call)


async def _take_lease(
    lease: Lease, store: ReadModelStore, projection: Projection, stop: asyncio.Event
) -> bool:
    """Take the read model's lease, waiting as a standby while another instance holds it.
    ``False`` if ``stop`` is set first."""
    if not await _off_loop(lease, lease.try_take):
        holder = await _off_loop(lease, lease.holder)
        log.info("projector.standby", projection=projection.name, active=holder)
        while not await _off_loop(lease, lease.try_take):
            await wait_for_stop(stop, LEASE_POLL)
            if stop.is_set():
                return False
    log.info("projector.active", projection=projection.name, lease=_lease_where(lease, store))
    return True


def _lease_where(lease: Lease, store: ReadModelStore) -> str:
    return str(lease.path) if isinstance(lease, ReadModelLease) else store.where


async def _project(
    projection: Projection,
    store: ReadModelStore,
    lease: Lease,
    nats_url: str,
    stop: asyncio.Event,
    *,
    batch: int,
    on_commit: OnCommit | None,
    options: dict[str, Any],
    data_dir: Place,
) -> None:
    db = await _off_loop(lease, lambda: prepare(projection, store.writer(lease)))
    projector = _Projector(projection, db, data_dir, on_commit)
    health = projector.health = NatsHealth(projection.name, stop)
    backoff = Backoff(0.2, MAX_BACKOFF)
    try:
        position = await projector.start()
        log.info("projector.started", projection=projection.name, position=position)
        stalled: Poison | None = None
        while not stop.is_set() and stalled is None:
            nc: NatsClient | None = None
            callbacks = health.callbacks()
            try:
                nc = await _connect_unless_stopped(nats_url, options, stop, callbacks)
                if nc is None:
                    break
                stalled = await _consume(projector, nc, stop, batch=batch)
                backoff.reset()
            except _RETRIED as exc:
                # A missing stream (the relay has not created it yet) is not a NATS outage.
                missing = isinstance(exc, nats.js.errors.NotFoundError)
                health.trouble(
                    "stream_missing" if missing else "nats_unavailable", type(exc).__name__
                )
                log.debug("projector.retry", projection=projection.name, retry_in=backoff.delay)
                await backoff.wait(stop)
            finally:
                callbacks.closing = True
                if nc is not None:
                    await close_client(nc)
        health.close()
        if stalled is not None:
            # Stalled: nothing to do but keep the lease (a standby would stall on the same
            # message) until the operator stops this process to deploy a fix.
            await stop.wait()
    finally:
        try:
            position = get_position(db)
        except Exception:  # the session is gone (PostgreSQL): the server kept what committed
            position = -1
        log.info("projector.stopped", projection=projection.name, position=position)
        close_db(db)


# ------------------------------------------------------------------------------- rebuild

Progress = Callable[[int, int], None]
"""``progress(done, total)``: messages replayed so far, and how many to replay."""


def _rebuilt_up_to(projection: Projection, applied: Applied) -> int:
    """The position a rebuild's batch reached; a gap or a stall ends the rebuild."""
    if applied.gap is not None:
        raise PositionGap(applied.gap[1])
    if applied.stall is not None:
        stall = applied.stall
        raise ProjectorError(
            f"read model {projection.name} cannot apply position "
            f"{stall.position} ({stall.message_type}): {stall.error}; the "
            f"rebuild stopped after position {applied.position}"
        )
    return applied.position


def _decode_and_apply(projection: Projection, db: ReadModelDb, msgs: list[Msg]) -> Applied:
    """A rebuild's batch: decoded (the position from the message itself, its predecessor
    from the relay's header, as ``previous_positions`` reads them) and applied. A message's
    stream sequence (parsed from its reply subject) is read only to name one that cannot be
    decoded."""
    pending: list[tuple[int, CloudEvent[Any]]] = []
    previous: dict[int, int] = {}
    for msg in msgs:
        try:
            position, message = decode(msg.data)
        except ProjectorError:
            decode(msg.data, msg.metadata.sequence.stream)  # raises, naming the sequence
            raise
        pending.append((position, message))
        headers = msg.headers
        header = headers.get(PREVIOUS_POSITION_HEADER) if headers else None
        if header is not None:
            with contextlib.suppress(ValueError):
                previous[position] = int(header)
    return apply_batch(projection, db, pending, previous)


async def rebuild(
    projection: Projection,
    where: Path | ReadModelStore,
    nats_url: str,
    progress: Progress | None = None,
    *,
    batch: int = 512,
    nats_options: dict[str, Any] | None = None,
) -> int:
    """Drop the read model's tables and replay the whole stream (up to its last message when
    the rebuild starts) through the rebuild's pull consumer (``cbcm-<name>-rebuild``, made
    and deleted here). Returns the last position.

    Raises ``ReadModelInUse`` if a projector holds the read model's lease (it would write
    too)."""
    store = as_store(where)
    lease = store.lease()
    if not await _off_loop(lease, lease.try_take):
        holder = await _off_loop(lease, lease.holder)
        raise ReadModelInUse(
            f"{store.where} is kept up to date by a running projector ({holder}): "
            "stop it first, or rebuild into another place (--into)"
        )
    try:
        return await _rebuild(
            projection, store, lease, nats_url, progress, batch=batch, nats_options=nats_options
        )
    finally:
        await _off_loop(lease, lease.release)


async def _rebuild(
    projection: Projection,
    store: ReadModelStore,
    lease: Lease,
    nats_url: str,
    progress: Progress | None,
    *,
    batch: int,
    nats_options: dict[str, Any] | None,
) -> int:
    target = await _off_loop(lease, lambda: prepare(projection, store.writer(lease)))
    try:
        if not isinstance(store, PostgresReadModel) or not isinstance(target, PostgresReadModelDb):
            position = await _replay(
                projection, target, nats_url, progress, batch=batch, nats_options=nats_options
            )
        else:
            # into PostgreSQL: made in a scratch SQLite file, then copied in at once (ADR 28
            # section 7); the read model is left as it was if the rebuild does not end
            try:
                with stage(store.data_dir, store.schema) as scratch:
                    prepare(projection, scratch)
                    check_alike(projection, scratch, target)  # before minutes of replay
                    staged = await _replay(
                        projection,
                        scratch,
                        nats_url,
                        progress,
                        batch=batch,
                        nats_options=nats_options,
                    )
                    log.info(
                        "projector.rebuild_copying", projection=projection.name, position=staged
                    )
                    position = await finished_in_thread(copy_stage, projection, scratch, target)
            except sqlite3.OperationalError as e:
                raise StagingError(
                    f"read model {projection.name}: the rebuild's scratch file in "
                    f"{store.data_dir} could not be written or read ({e}; is the disk full?); "
                    "the read model is unchanged"
                ) from None
        log.info("projector.rebuilt", projection=projection.name, position=position)
        return position
    finally:
        close_db(target)


async def _replay(
    projection: Projection,
    db: ReadModelDb,
    nats_url: str,
    progress: Progress | None,
    *,
    batch: int,
    nats_options: dict[str, Any] | None,
) -> int:
    """Empty ``db``'s read model and apply the whole stream into it, batch by batch, each
    committed with its position; returns the last position."""
    nc = await _connect(nats_url, _options(projection, nats_options), reconnect=False)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        first, last = state.first_seq, state.last_seq
        total = last - first + 1 if last >= first and last > 0 else 0
        await asyncio.to_thread(reset_projection, projection, db)
        log.info("projector.rebuild_started", projection=projection.name, messages=total)
        if progress is not None:
            progress(0, total)
        if total == 0:
            return 0
        # The next batch is read while one is decoded and applied in the worker thread;
        # batches are applied one at a time, in order. A pull consumer of the rebuild's own,
        # one request of one batch at a time: the server sends only what was asked, so a slow
        # applying holds it back and nothing piles up in the client (ADR 28: the ordered push
        # consumer's queue overflowed at 3 million messages and nats-py dropped messages).
        reader = PullReader(nc, rebuild_consumer(projection.name), batch=batch)
        done = 0
        position = 0
        applying: asyncio.Future[Applied] | None = None
        applying_count = 0
        try:
            await reader.open()
            seq = first - 1
            while seq < last or applying is not None:
                fetched: list[Msg] = []
                try:
                    while seq < last and len(fetched) < batch:
                        got = await reader.fetch(min(batch - len(fetched), last - seq))
                        seq = got[-1].metadata.sequence.stream
                        fetched.extend(got)
                except ReadFailed as exc:
                    raise ProjectorError(
                        f"read model {projection.name}: the rebuild could not read the stream "
                        f"after sequence {seq}: {exc}"
                    ) from exc
                if applying is not None:
                    running, applying = applying, None
                    position = _rebuilt_up_to(projection, await running)
                    done += applying_count
                    if progress is not None:
                        progress(done, total)
                if fetched:
                    applying_count = len(fetched)
                    applying = asyncio.ensure_future(
                        finished_in_thread(_decode_and_apply, projection, db, fetched)
                    )
        finally:
            if applying is not None:  # never close the read model under a running batch
                with contextlib.suppress(BaseException):
                    await applying
            await reader.close()
        return position
    finally:
        await nc.close()
