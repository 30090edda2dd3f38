"""What every read model shares: the ``Projection`` protocol of ADR 3, opening a read-model
SQLite file, the one-row ``projection_position`` table, times as sortable text, and the
network policy's default deadlines.

Projections import only ``contracts/`` and the standard library. The runner
(``services/projector``) owns the transaction: ``apply`` changes rows through ``db`` and never
commits.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from contracts.envelope import CloudEvent
from contracts.network import NetworkPolicyV1


class Projection(Protocol):
    """A read model fed by contract messages (ADR 3)."""

    name: str

    def create_tables(self, db: sqlite3.Connection) -> None: ...

    def drop_tables(self, db: sqlite3.Connection) -> None: ...

    def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None: ...

    def end_batch(self, db: sqlite3.Connection) -> None:
        """Finish work deferred by ``apply`` (same transaction, before the position)."""
        ...


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


def create_position_table(db: sqlite3.Connection) -> None:
    """The one-row table ``projection_position(position)``; 0 when nothing is applied."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {POSITION_TABLE} (position INTEGER NOT NULL)")
    if db.execute(f"SELECT count(*) FROM {POSITION_TABLE}").fetchone()[0] == 0:
        db.execute(f"INSERT INTO {POSITION_TABLE} (position) VALUES (0)")


def get_position(db: sqlite3.Connection) -> int:
    """The last applied stream position (0 when none, or when the table does not exist)."""
    try:
        row = db.execute(f"SELECT max(position) FROM {POSITION_TABLE}").fetchone()
    except sqlite3.OperationalError:  # no such table: nothing was ever applied
        return 0
    return int(row[0] or 0)


def set_position(db: sqlite3.Connection, position: int) -> None:
    """Record ``position`` as applied (inside the caller's transaction)."""
    db.execute(f"UPDATE {POSITION_TABLE} SET position = ?", (position,))


def drop_position_table(db: sqlite3.Connection) -> None:
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


def create_policy_table(db: sqlite3.Connection, table: str) -> None:
    """A one-row table of the policy's deadlines (seconds), holding the defaults at first."""
    columns = ", ".join(f"{name} REAL NOT NULL" for name in POLICY_DURATIONS)
    db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
    if db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0:
        store_policy(db, table, DEFAULT_POLICY, insert=True)


def store_policy(
    db: sqlite3.Connection, table: str, policy: NetworkPolicyV1, *, insert: bool = False
) -> None:
    values = [getattr(policy, name).total_seconds() for name in POLICY_DURATIONS]
    if insert:
        marks = ", ".join("?" for _ in POLICY_DURATIONS)
        db.execute(f"INSERT INTO {table} ({', '.join(POLICY_DURATIONS)}) VALUES ({marks})", values)
    else:
        assignments = ", ".join(f"{name} = ?" for name in POLICY_DURATIONS)
        db.execute(f"UPDATE {table} SET {assignments}", values)


def load_deadlines(db: sqlite3.Connection, table: str) -> dict[str, timedelta]:
    """The policy's deadlines by name (the defaults if the table is empty)."""
    row = db.execute(f"SELECT {', '.join(POLICY_DURATIONS)} FROM {table}").fetchone()
    if row is None:
        return {name: getattr(DEFAULT_POLICY, name) for name in POLICY_DURATIONS}
    return {name: timedelta(seconds=row[name]) for name in POLICY_DURATIONS}
