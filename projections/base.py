"""What every read model shares: the ``Projection`` protocol of ADR 3, the connection a
projection writes through (``ReadModelDb``: a SQLite connection, or the PostgreSQL one of
``services.projector.storage``, ADR 16), opening a read-model SQLite file, the one-row
``projection_position`` table, times as sortable text, and the network policy's default
deadlines.

Projections import only ``contracts/`` and the standard library. The runner
(``services/projector``) owns the transaction: ``apply`` changes rows through ``db`` and never
commits.

The SQL of every projection runs unchanged on SQLite and PostgreSQL: ``?`` parameters (the
PostgreSQL connection turns them into ``%s``), ``INSERT ... ON CONFLICT DO NOTHING`` rather
than ``INSERT OR IGNORE``, ``replace_row`` rather than ``INSERT OR REPLACE``, no ``rowid``,
column types both read alike (``TEXT``, ``INTEGER``, ``BIGINT``, ``DOUBLE PRECISION``;
``INTEGER`` is made a 64-bit ``BIGINT`` on PostgreSQL, as SQLite's is), and no
reserved word as a bare column name. Text compares byte by byte on both (PostgreSQL's
tables are created with the "C" collation), so an ``ORDER BY`` gives the same order.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from contracts.envelope import CloudEvent
from contracts.network import NetworkPolicyV1

Row = Any
"""A row: its values by index (``row[0]``) and by column name (``row["case_id"]``)."""


class Rows(Protocol):
    """What a statement answers: its rows, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row: ...

    def fetchall(self) -> list[Row]: ...

    def __iter__(self) -> Iterator[Row]: ...


class ReadModelDb(Protocol):
    """The connection a projection reads and writes its tables through: a
    ``sqlite3.Connection`` or the PostgreSQL one of ``services.projector.storage``."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows: ...


class Projection(Protocol):
    """A read model fed by contract messages (ADR 3)."""

    name: str
    schema_version: int
    """Changes when the tables change: a read model made with another version is dropped
    and replayed from the stream (read models are rebuildable; ADR 16)."""

    def create_tables(self, db: ReadModelDb) -> None: ...

    def drop_tables(self, db: ReadModelDb) -> None: ...

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None: ...

    def end_batch(self, db: ReadModelDb) -> None:
        """Finish work deferred by ``apply`` (same transaction, before the position)."""
        ...


def replace_row(
    db: ReadModelDb, table: str, keys: Sequence[str], values: Mapping[str, object]
) -> None:
    """Put a row in place of the one with the same ``keys`` (columns not given take their
    defaults, as SQLite's ``INSERT OR REPLACE`` did), on either database."""
    where = " AND ".join(f"{key} = ?" for key in keys)
    db.execute(f"DELETE FROM {table} WHERE {where}", [values[key] for key in keys])
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values()))


# ------------------------------------------------------------------------------- database


def open_read_model(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) a read-model SQLite file.

    The connection is in autocommit mode (``isolation_level=None``): whoever writes opens
    the transaction explicitly (``BEGIN IMMEDIATE`` ... ``COMMIT``), so one batch of messages
    and its position are one transaction. WAL lets readers (the API) read while the
    projector writes. Rows come back as ``sqlite3.Row``. The connection may move between
    threads (the runner applies batches in a worker thread) but is never used by two at once.
    """
    if readonly:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0, check_same_thread=False
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=10000")
    return db


POSITION_TABLE = "projection_position"
SCHEMA_TABLE = "projection_schema"


def create_position_table(db: ReadModelDb) -> None:
    """The one-row table ``projection_position(position)``; 0 when nothing is applied."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {POSITION_TABLE} (position BIGINT NOT NULL)")
    if db.execute(f"SELECT count(*) FROM {POSITION_TABLE}").fetchone()[0] == 0:
        db.execute(f"INSERT INTO {POSITION_TABLE} (position) VALUES (0)")


def get_schema_version(db: ReadModelDb) -> int | None:
    """The schema version the read model's tables were made with: ``None`` when it has no
    position table (nothing made yet), 1 when it has one but no version (made before
    versions were recorded)."""
    tables = table_names(db)
    if POSITION_TABLE not in tables:
        return None
    if SCHEMA_TABLE not in tables:
        return 1
    row = db.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()
    return 1 if row is None else int(row[0])


def set_schema_version(db: ReadModelDb, version: int) -> None:
    db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
    db.execute(f"DELETE FROM {SCHEMA_TABLE}")
    db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)", (version,))


def drop_schema_table(db: ReadModelDb) -> None:
    db.execute(f"DROP TABLE IF EXISTS {SCHEMA_TABLE}")


def table_names(db: ReadModelDb) -> set[str]:
    """The read model's tables (SQLite's own, ``sqlite_sequence`` and the like, left out)."""
    rows: Rows
    if isinstance(db, sqlite3.Connection):
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
        )
    else:  # PostgreSQL: the tables of the schema the connection works in
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    return {str(r[0]) for r in rows}


def get_position(db: ReadModelDb) -> int:
    """The last applied stream position (0 when none, or when the table does not exist)."""
    try:
        row = db.execute(f"SELECT max(position) FROM {POSITION_TABLE}").fetchone()
    except sqlite3.OperationalError:  # no such table: nothing was ever applied
        return 0
    return int(row[0] or 0)


def set_position(db: ReadModelDb, position: int) -> None:
    """Record ``position`` as applied (inside the caller's transaction)."""
    db.execute(f"UPDATE {POSITION_TABLE} SET position = ?", (position,))


def drop_position_table(db: ReadModelDb) -> None:
    db.execute(f"DROP TABLE IF EXISTS {POSITION_TABLE}")


# ------------------------------------------------------------------------------- times


EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC. A time within hours of the year 1 or 9999 whose UTC falls outside
    what Python can hold is taken as the nearest time it can: a read model must apply every
    message the contracts allow (ADR 10), and the API refuses such times anyway."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("read models store zone-aware times only")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return EARLIEST if moment.year == 1 else LATEST


def later(moment: datetime, span: timedelta) -> datetime:
    """``moment + span``, or the latest time there is when the sum cannot be held."""
    try:
        return moment + span
    except OverflowError:
        return LATEST if span > timedelta(0) else EARLIEST


def ts(moment: datetime) -> str:
    """A time as UTC text of fixed width, so that text order is time order."""
    return utc(moment).isoformat(timespec="microseconds")


def ts_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else ts(moment)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parse_ts_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# ------------------------------------------------------------------------------- policy

DEFAULT_POLICY = NetworkPolicyV1(
    assess_within=timedelta(hours=24),
    offer_assistance_within=timedelta(hours=24),
    refer_for_investigation_within=timedelta(hours=24),
    acknowledge_within=timedelta(days=7),
    feedback_every=timedelta(days=30),
    assistance_acceptance_within=timedelta(hours=72),
    suppression_threshold=5,
    personal_data_retention=timedelta(days=5 * 365),
)
"""The defaults of DOMAIN.md (and of ``domain.policy.NetworkPolicy``, which a test checks),
used until the stream says what the network's policy is."""

POLICY_DURATIONS = (
    "assess_within",
    "offer_assistance_within",
    "refer_for_investigation_within",
    "acknowledge_within",
    "feedback_every",
    "assistance_acceptance_within",
)


def create_policy_table(db: ReadModelDb, table: str) -> None:
    """A one-row table of the policy's deadlines (seconds), holding the defaults at first."""
    columns = ", ".join(f"{name} DOUBLE PRECISION NOT NULL" for name in POLICY_DURATIONS)
    db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    if db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0:
        store_policy(db, table, DEFAULT_POLICY, insert=True)


def store_policy(
    db: ReadModelDb, table: str, policy: NetworkPolicyV1, *, insert: bool = False
) -> None:
    values = [getattr(policy, name).total_seconds() for name in POLICY_DURATIONS]
    if insert:
        marks = ", ".join("?" for _ in POLICY_DURATIONS)
        db.execute(f"INSERT INTO {table} ({', '.join(POLICY_DURATIONS)}) VALUES ({marks})", values)
    else:
        assignments = ", ".join(f"{name} = ?" for name in POLICY_DURATIONS)
        db.execute(f"UPDATE {table} SET {assignments}", values)


def load_deadlines(db: ReadModelDb, table: str) -> dict[str, timedelta]:
    """The policy's deadlines by name (the defaults if the table is empty)."""
    row = db.execute(f"SELECT {', '.join(POLICY_DURATIONS)} FROM {table}").fetchone()
    if row is None:
        return {name: getattr(DEFAULT_POLICY, name) for name in POLICY_DURATIONS}
    return {name: timedelta(seconds=row[name]) for name in POLICY_DURATIONS}
