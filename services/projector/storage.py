"""Where a read model lives (ADR 16): a SQLite file under the data dir (the embedded
default), or a schema of its own in a PostgreSQL database (``CBCM_READ_MODEL_STORE``).

A ``ReadModelStore`` is one read model's place: it says whether the read model exists and
how far it has got, opens a connection to read it (``reading``) or to write it
(``writer``), and gives the lease that makes one projector the active one:

- SQLite: ``<data dir>/read_models/<name>.sqlite3``; the lease is an exclusive ``flock``
  on ``<file>.lease`` (ADR 9).
- PostgreSQL: schema ``<prefix><name>`` (prefix ``cbcm_`` by default, or the URL's
  ``schema`` parameter followed by ``_``); the lease is a session-level advisory lock taken
  on the very connection the projector then writes with. PostgreSQL releases it when that
  session ends, however it ends (the process killed, the network lost, the server
  restarted), and a write needs the session: a projector whose session is gone can neither
  hold the lease nor write. Every batch also locks the position row (``SELECT ... FOR
  UPDATE``) before reading it, so even two writers could only take turns, never apply an
  event twice.

The read models' tables are made by their projections (``create_tables``), not by the
event store's migrations: they are dropped and replayed whenever their schema version
changes, so there is nothing to migrate.

The PostgreSQL connection (``PostgresReadModelDb``) speaks the projections' portable SQL:
``?`` parameters become ``%s``, and the text columns of the tables it creates compare byte
by byte (``COLLATE "C"``), as SQLite's do, so an ``ORDER BY`` gives the same order on both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
import psycopg.rows
from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.base import ReadModelDb, Rows, get_position, open_read_model
from services.settings import Settings

CONNECT_TIMEOUT = 5
"""Seconds a connection to a PostgreSQL read-model store may take."""

DEFAULT_SCHEMA_PREFIX = "cbcm_"

POOL_WAIT = 2.0
"""Seconds a read waits for a pooled connection before its database counts as unreachable."""
DOWN_FOR = 1.0
"""Seconds after a failed connection during which reads fail at once (one waits each time
this ends, while the pool keeps reconnecting)."""


class ReadModelUnreachable(psycopg.OperationalError):
    """The read models' PostgreSQL server could not be reached moments ago."""


class ReadModelStoreError(ValueError):
    """``CBCM_READ_MODEL_STORE`` (or ``--into``) does not name a usable store."""


class Lease(Protocol):
    """The right to write one read model (ADR 9): one holder at a time, across processes
    and hosts, released when the holder dies."""

    @property
    def held(self) -> bool: ...

    def try_take(self) -> bool:
        """Take the lease if no one holds it; never waits. False also when the store
        cannot be reached (a standby tries again)."""
        ...

    def holder(self) -> str:
        """Who holds it, for logs and messages (best effort)."""
        ...

    def release(self) -> None: ...


class ReadModelStore(Protocol):
    """One read model's place (module docstring)."""

    name: str
    data_dir: Path
    """Where the workers' stall records and the statistics ledger are kept."""

    @property
    def where(self) -> str:
        """The place, for people (never a password)."""
        ...

    def exists(self) -> bool: ...

    def position(self) -> int | None:
        """The last store position applied, ``None`` if the read model does not exist."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[ReadModelDb]:
        """A connection to read from, seeing one committed state throughout."""
        ...

    def lease(self) -> Lease: ...

    def writer(self, lease: Lease) -> ReadModelDb:
        """The connection the holder of ``lease`` writes with (transactions are opened by
        the caller: ``begin_write``); closed with ``close_db``."""
        ...

    def close(self) -> None:
        """Let go of pooled connections."""
        ...


# ------------------------------------------------------------------------------- SQLite


def lease_path(db_path: Path) -> Path:
    """``<read model>.lease``: the file whose lock makes a projector the active one."""
    return db_path.with_name(f"{db_path.name}.lease")


class ReadModelLease:
    """The right to write one SQLite read model: an exclusive ``flock`` on ``lease_path``.

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


def data_dir_of(db_path: Path) -> Path:
    """The data dir a read model file lies under (``read_model_path``'s ``data_dir``)."""
    return db_path.parent.parent


def read_model_path(data_dir: Path, name: str) -> Path:
    """``<data dir>/read_models/<name>.sqlite3`` (ADR 3)."""
    return data_dir / "read_models" / f"{name}.sqlite3"


class SqliteReadModel:
    """A read model in a SQLite file."""

    def __init__(self, path: Path, name: str | None = None, data_dir: Path | None = None) -> None:
        self.path = path
        self.name = name if name is not None else path.stem
        self.data_dir = data_dir if data_dir is not None else data_dir_of(path)

    @property
    def where(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def position(self) -> int | None:
        if not self.path.exists():
            return None
        db = open_read_model(self.path, readonly=True)
        try:
            return get_position(db)
        finally:
            db.close()

    @contextmanager
    def reading(self) -> Iterator[ReadModelDb]:
        db = open_read_model(self.path, readonly=True)
        try:
            yield db
        finally:
            db.close()

    def lease(self) -> Lease:
        return ReadModelLease(self.path)

    def writer(self, lease: Lease) -> ReadModelDb:
        return open_read_model(self.path)

    def close(self) -> None:
        """Nothing is pooled."""


# ------------------------------------------------------------------------------- PostgreSQL


class PgRow(tuple[Any, ...]):
    """A row by index and by column name, as ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _pg_rows(cursor: psycopg.Cursor[Any]) -> psycopg.rows.RowMaker[PgRow]:
    description = cursor.description or ()
    index = {column.name: i for i, column in enumerate(description)}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, index)

    return make


_TEXT = re.compile(r"\bTEXT\b")
_INTEGER = re.compile(r"\bINTEGER\b")
_DDL_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\b", re.IGNORECASE)


def pg_sql(text: str) -> str:
    """The projections' portable SQL as psycopg takes it: ``?`` -> ``%s`` (a literal ``%``
    doubled), ``BEGIN IMMEDIATE`` -> ``BEGIN``, and in ``CREATE TABLE`` byte-order text and
    64-bit integers (SQLite's ``INTEGER`` holds 64 bits, PostgreSQL's 32: a contract's
    version past 2^31 stalled a PostgreSQL projector that SQLite's took)."""
    if text.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    if _DDL_CREATE_TABLE.match(text):
        text = _TEXT.sub('TEXT COLLATE "C"', text)
        text = _INTEGER.sub("BIGINT", text)
    return text.replace("%", "%%").replace("?", "%s")


class _Pipelined:
    """A cursor of a pipelined batch: its rows, or how many rows it changed, wait for the
    server's answer only when asked for (psycopg syncs for the rows, not for the count)."""

    def __init__(self, cursor: psycopg.Cursor[PgRow]) -> None:
        self.cursor = cursor

    @property
    def rowcount(self) -> int:
        # what fetchone does first (a sync), for the count: psycopg's rowcount does not
        self.cursor._fetch_pipeline()
        return self.cursor.rowcount

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.cursor)


class PostgresReadModelDb:
    """A psycopg connection (autocommit: the caller opens its transactions with ``BEGIN``,
    as with the SQLite connections) speaking the projections' portable SQL.

    Inside ``pipelined`` the statements of a batch go to the server without waiting for each
    answer (psycopg's pipeline mode): a batch waits for the server only where a projection
    reads, instead of at every statement."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._sql: dict[str, str] = {}
        self._pipelined = False

    def _translated(self, text: str) -> str:
        found = self._sql.get(text)
        if found is None:
            found = self._sql[text] = pg_sql(text)
        return found

    @contextmanager
    def pipelined(self) -> Iterator[None]:
        with self.conn.pipeline():
            self._pipelined = True
            try:
                yield
            finally:
                self._pipelined = False

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        cursor = self.conn.cursor(row_factory=_pg_rows)
        cursor.execute(self._translated(sql), list(parameters))
        return _Pipelined(cursor) if self._pipelined else cursor

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows:
        cursor = self.conn.cursor(row_factory=_pg_rows)
        cursor.executemany(self._translated(sql), [list(p) for p in parameters])
        return cursor

    def close(self) -> None:
        self.conn.close()


def advisory_lock_key(dbname: str, schema: str) -> int:
    """The signed 64-bit advisory lock key of the read model in ``dbname``.``schema``."""
    digest = hashlib.sha256(f"cbcm-read-model:{dbname}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLease:
    """A session-level advisory lock on the connection the holder then writes with."""

    def __init__(self, store: PostgresReadModel) -> None:
        self.store = store
        self.key = advisory_lock_key(store.dbname, store.schema)
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    @property
    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or not self._held:
            raise RuntimeError("the lease is not held")
        return self._conn

    def try_take(self) -> bool:
        if self._held:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self.store.connect(f"{self.store.name} lease {_me()}")
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            self._close()
            return False
        self._held = bool(row and row[0])
        return self._held

    def holder(self) -> str:
        """The application name of the session holding the lock (``<read model> lease pid N
        on HOST``), as PostgreSQL shows it."""
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        try:
            with self.store.connect("lease look-up") as conn:
                row = conn.execute(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                    " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
                    (unsigned >> 32, unsigned & 0xFFFFFFFF),
                ).fetchone()
        except psycopg.Error:
            return "unknown"
        return str(row[0]) if row is not None and row[0] else "unknown"

    def release(self) -> None:
        if self._held and self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._held = False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class PostgresReadModel:
    """A read model in schema ``schema`` of a PostgreSQL database."""

    def __init__(self, url: str, schema: str, name: str, data_dir: Path) -> None:
        self.url = url
        self.schema = schema
        self.name = name
        self.data_dir = data_dir
        info = psycopg.conninfo.conninfo_to_dict(url)
        self.dbname = str(info.get("dbname") or info.get("user") or "postgres")
        self._host = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        self._down_until = 0.0

    @property
    def where(self) -> str:
        return f"PostgreSQL {self._host}/{self.dbname} schema {self.schema}"

    def connect(self, purpose: str) -> psycopg.Connection[Any]:
        """A new autocommit connection working in the read model's schema."""
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=f"cbcm {purpose}"[:63],
            # A dead peer on a silent network shows within about 20 s.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=2,
        )
        self._in_schema(conn)
        return conn

    def _in_schema(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _reader_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=0,
                    max_size=8,
                    timeout=POOL_WAIT,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": CONNECT_TIMEOUT,
                        "application_name": f"cbcm read {self.name}",
                    },
                    configure=self._in_schema,
                    check=ConnectionPool.check_connection,
                    open=True,
                )
            return self._pool

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; while the server was just found unreachable, a failure at
        once (for ``DOWN_FOR`` seconds) rather than each caller waiting out the pool's
        timeout: the API answers 503 at once, and the pool reconnects meanwhile."""
        if time.monotonic() < self._down_until:
            raise ReadModelUnreachable(f"{self.where} was unreachable moments ago")
        try:
            with self._reader_pool().connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._down_until = time.monotonic() + DOWN_FOR
            raise

    def exists(self) -> bool:
        return self.position() is not None

    def position(self) -> int | None:
        try:
            with self._reader() as conn:
                row = conn.execute("SELECT max(position) FROM projection_position").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        return int(row[0] or 0) if row is not None else None

    @contextmanager
    def reading(self) -> Iterator[ReadModelDb]:
        with self._reader() as conn:
            # one snapshot for every query of a read (the inbox and its actions agree)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield PostgresReadModelDb(conn)
            finally:
                # nothing was written; a session lost meanwhile has nothing to roll back
                # (the pool replaces it), and the error that lost it is the one to tell
                with contextlib.suppress(psycopg.OperationalError, psycopg.InterfaceError):
                    conn.execute("ROLLBACK")

    def lease(self) -> PostgresLease:
        return PostgresLease(self)

    def writer(self, lease: Lease) -> ReadModelDb:
        if not isinstance(lease, PostgresLease) or lease.store is not self:
            raise TypeError("a PostgreSQL read model is written on its own lease's session")
        conn = lease.connection
        if conn.info.server_version >= 140000:
            # the lease's session idles between batches, through a rebuild's whole replay
            # into its scratch file: a server's idle_session_timeout must not end it
            conn.execute("SET idle_session_timeout = 0")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        self._in_schema(conn)
        return PostgresReadModelDb(conn)

    def drop(self) -> None:
        """Drop the read model's schema (tests, and a rebuild into a schema of one's own)."""
        with self.connect("drop") as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


# ------------------------------------------------------------------------------- choosing

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def postgres_url_and_prefix(url: str) -> tuple[str, str]:
    """The connection URL without the ``schema`` parameter, and the schema prefix it gives
    (``<schema>_``; default ``cbcm_``)."""
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if p]
    schema = [p.split("=", 1)[1] for p in query if p.startswith("schema=")]
    rest = "&".join(p for p in query if not p.startswith("schema="))
    cleaned = parts._replace(scheme="postgresql", query=rest).geturl()
    prefix = f"{schema[-1]}_" if schema else DEFAULT_SCHEMA_PREFIX
    return cleaned, prefix


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def read_model_store(settings: Settings, name: str, *, into: str | None = None) -> ReadModelStore:
    """The store of read model ``name`` as ``settings`` configure it
    (``CBCM_READ_MODEL_STORE``): a SQLite file under the data dir by default, else a schema
    of the PostgreSQL database. ``into``: another place for the same read model (a rebuild's
    copy): a file with SQLite, a schema name with PostgreSQL."""
    url = settings.read_model_store
    if not is_postgres(url):
        if url not in (None, "", "sqlite"):
            raise ReadModelStoreError(
                "CBCM_READ_MODEL_STORE must be unset, 'sqlite' or a postgresql:// URL"
            )
        path = Path(into) if into is not None else read_model_path(settings.data_dir, name)
        return SqliteReadModel(path, name, settings.data_dir)
    assert url is not None
    cleaned, prefix = postgres_url_and_prefix(url)
    try:
        psycopg.conninfo.conninfo_to_dict(cleaned)
    except psycopg.Error as e:
        raise ReadModelStoreError(f"CBCM_READ_MODEL_STORE is not a PostgreSQL URL: {e}") from None
    schema = into if into is not None else f"{prefix}{name}"
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ReadModelStoreError(
            f"{schema!r} is not a schema name (lower-case letters, digits, _; at most 63)"
        )
    return PostgresReadModel(cleaned, schema, name, settings.data_dir)


def status_place_of(store: ReadModelStore) -> Path | str:
    """Where the stall records of the workers of ``store``'s read model are kept
    (``services.runtime.worker_status.Place``): its PostgreSQL database, seen from every
    host, or the data directory of the SQLite files."""
    if not isinstance(store, PostgresReadModel):
        return store.data_dir
    prefix = (
        store.schema[: -len(store.name)]
        if store.name and store.schema.endswith(store.name)
        else DEFAULT_SCHEMA_PREFIX
    )
    sep = "&" if "?" in store.url else "?"
    return f"{store.url}{sep}schema={prefix.rstrip('_')}"


def as_store(where: Path | ReadModelStore) -> ReadModelStore:
    """A store for a SQLite file given by its path (what the callers of the SQLite-only
    runner passed), or the store itself."""
    return SqliteReadModel(where) if isinstance(where, Path) else where


# ------------------------------------------------------------------------------- transactions


def begin_write(db: ReadModelDb) -> None:
    """Open a write transaction that excludes every other writer of the read model until
    it ends: SQLite's ``BEGIN IMMEDIATE`` takes the file's write lock; on PostgreSQL the
    position row is locked (``FOR UPDATE``) before anything is read, so a second writer
    waits, then reads the position the first one committed."""
    if isinstance(db, PostgresReadModelDb):
        db.execute("BEGIN")
        db.execute("SELECT position FROM projection_position FOR UPDATE")
    else:
        db.execute("BEGIN IMMEDIATE")


@contextmanager
def pipelined(db: ReadModelDb) -> Iterator[None]:
    """A batch's statements sent without waiting for each answer (PostgreSQL); nothing
    changes on SQLite, which answers in-process."""
    if isinstance(db, PostgresReadModelDb):
        with db.pipelined():
            yield
    else:
        yield


def rollback(db: ReadModelDb) -> None:
    """Roll back; on PostgreSQL a session already lost has nothing left to roll back (the
    server did), and the error that lost it is the one to tell."""
    if isinstance(db, PostgresReadModelDb):
        with contextlib.suppress(psycopg.OperationalError, psycopg.InterfaceError):
            db.execute("ROLLBACK")
    elif not isinstance(db, sqlite3.Connection) or db.in_transaction:
        # SQLite has rolled back by itself after some errors (a full disk): a ROLLBACK
        # then fails and would hide the error that matters
        db.execute("ROLLBACK")


def close_db(db: ReadModelDb) -> None:
    close = getattr(db, "close", None)
    if close is not None:
        close()
