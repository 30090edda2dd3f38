"""The event store's schema under version (issue #17, ADR 21).

The tables, triggers and functions of the event store are made by versioned SQL files shipped
in the package (``services/event_store/migrations/<dialect>/NNNN_name.sql``), applied in
order by ``cbcm db init`` / ``cbcm db migrate``, and recorded in the table
``cbcm_schema_version`` (one row per version applied) in the same transaction as their DDL.

Version 1 is exactly what the release before versions made at start-up (its recorders'
``CREATE ... IF NOT EXISTS`` statements, rendered by ``tests/tools/render_schema_v1.py``):
every statement of it is idempotent, so ``cbcm db migrate`` on a store of that release
adopts it without changing it.

- PostgreSQL: nothing creates tables at start. Every process checks the recorded version
  first and refuses to start (``SchemaVersionError``, exit 2) if the store is behind this
  code ("run `cbcm db migrate`") or ahead of it (a newer cbcm wrote it).
- SQLite (the embedded default): start-up still creates what is missing, by applying the
  same files (``CBCM_CREATE_TABLES``, default true); with it false, the check as above.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from services.event_store.config import EventStoreConfigError, describe
from services.event_store.errors import EventStoreUnavailable

VERSION_TABLE = "cbcm_schema_version"
EVENTS_TABLE = {"postgresql": "cbcm_events", "sqlite": "stored_events"}
"""The application's events table: the library's names (PostgreSQL: the application's name
and ``_events``; SQLite: always ``stored_events``)."""

SCHEMA_PLACEHOLDER = '"__cbcm_schema__"'
"""How the PostgreSQL files name the store's schema (``?schema=`` of the URL)."""

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaVersionError(EventStoreConfigError):
    """The store's schema is not the version this code needs (or has none yet)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every version shipped for ``dialect`` (``postgresql`` or ``sqlite``), in order."""
    folder = resources.files("services.event_store.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the {dialect} migrations are not numbered 1..N")  # a packaging bug
    return found


def latest() -> int:
    """The schema version this code needs (the same for both dialects)."""
    return len(migrations("sqlite"))


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    applied_at: str


@dataclass(frozen=True)
class Status:
    where: str
    dialect: str
    current: int | None
    """The highest version recorded; None: no version table."""
    has_events: bool
    """The events table exists (a store of the release before versions has it, no version)."""
    applied: tuple[Applied, ...]
    latest: int

    @property
    def pending(self) -> list[Migration]:
        return [m for m in migrations(self.dialect) if m.version > (self.current or 0)]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


# ------------------------------------------------------------------------------- the store


class _Store:
    """One connection to the store ``env`` (``persistence_env``) names, dialect-neutral."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.where = describe(env)
        self.postgres = env["PERSISTENCE_MODULE"].endswith("postgres")
        self.dialect = "postgresql" if self.postgres else "sqlite"
        self.schema = env.get("POSTGRES_SCHEMA", "public")

    def table(self, name: str) -> str:
        if self.postgres:
            return f"{_quote(self.schema)}.{_quote(name)}"
        return name

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.postgres:
            try:
                conn = psycopg.connect(
                    host=self.env["POSTGRES_HOST"],
                    port=self.env["POSTGRES_PORT"],
                    dbname=self.env["POSTGRES_DBNAME"],
                    user=self.env["POSTGRES_USER"],
                    password=self.env["POSTGRES_PASSWORD"],
                    connect_timeout=int(self.env.get("POSTGRES_CONNECT_TIMEOUT", "5")),
                    autocommit=True,
                    application_name="cbcm-db",
                )
            except psycopg.OperationalError as e:
                raise EventStoreUnavailable(" ".join(str(e).split())) from None
            with conn:
                yield conn
        else:
            db = sqlite3.connect(
                self.env["SQLITE_DBNAME"],
                timeout=float(self.env.get("SQLITE_LOCK_TIMEOUT", "10")),
                isolation_level=None,
            )
            try:
                yield db
            finally:
                db.close()

    def exists(self, conn: Any, name: str) -> bool:
        if self.postgres:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table(name),)).fetchone()
            return bool(row[0])
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def status(self, conn: Any) -> Status:
        applied: tuple[Applied, ...] = ()
        current = None
        if self.exists(conn, VERSION_TABLE):
            rows = conn.execute(
                f"SELECT version, name, applied_at FROM {self.table(VERSION_TABLE)} "  # noqa: S608
                "ORDER BY version"
            ).fetchall()
            applied = tuple(Applied(int(v), str(n), str(a)) for v, n, a in rows)
            current = applied[-1].version if applied else 0
        return Status(
            where=self.where,
            dialect=self.dialect,
            current=current,
            has_events=self.exists(conn, EVENTS_TABLE[self.dialect]),
            applied=applied,
            latest=latest(),
        )

    def version_table_ddl(self) -> str:
        if self.postgres:
            return (
                f"CREATE TABLE IF NOT EXISTS {self.table(VERSION_TABLE)} (version integer "
                "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
            )
        return (
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )

    def rendered(self, migration: Migration) -> str:
        if self.postgres:
            return migration.sql.replace(SCHEMA_PLACEHOLDER, _quote(self.schema))
        return migration.sql


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _open(env: dict[str, str]) -> _Store:
    return _Store(env)


# ------------------------------------------------------------------------------- commands


def status(env: dict[str, str]) -> Status:
    store = _open(env)
    with store.connect() as conn:
        return store.status(conn)


def migrate(env: dict[str, str], *, only_if_empty: bool = False) -> list[Migration]:
    """Apply every pending version, in one transaction, and record each; returns them.

    Serialised with every other migration and with the recorders' own DDL (PostgreSQL: the
    advisory lock they take; SQLite: an immediate transaction). ``only_if_empty`` (``cbcm db
    init``): refuse a store that already has tables."""
    store = _open(env)
    with store.connect() as conn:
        if not only_if_empty and store.status(conn).up_to_date:
            return []  # nothing to lock or write (a read-only copy opens too)
        if store.postgres:
            with conn.transaction():
                conn.execute(
                    SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
                        Literal(f"cbcm-ddl:{store.schema}")
                    )
                )
                return _apply(store, conn, only_if_empty)
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = _apply(store, conn, only_if_empty)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return done


def _apply(store: _Store, conn: Any, only_if_empty: bool) -> list[Migration]:
    found = store.status(conn)
    if only_if_empty and (found.has_events or found.current is not None):
        raise SchemaVersionError(
            f"the event store ({store.where}) already has tables (schema version "
            f"{found.current if found.current is not None else 'none'}): "
            "`cbcm db migrate` brings it up to date"
        )
    if found.current is not None and found.current > found.latest:
        raise _ahead(found)
    conn.execute(store.version_table_ddl())
    done = []
    for migration in found.pending:
        if store.postgres:
            conn.execute(store.rendered(migration))  # several statements, no parameters
        else:
            for statement in _sqlite_statements(migration.sql):
                conn.execute(statement)
        conn.execute(
            f"INSERT INTO {store.table(VERSION_TABLE)} VALUES ("  # noqa: S608
            + ("%s, %s, %s)" if store.postgres else "?, ?, ?)"),
            (migration.version, migration.name, datetime.now(UTC).isoformat()),
        )
        done.append(migration)
    return done


def _sqlite_statements(script: str) -> Iterator[str]:
    """The statements of a SQLite script (triggers hold ';' inside BEGIN ... END)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise RuntimeError("a SQLite migration ends inside a statement")  # a packaging bug


def check(env: dict[str, str]) -> Status:
    """Refuse (``SchemaVersionError``) unless the store is at the version this code needs."""
    found = status(env)
    if found.up_to_date:
        return found
    if found.current is not None and found.current > found.latest:
        raise _ahead(found)
    if found.current is None and not found.has_events:
        raise SchemaVersionError(
            f"the event store ({found.where}) has no tables: run `cbcm db init` "
            "(as the tables' owner) before starting cbcm"
        )
    was = (
        "was created before schema versions"
        if found.current is None
        else f"is at schema version {found.current}"
    )
    raise SchemaVersionError(
        f"the event store ({found.where}) {was}; this cbcm needs version {found.latest}: "
        "run `cbcm db migrate` (as the tables' owner), then start cbcm again"
    )


def _ahead(found: Status) -> SchemaVersionError:
    return SchemaVersionError(
        f"the event store ({found.where}) is at schema version {found.current}, newer than "
        f"this cbcm knows ({found.latest}): run the cbcm that migrated it, or a newer one"
    )


def prepare(env: dict[str, str], *, create: bool) -> None:
    """At a process's start: SQLite with ``create``: apply what is missing; else check."""
    if create and not env["PERSISTENCE_MODULE"].endswith("postgres"):
        migrate(env)
    else:
        check(env)


# --------------------------------------------------------------------------------- grants


def grants(env: dict[str, str], role: str) -> list[str]:
    """The least-privilege grants of the application's role on a PostgreSQL store: INSERT
    and SELECT on the log and everything that is append-only (triggers refuse the rest even
    to the owner), UPDATE of the data keys' wrapping columns only (erasure, rotation), the
    relay's position by upsert, and reading the schema version."""
    store = _open(env)
    if not store.postgres:
        raise EventStoreConfigError(
            "grants are for a PostgreSQL store: a SQLite store is a file of the service user"
        )
    s = Identifier(store.schema)
    r = Identifier(role)

    def t(name: str) -> psycopg.sql.Composed:
        return SQL("{}.{}").format(s, Identifier(name))

    e = EVENTS_TABLE["postgresql"]
    statements = [
        SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
        SQL("GRANT SELECT, INSERT ON {}, {}, {}, {}, {} TO {}").format(
            t(e), t(f"{e}_chain"), t(f"{e}_tiles"), t(f"{e}_writer"), t(f"{e}_custody"), r
        ),
        SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r),
        SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(t("cbcm_tracking"), r),
        SQL("GRANT SELECT, INSERT ON {} TO {}").format(t(f"{e}_data_keys"), r),
        SQL("GRANT UPDATE (kek_id, wrapped, erased_at) ON {} TO {}").format(t(f"{e}_data_keys"), r),
        SQL("GRANT SELECT, INSERT ON {} TO {}").format(t(f"{e}_key_ring"), r),
        SQL("GRANT SELECT ON {} TO {}").format(t(VERSION_TABLE), r),
    ]
    return [statement.as_string() for statement in statements]


def apply_grants(env: dict[str, str], role: str) -> list[str]:
    """Run ``grants`` on the store, in one transaction (as the tables' owner); returns them."""
    statements = grants(env, role)
    store = _open(env)
    with store.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)
    return statements
