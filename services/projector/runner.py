"""Run a projection from the ``CBCM_EVENTS`` stream into its SQLite read model (ADR 3).

Live (``run_projector``): a durable pull consumer ``cbcm-<name>`` (filter ``cbcm.v1.evt.>``,
explicit ack). Each fetched batch is decoded, applied in ONE SQLite transaction together
with the new position, committed, and only then acked. A message at or below the recorded
position is a redelivery: acked and skipped. A message beyond recorded + 1 is a gap: what
came before it is committed, the consumer is re-created once to start right after the
position (a message whose ack was lost comes back only after ``ack_wait``, so later ones can
overtake it), and if the gap persists the projector stops with ``PositionGap`` rather than
silently skip an event. A message whose
type this version of the contracts does not know stops it too (``ProjectorError``):
upgrade the projector before the publisher.

The durable consumer is created with "deliver all" on a fresh read model. When the
projector starts again it checks the consumer: if a killed run left messages delivered but
unacknowledged (JetStream would hold them back until ``ack_wait`` and deliver later ones
first, which would look like a gap), or the consumer does not stand where the read model
does, it is re-created to start right after the recorded position. The read model's
position is the truth; the consumer's state is only a cursor.

When NATS is down, or the stream does not exist yet (the relay creates it), the projector
logs and retries with a bounded back-off until ``stop`` is set.

Rebuild (``rebuild``): drop the tables, replay the whole stream with an ephemeral ordered
consumer up to the stream's last message at the start, committing batch by batch with the
position (so an interrupted rebuild leaves a consistent prefix the live projector can
continue). Stop the live projector of that read model while rebuilding: a rebuild refuses a
file whose lease a projector holds.

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
import fcntl
import inspect
import os
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
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
    create_position_table,
    drop_position_table,
    get_position,
    open_read_model,
    set_position,
)
from services.nats_client import (
    nats_connect_options,
    nats_servers,
    quiet_errors,
    unless_stopped,
    wait_for_stop,
)
from services.settings import Settings

log = structlog.get_logger(__name__)

ACK_WAIT = 30.0
"""Seconds JetStream waits for an ack before redelivering. A batch is applied in
milliseconds; a redelivery is harmless anyway (skipped by position)."""
FETCH_TIMEOUT = 1.0
"""Longest wait for a batch; also how soon the runner notices ``stop``."""
MAX_BACKOFF = 5.0
LEASE_POLL = 0.25
"""Seconds between a standby's attempts to take the read model's lease: the longest a
takeover waits once the active instance is gone."""

OnCommit = Callable[[sqlite3.Connection, int], Awaitable[None] | None]


class ProjectorError(RuntimeError):
    """The projector cannot go on without someone looking (never retried)."""


class PositionGap(ProjectorError):
    """A message came beyond the next expected position: an event would be skipped."""


class ReadModelInUse(ProjectorError):
    """Another process holds the read model's lease (a rebuild refuses to write under it)."""


def durable_name(projection: Projection) -> str:
    return f"cbcm-{projection.name}"


def read_model_path(data_dir: Path, name: str) -> Path:
    """``<data dir>/read_models/<name>.sqlite3`` (ADR 3)."""
    return data_dir / "read_models" / f"{name}.sqlite3"


def read_position(db_path: Path) -> int:
    """The position a read model file has applied (0 if it does not exist yet)."""
    if not db_path.exists():
        return 0
    db = open_read_model(db_path, readonly=True)
    try:
        return get_position(db)
    finally:
        db.close()


def lease_path(db_path: Path) -> Path:
    """``<read model>.lease``: the file whose lock makes a projector the active one."""
    return db_path.with_name(f"{db_path.name}.lease")


class ReadModelLease:
    """The right to write one read model: an exclusive ``flock`` on ``lease_path``.

    One holder at a time, across processes (and across open files within one). The kernel
    releases it when the holder closes it or exits in any way, SIGKILL included. The read
    model is a SQLite file in WAL mode, which lives on one host's local disk: every process
    that can write it can take this lock. The file names its holder (pid, host, since when)
    for people; the lock, not the text, is what counts.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = lease_path(db_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        """Take the lease if no one holds it; never waits."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A lock on a file removed (and made again) since it was opened excludes no one.
            held, named = os.fstat(fd), os.stat(self.path)
            if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
                os.close(fd)
                return False
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds it, as its holder wrote it (best effort, for logs and messages)."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_projection(projection: Projection, db_path: Path) -> sqlite3.Connection:
    """Open the read model and make sure its tables and position row exist."""
    db = open_read_model(db_path)
    db.execute("BEGIN IMMEDIATE")
    try:
        projection.create_tables(db)
        create_position_table(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        db.close()
        raise
    return db


def reset_projection(projection: Projection, db: sqlite3.Connection) -> None:
    """Drop and re-create the read model's tables, position 0, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        projection.drop_tables(db)
        drop_position_table(db)
        projection.create_tables(db)
        create_position_table(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# ------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Applied:
    """What one batch did: messages applied, redeliveries skipped, the position after, and
    where a gap stopped it (``gap``: the index of the first message not taken, and why)."""

    applied: int
    skipped: int
    position: int
    gap: tuple[int, str] | None = None

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


def previous_positions(msgs: list[Msg]) -> dict[int, int]:
    """Position -> the position published just before it, from the relay's header.

    Store positions are not always contiguous (PostgreSQL hands out a sequence number to a
    write that then fails), so "the next message" is the one whose predecessor is the
    recorded position, not recorded + 1.
    """
    found: dict[int, int] = {}
    for msg in msgs:
        header = (msg.headers or {}).get(PREVIOUS_POSITION_HEADER)
        if header is None:
            continue
        position = msgspec.json.decode(msg.data, type=_Position).position
        if position is not None:
            found[position] = int(header)
    return found


def apply_batch(
    projection: Projection,
    db: sqlite3.Connection,
    messages: list[tuple[int, CloudEvent[Any]]],
    previous: Mapping[int, int] | None = None,
) -> Applied:
    """Apply ``messages`` (position, message) in one transaction with the new position.

    Messages at or below the recorded position are skipped. A message whose predecessor
    (``previous[position]``, else ``position - 1``) is not the recorded position means a
    gap: it stops there, what came before is committed, and ``gap`` says where and why (the
    caller raises ``PositionGap``). If ``apply`` raises, nothing of the batch is kept.
    """
    previous = previous or {}
    db.execute("BEGIN IMMEDIATE")
    gap: tuple[int, str] | None = None
    try:
        position = get_position(db)
        applied = skipped = 0
        for index, (at, message) in enumerate(messages):
            if at <= position:
                skipped += 1
                continue
            if previous.get(at, at - 1) != position:
                gap = (
                    index,
                    f"read model {projection.name} is at position {position} and received "
                    f"position {at}: the positions between are missing from the stream",
                )
                break
            projection.apply(db, message)
            position = at
            applied += 1
        if applied:
            projection.end_batch(db)
            set_position(db, position)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return Applied(applied, skipped, position, gap)


# ------------------------------------------------------------------------------- NATS


class _Position(msgspec.Struct):
    position: int | None = None


async def _connect(url: str, options: dict[str, Any], *, reconnect: bool = True) -> NatsClient:
    return await nats.connect(
        nats_servers(url),
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1 if reconnect else 0,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        error_cb=quiet_errors(),
        **options,
    )


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
    url: str, options: dict[str, Any], stop: asyncio.Event
) -> NatsClient | None:
    """Connect (the client retries on its own while NATS is down), or ``None`` once
    ``stop`` is set first."""
    return await unless_stopped(_connect(url, options), stop)


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


async def _call(hook: OnCommit, db: sqlite3.Connection, position: int) -> None:
    result = hook(db, position)
    if inspect.isawaitable(result):
        await result


async def _consume(
    projection: Projection,
    db: sqlite3.Connection,
    nc: NatsClient,
    stop: asyncio.Event,
    *,
    batch: int,
    on_commit: OnCommit | None,
) -> None:
    js = nc.jetstream()
    name = durable_name(projection)
    reseeked = False
    while not stop.is_set():
        recorded = await asyncio.to_thread(get_position, db)
        await _ensure_consumer(js, name, recorded, max_ack_pending=batch * 4, force=reseeked)
        sub = await js.pull_subscribe_bind(durable=name, stream=STREAM)
        log.info("projector.consuming", projection=projection.name, position=recorded)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT)
                except nats.errors.TimeoutError:
                    continue
                done = await _handle(projection, db, msgs, on_commit)
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


async def _in_thread(apply: Callable[..., Applied], *args: Any) -> Applied:
    """Run a batch in a worker thread. If the task is cancelled meanwhile, let the thread
    finish (commit or roll back) before the cancellation goes on, so the connection is
    never closed under a running transaction."""
    running = asyncio.ensure_future(asyncio.to_thread(apply, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


async def _nak(msgs: list[Msg]) -> None:
    """Hand messages back at once, so a restarted projector is not held up by ack_wait."""
    for m in msgs:
        try:
            await m.nak()
        except Exception:  # noqa: S112 - best effort; the caller's error matters
            continue


async def _handle(
    projection: Projection,
    db: sqlite3.Connection,
    msgs: list[Msg],
    on_commit: OnCommit | None,
) -> Applied:
    """Apply, commit and ack one fetched batch; at a gap, hand back what was not taken."""
    try:
        decoded = [decode(m.data, m.metadata.sequence.stream) for m in msgs]
        done = await _in_thread(apply_batch, projection, db, decoded, previous_positions(msgs))
    except BaseException:
        await _nak(msgs)
        raise
    for m in msgs[: done.taken]:
        await m.ack()
    log.info(
        "projector.batch",
        projection=projection.name,
        applied=done.applied,
        skipped=done.skipped,
        position=done.position,
    )
    if done.applied and on_commit is not None:
        await _call(on_commit, db, done.position)
    if done.gap is not None:
        await _nak(msgs[done.taken :])
    return done


_RETRIED = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    TimeoutError,
)


async def run_projector(
    projection: Projection,
    db_path: Path,
    nats_url: str,
    stop: asyncio.Event,
    *,
    batch: int = 256,
    on_commit: OnCommit | None = None,
    nats_options: dict[str, Any] | None = None,
) -> None:
    """Keep ``projection``'s read model at ``db_path`` up to date until ``stop`` is set.

    While another instance holds the read model's lease, waits as a standby until it can
    take it (or ``stop`` is set). ``on_commit(db, position)`` (plain or async) runs after
    each committed batch that applied something. Raises ``ProjectorError`` (``PositionGap``)
    when it cannot go on; waits and retries while NATS or the stream is unavailable.
    ``nats_options``: the connection's credentials and TLS (default: ``CBCM_NATS_*``, user
    ``project-<name>``).
    """
    options = _options(projection, nats_options)
    lease = ReadModelLease(db_path)
    try:
        if await _take_lease(lease, projection, stop):
            await _project(
                projection,
                db_path,
                nats_url,
                stop,
                batch=batch,
                on_commit=on_commit,
                options=options,
            )
    finally:
        lease.release()


async def _take_lease(lease: ReadModelLease, projection: Projection, stop: asyncio.Event) -> bool:
    """Take the read model's lease, waiting as a standby while another instance holds it.
    ``False`` if ``stop`` is set first."""
    if not lease.try_take():
        log.info("projector.standby", projection=projection.name, active=lease.holder())
        while not lease.try_take():
            await wait_for_stop(stop, LEASE_POLL)
            if stop.is_set():
                return False
    log.info("projector.active", projection=projection.name, lease=str(lease.path))
    return True


async def _project(
    projection: Projection,
    db_path: Path,
    nats_url: str,
    stop: asyncio.Event,
    *,
    batch: int,
    on_commit: OnCommit | None,
    options: dict[str, Any],
) -> None:
    db = open_projection(projection, db_path)
    backoff = 0.2
    log.info("projector.started", projection=projection.name, position=get_position(db))
    try:
        while not stop.is_set():
            nc: NatsClient | None = None
            try:
                nc = await _connect_unless_stopped(nats_url, options, stop)
                if nc is None:
                    break
                await _consume(projection, db, nc, stop, batch=batch, on_commit=on_commit)
                backoff = 0.2
            except _RETRIED as exc:
                # A missing stream (the relay has not created it yet) is not a NATS outage.
                missing = isinstance(exc, nats.js.errors.NotFoundError)
                log.warning(
                    "projector.stream_missing" if missing else "projector.nats_unavailable",
                    projection=projection.name,
                    error=type(exc).__name__,
                    retry_in=backoff,
                )
                await wait_for_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                if nc is not None:
                    try:
                        await nc.close()
                    except Exception:  # closing a broken connection
                        log.debug("nats.close_failed")
    finally:
        log.info("projector.stopped", projection=projection.name, position=get_position(db))
        db.close()


# ------------------------------------------------------------------------------- rebuild

Progress = Callable[[int, int], None]
"""``progress(done, total)``: messages replayed so far, and how many to replay."""


async def rebuild(
    projection: Projection,
    db_path: Path,
    nats_url: str,
    progress: Progress | None = None,
    *,
    batch: int = 512,
    nats_options: dict[str, Any] | None = None,
) -> int:
    """Drop the read model's tables and replay the whole stream (up to its last message when
    the rebuild starts) with an ephemeral ordered consumer. Returns the last position.

    Raises ``ReadModelInUse`` if a projector holds the file's lease (it would write too)."""
    lease = ReadModelLease(db_path)
    if not lease.try_take():
        raise ReadModelInUse(
            f"{db_path} is kept up to date by a running projector ({lease.holder()}): "
            "stop it first, or rebuild into another file"
        )
    try:
        return await _rebuild(
            projection, db_path, nats_url, progress, batch=batch, nats_options=nats_options
        )
    finally:
        lease.release()


async def _rebuild(
    projection: Projection,
    db_path: Path,
    nats_url: str,
    progress: Progress | None,
    *,
    batch: int,
    nats_options: dict[str, Any] | None,
) -> int:
    db = open_projection(projection, db_path)
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
        sub = await js.subscribe(
            EVENT_SUBJECTS,
            stream=STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        done = 0
        position = 0
        try:
            seq = 0
            while seq < last:
                pending: list[tuple[int, CloudEvent[Any]]] = []
                fetched: list[Msg] = []
                while seq < last and len(pending) < batch:
                    msg = await sub.next_msg(timeout=10)
                    seq = msg.metadata.sequence.stream
                    pending.append(decode(msg.data, seq))
                    fetched.append(msg)
                applied = await _in_thread(
                    apply_batch, projection, db, pending, previous_positions(fetched)
                )
                position = applied.position
                if applied.gap is not None:
                    raise PositionGap(applied.gap[1])
                done += len(pending)
                if progress is not None:
                    progress(done, total)
        finally:
            await sub.unsubscribe()
        log.info("projector.rebuilt", projection=projection.name, position=position)
        return position
    finally:
        await nc.close()
        db.close()
