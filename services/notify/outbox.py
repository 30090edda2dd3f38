"""The outbox: one row per notice, keyed by (recipient, kind, subject).

The same table lives in two files. In the intake's (``notify.sqlite3``) rows are added in
the transaction that records the stream position; the sender copies them into its own
(``notify-sender.sqlite3``, ``pull``: rows and cursor in one transaction), where the
scheduler adds reminders and digests (one transaction per tick) and every row's delivery is
tracked. ``INSERT OR IGNORE`` on the key makes adding the same notice again a no-op, which
is what makes a redelivered event, a replayed stream, a copy repeated or a scheduler tick
repeated after a crash harmless. The sender moves a row through its states, one committed
step at a time:

``pending`` -> ``sending`` (attempt counted, before any byte goes out) -> each channel that
took it is listed in ``done_channels`` -> the event is in the log -> ``sent``. A failure
puts it back to ``pending`` with ``next_attempt_at`` later, or ``undelivered`` after the
last attempt. ``held``: waiting for the person's daily digest; ``digested``: told in one.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.notification import notification_key
from domain.vocabulary import NotificationKind
from projections.base import ReadModelDb, parse_ts, ts

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notify_outbox ("
    " key TEXT PRIMARY KEY, recipient TEXT NOT NULL, kind TEXT NOT NULL, about TEXT NOT NULL,"
    " case_id TEXT, organisation TEXT, urgent INTEGER NOT NULL, count INTEGER NOT NULL,"
    " detail TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, state TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,"
    " done_channels TEXT NOT NULL DEFAULT '', reason TEXT, finished_at TEXT)",
    "CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS notify_outbox_recipient ON notify_outbox (recipient, state)",
    "CREATE TABLE IF NOT EXISTS notify_cursor (copied INTEGER NOT NULL)",
)

OPEN_STATES = ("pending", "sending")
FINAL_STATES = ("sent", "undelivered", "digested")


@dataclass(frozen=True)
class Notice:
    """One row of the outbox."""

    key: str
    recipient: str
    kind: NotificationKind
    about: str
    case_id: UUID | None
    organisation: str | None
    urgent: bool
    count: int
    detail: dict[str, int]
    created_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    done_channels: tuple[str, ...]


def create(db: ReadModelDb) -> None:
    for statement in SCHEMA:
        db.execute(statement)


PULL_BATCH = 1000


def pull(db: sqlite3.Connection, source: sqlite3.Connection) -> int:
    """Copy the notices the intake added to its file (``source``) since the last pull into
    the sender's (``db``): the rows and how far they were copied in one transaction of
    ``db``, so a restart copies each exactly once. The intake never waits on the sender's
    writes this way (two SQLite files, two write locks). How many rows were copied."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT max(copied) FROM notify_cursor").fetchone()
        cursor = int(row[0] or 0)
        rows = source.execute(
            "SELECT rowid, key, recipient, kind, about, case_id, organisation, urgent, count,"
            " detail, created_at, next_attempt_at FROM notify_outbox WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?",
            (cursor, PULL_BATCH),
        ).fetchall()
        if rows:
            db.executemany(
                "INSERT OR IGNORE INTO notify_outbox (key, recipient, kind, about, case_id,"
                " organisation, urgent, count, detail, created_at, state, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                [tuple(r)[1:] for r in rows],
            )
            db.execute("DELETE FROM notify_cursor")
            db.execute("INSERT INTO notify_cursor (copied) VALUES (?)", (rows[-1][0],))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(rows)


def enqueue(
    db: ReadModelDb,
    *,
    recipient: str,
    kind: NotificationKind,
    about: str,
    at: datetime,
    case_id: UUID | str | None = None,
    organisation: str | None = None,
    urgent: bool = False,
    count: int = 1,
    detail: dict[str, int] | None = None,
) -> bool:
    """Add a notice unless one with its key exists (inside the caller's transaction).
    Whether it was added."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO notify_outbox (key, recipient, kind, about, case_id,"
        " organisation, urgent, count, detail, created_at, state, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
        (
            notification_key(recipient, kind, about),
            recipient,
            kind.value,
            about,
            None if case_id is None else str(case_id),
            organisation,
            int(urgent),
            count,
            json.dumps(detail or {}, sort_keys=True),
            ts(at),
            ts(at),
        ),
    )
    return cursor.rowcount == 1


def _notice(row: sqlite3.Row) -> Notice:
    return Notice(
        key=row["key"],
        recipient=row["recipient"],
        kind=NotificationKind(row["kind"]),
        about=row["about"],
        case_id=None if row["case_id"] is None else UUID(row["case_id"]),
        organisation=row["organisation"],
        urgent=bool(row["urgent"]),
        count=int(row["count"]),
        detail={str(k): int(v) for k, v in json.loads(row["detail"]).items()},
        created_at=parse_ts(row["created_at"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        next_attempt_at=parse_ts(row["next_attempt_at"]),
        done_channels=tuple(c for c in row["done_channels"].split(",") if c),
    )


def due(db: sqlite3.Connection, now: datetime, limit: int) -> list[Notice]:
    """Pending notices whose time has come: urgent first, then oldest."""
    rows = db.execute(
        "SELECT * FROM notify_outbox WHERE state = 'pending' AND next_attempt_at <= ?"
        " ORDER BY urgent DESC, created_at, key LIMIT ?",
        (ts(now), limit),
    ).fetchall()
    return [_notice(r) for r in rows]


def in_flight(db: sqlite3.Connection) -> list[Notice]:
    """Notices a stopped sender left between its first attempt and its record."""
    rows = db.execute("SELECT * FROM notify_outbox WHERE state = 'sending'").fetchall()
    return [_notice(r) for r in rows]


def get(db: sqlite3.Connection, key: str) -> Notice | None:
    row = db.execute("SELECT * FROM notify_outbox WHERE key = ?", (key,)).fetchone()
    return None if row is None else _notice(row)


def _update(db: sqlite3.Connection, key: str, **values: object) -> None:
    assignments = ", ".join(f"{column} = ?" for column in values)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"UPDATE notify_outbox SET {assignments} WHERE key = ?", (*values.values(), key))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def mark_sending(db: sqlite3.Connection, key: str, attempts: int) -> bool:
    """Before any byte goes out: the attempt is counted and the row is in flight. Only from
    ``pending``: ``False`` if another sender took it first (it is then theirs)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        taken = db.execute(
            "UPDATE notify_outbox SET state = 'sending', attempts = ?"
            " WHERE key = ? AND state = 'pending'",
            (attempts, key),
        ).rowcount
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return taken == 1


def mark_sending_many(db: sqlite3.Connection, attempts: list[tuple[str, int]]) -> set[str]:
    """``mark_sending`` for a batch, in one commit: the keys this sender took."""
    taken: set[str] = set()
    if not attempts:
        return taken
    db.execute("BEGIN IMMEDIATE")
    try:
        for key, count in attempts:
            changed = db.execute(
                "UPDATE notify_outbox SET state = 'sending', attempts = ?"
                " WHERE key = ? AND state = 'pending'",
                (count, key),
            ).rowcount
            if changed == 1:
                taken.add(key)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return taken


def finish_many(
    db: sqlite3.Connection, ends: list[tuple[str, str, str | None]], at: datetime
) -> None:
    """Close a batch's notices (``sent`` or ``undelivered``), in one commit."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "UPDATE notify_outbox SET state = ?, reason = ?, finished_at = ? WHERE key = ?",
            [(state, reason, ts(at), key) for key, state, reason in ends],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def postpone_many(
    db: sqlite3.Connection, changes: list[tuple[str, str | None, datetime | None]]
) -> None:
    """Hold notices for a digest (state ``held``) or put them off until a time, in one
    commit (``(key, "held", None)`` or ``(key, None, until)``)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for key, state, until in changes:
            if state == "held":
                db.execute(
                    "UPDATE notify_outbox SET state = 'held' WHERE key = ? AND state = 'pending'",
                    (key,),
                )
            elif until is not None:
                db.execute(
                    "UPDATE notify_outbox SET next_attempt_at = ? WHERE key = ?"
                    " AND state = 'pending'",
                    (ts(until), key),
                )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def mark_channel_done(db: sqlite3.Connection, key: str, done: tuple[str, ...]) -> None:
    _update(db, key, done_channels=",".join(done))


def mark_final(
    db: sqlite3.Connection, key: str, state: str, at: datetime, reason: str | None
) -> None:
    _update(db, key, state=state, finished_at=ts(at), reason=reason)


def retry_at(db: sqlite3.Connection, key: str, at: datetime, reason: str | None = None) -> None:
    _update(db, key, state="pending", next_attempt_at=ts(at), reason=reason)


def hold(db: sqlite3.Connection, key: str) -> None:
    _update(db, key, state="held")


def undelivered_between(db: sqlite3.Connection, start: datetime, end: datetime) -> int:
    """Notices given up on in [start, end)."""
    row = db.execute(
        "SELECT count(*) FROM notify_outbox WHERE state = 'undelivered'"
        " AND finished_at >= ? AND finished_at < ?",
        (ts(start), ts(end)),
    ).fetchone()
    return int(row[0])
