"""Where events are stored: ``CBCM_EVENT_STORE`` turned into eventsourcing's environment."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from psycopg.conninfo import conninfo_to_dict

from services.event_store.chain import POSTGRES_RECORDER_TOPIC, SQLITE_RECORDER_TOPIC
from services.event_store.errors import EventStoreUnavailable
from services.event_store.key_files import create_random_key
from services.event_store.positions import POSTGRES_TRACKING_TOPIC
from services.settings import Settings


class EventStoreConfigError(ValueError):
    """``CBCM_EVENT_STORE`` cannot be understood."""


def persistence_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for the configured store.

    Accepted: unset (a SQLite file ``events.sqlite3`` under ``CBCM_DATA_DIR``),
    ``sqlite:///relative/or//absolute/path``, ``postgresql://user:pw@host:port/db`` (a
    ``schema`` query parameter selects a schema; ``host`` may be a socket directory).
    """
    env = _located(settings)
    # Only the embedded SQLite store makes its tables at start; a PostgreSQL store's are made
    # by `cbcm db migrate` and checked at start (services.event_store.schema).
    sqlite = env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    if not sqlite:
        env["POSTGRES_POOL_SIZE"] = str(settings.event_store_pool_size)
    env["CREATE_TABLE"] = "y" if settings.create_tables and sqlite else "n"
    env.update(
        _personal_data_env(settings, postgres=env["PERSISTENCE_MODULE"].endswith("postgres"))
    )
    env.update(_writer_env(settings))
    return env


def store_location(settings: Settings) -> dict[str, str]:
    """Where the events are (``persistence_env`` without keys): for ``cbcm db``, which
    touches tables only and so needs, and makes, no key."""
    env = _located(settings)
    env["CREATE_TABLE"] = "n"
    return env


def _writer_env(settings: Settings) -> dict[str, str]:
    """The key every commit is marked with (ADR 14), and where what the database forgets is
    kept (ADR 23)."""
    # writable, unlike a credentials directory the writer key may be handed in
    ledger = {
        "CBCM_ERASURE_LEDGER_DIR": str(settings.erasure_ledger_dir or settings.data_dir / "keys")
    }
    if settings.writer_key_file is not None:
        return {"CBCM_WRITER_KEY_FILE": str(settings.writer_key_file), **ledger}
    return {
        "CBCM_WRITER_KEY_FILE": str(settings.data_dir / "keys" / "writer.key"),
        "CBCM_WRITER_KEY_CREATE": "y",
        **ledger,
    }


def _personal_data_env(settings: Settings, *, postgres: bool) -> dict[str, str]:
    """Where the key-encryption keys come from, and the whole-event cipher (ADR 8)."""
    env = {"CBCM_DATA_KEY_CACHE_SECONDS": str(settings.data_key_cache_seconds)}
    if settings.kms_hook:
        env["CBCM_KMS_HOOK"] = settings.kms_hook
    elif settings.kek_dir is not None:
        env["CBCM_KEK_DIR"] = str(settings.kek_dir)
    else:
        env["CBCM_KEK_DIR"] = str(settings.data_dir / "keys" / "kek")
        env["CBCM_KEK_CREATE"] = "y"
    cipher = settings.event_cipher == "on" or (settings.event_cipher == "auto" and postgres)
    if cipher:
        env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
        env["CIPHER_KEY"] = _event_cipher_key(settings)
    return env


def _event_cipher_key(settings: Settings) -> str:
    path = settings.event_cipher_key_file
    if path is None:
        path = settings.data_dir / "keys" / "event-cipher.key"
        if not path.exists():
            _make_dir(path.parent)
            try:
                create_random_key(path)  # whole or not at all: no process reads it half made
            except OSError as e:
                raise EventStoreConfigError(
                    f"cannot create the event cipher key {path}: {e.strerror}"
                ) from None
    try:
        key = path.read_text().strip()
        raw = base64.b64decode(key, validate=True)
    except (OSError, ValueError) as e:
        raise EventStoreConfigError(f"the event cipher key {path} is unreadable: {e}") from None
    if len(raw) not in (16, 24, 32):
        raise EventStoreConfigError(f"the event cipher key {path} is not an AES key")
    return key


def _located(settings: Settings) -> dict[str, str]:
    url = settings.event_store
    if not url:
        _make_dir(settings.data_dir)
        return _sqlite(settings.data_dir / "events.sqlite3")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as e:
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a URL: {e}") from None
    if scheme == "sqlite":
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise EventStoreConfigError("CBCM_EVENT_STORE=sqlite:///PATH needs a file path")
        file = Path(path)
        _make_dir(file.parent)
        return _sqlite(file)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise EventStoreConfigError(
        f"CBCM_EVENT_STORE scheme {scheme or '(none)'!r} is not supported: "
        "use sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME"
    )


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EventStoreConfigError(f"cannot create {directory}: {e.strerror}") from None


def describe(env: dict[str, str]) -> str:
    """Where the events are, for messages (never the password)."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        return f"SQLite {env['SQLITE_DBNAME']}"
    schema = env.get("POSTGRES_SCHEMA", "public")
    return (
        f"PostgreSQL {env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
        f"/{env['POSTGRES_DBNAME']} schema {schema}"
    )


def _sqlite(file: Path) -> dict[str, str]:

    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "APPLICATION_RECORDER_TOPIC": SQLITE_RECORDER_TOPIC,
        "SQLITE_DBNAME": str(file),
        "SQLITE_LOCK_TIMEOUT": "10",
    }


def _postgres(url: str) -> dict[str, str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a PostgreSQL URL: {e}") from None
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    schema = query.pop("schema", None)
    cleaned = parts._replace(
        scheme="postgresql", query="&".join(f"{k}={v}" for k, v in query.items())
    ).geturl()
    try:
        info = conninfo_to_dict(cleaned)
    except Exception as e:  # psycopg raises ProgrammingError for malformed strings
        raise EventStoreConfigError(f"CBCM_EVENT_STORE is not a PostgreSQL URL: {e}") from None

    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": POSTGRES_RECORDER_TOPIC,
        "TRACKING_RECORDER_TOPIC": POSTGRES_TRACKING_TOPIC,
        "POSTGRES_DBNAME": str(info.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env


# ------------------------------------------------------------------------------- outages


class EventStoreUnreachable(EventStoreUnavailable, PersistenceError):
    """The event store's server refuses connections: raised at once, and not retried by the
    library (which retries ``OperationalError`` and ``InterfaceError`` only)."""


class OutageGuard:
    """Fails calls to a PostgreSQL event store at once while its server is down.

    The library retries a failed call ten times, and while the server is down each try waits
    out the connection pool's timeout for a connection that cannot come: a request would
    hang for most of a minute before being answered. After a call fails on its connection,
    the guard probes the server with a connection of its own (refused at once while it is
    down) before the next call, and fails that call with ``EventStoreUnreachable`` until a
    probe connects. A probe's result stands for ``PROBE_EVERY`` seconds, so that many
    callers at once make one probe. Nothing changes while the server answers: a connection
    broken by a restart is still retried by the library, on a new one from the pool.

    It also counts, per thread, the connections handed out and the calls that failed on
    theirs (``activity``): a commit that failed without a connection never reached the
    server, so nothing of it was recorded; one that failed on its connection may have gone
    through (``ComplaintMechanism._commit`` tells which).
    """

    PROBE_EVERY = 0.2

    def __init__(self, datastore: Any, probe_timeout: int = 2) -> None:
        self._get_connection = datastore.get_connection
        self._pool = datastore.pool
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._suspect = False
        self._probed_at = 0.0
        self._answered = True
        self._used = threading.local()

    def activity(self) -> tuple[int, int]:
        return int(getattr(self._used, "count", 0)), int(getattr(self._used, "failed", 0))

    def install(self, datastore: Any) -> None:
        # Every connection the datastore hands out (recorders, transactions, the type
        # adapters' look-up) comes through its get_connection.
        datastore.get_connection = self.get_connection

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        if self._suspect and not self._server_answers():
            raise EventStoreUnreachable("the event store's server does not accept connections")
        try:
            with self._get_connection() as conn:
                self._used.count = getattr(self._used, "count", 0) + 1
                yield conn
        except (OperationalError, InterfaceError):
            self._used.failed = getattr(self._used, "failed", 0) + 1
            self._suspect = True
            raise

    def _server_answers(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._probed_at >= self.PROBE_EVERY:
                self._answered = self._probe()
                self._probed_at = time.monotonic()
            if self._answered:
                self._suspect = False
            return self._answered

    def _probe(self) -> bool:
        kwargs = {k: v for k, v in (self._pool.kwargs or {}).items() if k != "row_factory"}
        kwargs["connect_timeout"] = self._probe_timeout
        try:
            psycopg.connect(self._pool.conninfo or "", **kwargs).close()
        except psycopg.Error:
            return False
        return True
