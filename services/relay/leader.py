"""The relay's leader lock (issue #7, ADR 9): of several relays on one event store, one
publishes; the others wait as standbys and one of them takes over when the leader is gone.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection
  of its own for as long as the relay publishes. PostgreSQL releases it when that session
  ends, including when the process dies or its connection is lost, so the leader checks the
  session every ``CBCM_RELAY_LEADER_CHECK_SECONDS``: a check that fails means another relay
  may hold the lock by now, and the leader stops publishing at once and goes back to waiting.
  The key is derived from the database's schema and the relay's name: advisory locks are
  per database, and several stores may share one database in schemas of their own.
- SQLite: an exclusive ``flock`` on a file beside the database
  (``<database>.cbcm-relay.lock``), released by the kernel when the process dies. The check
  makes sure the path still names the locked file: removing or replacing it would let a new
  relay lock another file while the old one still publishes.

A standby polls every ``CBCM_RELAY_LEADER_POLL_SECONDS`` (a try, then a wait on the stop
event: no busy loop) and logs ``relay.standby`` once per wait. The new leader starts a fresh
``Relay``, which resumes after the position recorded in the event store.

The lock is what keeps one relay publishing; the stream's ordering does not rest on it alone.
Every publish carries ``Nats-Expected-Last-Sequence`` and every window starts from the
stream's tail, so messages an old leader still had in flight when its lock was lost cannot
reorder or duplicate the stream either: JetStream refuses whichever of the two arrives second.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg
import structlog

from services.event_store.config import persistence_env
from services.nats.client import TRANSIENT, wait_for_stop
from services.settings import Settings

log = structlog.get_logger()

LOCK_QUERY_TIMEOUT = 5.0
"""Seconds a lock query (connect included) may take before the lock counts as not held."""

LOCK_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, psycopg.Error)
"""What taking or checking a lock may fail with, to be waited out."""


class LeaderLock(Protocol):
    """One relay's hold on its store's leader lock."""

    where: str
    """What is locked, for logs (no password)."""

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False if another does. May raise a transient
        error (the database unreachable)."""

    async def still_held(self) -> bool:
        """Whether this holder still holds the lock (False once it may have been lost)."""

    async def release(self) -> None:
        """Let go of the lock (idempotent; never raises)."""


def holder_name() -> str:
    """Who holds the lock, for operators: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------- PostgreSQL


def advisory_lock_key(dbname: str, schema: str, name: str) -> int:
    """The signed 64-bit advisory lock key of relay ``name`` on ``dbname``.``schema``."""
    digest = hashlib.sha256(f"cbcm-leader:{dbname}:{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLeaderLock:
    """A session-level advisory lock on a dedicated connection."""

    def __init__(self, connect_kwargs: dict[str, Any], key: int, where: str) -> None:
        self._connect_kwargs = connect_kwargs
        self.key = key
        self.where = where
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held = False

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(**self._connect_kwargs), LOCK_QUERY_TIMEOUT
            )
        return self._conn

    async def _query(self, sql: str, *params: Any) -> Any:
        conn = await self._connection()
        try:
            cursor = await asyncio.wait_for(conn.execute(sql, params or None), LOCK_QUERY_TIMEOUT)
            row = await cursor.fetchone()
        except BaseException:
            # A failed or timed-out query leaves the session in doubt: end it (which also
            # ends any lock it held) and start afresh next time.
            await self._close()
            raise
        return None if row is None else row[0]

    async def try_acquire(self) -> bool:
        if self._held:
            return await self.still_held()
        self._held = bool(await self._query("SELECT pg_try_advisory_lock(%s)", self.key))
        return self._held

    async def still_held(self) -> bool:
        if not self._held:
            return False
        try:
            # A session-level lock lasts as long as its session: only this code unlocks it,
            # so the session answering means the lock is still ours.
            await self._query("SELECT 1")
        except LOCK_ERRORS:
            self._held = False
            return False
        return True

    async def release(self) -> None:
        if self._held and self._conn is not None and not self._conn.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)),
                    LOCK_QUERY_TIMEOUT,
                )
        self._held = False
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def backend_pid(self) -> int | None:
        """The PostgreSQL process of the lock's session (None: not connected); for tests."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid


# ---------------------------------------------------------------------------------- SQLite


def lock_file_path(database: Path, name: str) -> Path:
    """The lock file beside a SQLite database: ``<database>.<name>.lock``."""
    return database.with_name(f"{database.name}.{name}.lock")


class FileLeaderLock:
    """An exclusive ``flock`` on a file beside the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return await self.still_held()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if not await self.still_held():  # the file was replaced between open and lock
            return False
        # For an operator wondering which process leads; the lock is the flock, not this.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder_name()}\n".encode(), 0)
        return True

    async def still_held(self) -> bool:
        if self._fd is None:
            return False
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        held = os.fstat(self._fd)
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            await self.release()
            return False
        return True

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing releases the flock; the file stays (removing it would let two relays
            # lock two different files).
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------------------------- choosing


def leader_lock(settings: Settings, name: str) -> LeaderLock:
    """The leader lock of relay ``name`` on the event store ``settings`` configure."""
    env = persistence_env(settings)
    if env["PERSISTENCE_MODULE"].endswith("postgres"):
        dbname = env["POSTGRES_DBNAME"]
        schema = env.get("POSTGRES_SCHEMA", "public")
        connect_kwargs: dict[str, Any] = {
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "dbname": dbname,
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
            "connect_timeout": int(LOCK_QUERY_TIMEOUT),
            "autocommit": True,
            "application_name": f"{name}-leader",
            # A dead peer on a silent network shows within about 20 s on top of the checks.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
        }
        where = (
            f"PostgreSQL advisory lock on {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
            f"/{dbname} schema {schema}"
        )
        return PostgresLeaderLock(connect_kwargs, advisory_lock_key(dbname, schema, name), where)
    return FileLeaderLock(lock_file_path(Path(env["SQLITE_DBNAME"]), name))


# ---------------------------------------------------------------------------------- leading


async def wait_for_leadership(
    lock: LeaderLock, stop: asyncio.Event, poll_seconds: float, *, event_prefix: str = "relay"
) -> bool:
    """Take ``lock``, trying every ``poll_seconds`` while another holds it (or the database
    cannot be reached); False if ``stop`` is set first."""
    standing_by = False
    while not stop.is_set():
        try:
            if await lock.try_acquire():
                log.info(f"{event_prefix}.leader", lock=lock.where, holder=holder_name())
                return True
            if not standing_by:
                standing_by = True
                log.info(
                    f"{event_prefix}.standby",
                    lock=lock.where,
                    holder=holder_name(),
                    poll_seconds=poll_seconds,
                )
        except LOCK_ERRORS as e:
            log.warning(
                f"{event_prefix}.leader_lock_unavailable",
                lock=lock.where,
                error=type(e).__name__,
                retry_in=poll_seconds,
            )
        await wait_for_stop(stop, poll_seconds)
    return False


async def lead(
    lock: LeaderLock,
    work: Callable[[], Awaitable[None]],
    check_seconds: float,
    *,
    event_prefix: str = "relay",
) -> bool:
    """Run ``work`` while ``lock`` is held, checking it every ``check_seconds``, then release
    the lock. True: the lock was lost and ``work`` cancelled (wait for leadership again).
    False: ``work`` ended by itself (its exception, if any, is raised)."""
    task = asyncio.ensure_future(work())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=check_seconds)
            if done:
                task.result()
                return False
            if not await lock.still_held():
                log.error(f"{event_prefix}.leadership_lost", lock=lock.where)
                return True
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this call is being cancelled too, not only ``work``
            except Exception as e:
                # Work cut short may fail on its way out (a position another relay has
                # already passed is refused): it no longer leads, so only say so.
                log.warning(f"{event_prefix}.stopped_leading", error=type(e).__name__)
        await lock.release()
