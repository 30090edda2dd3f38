"""The deliverer's own store: what is queued for each endpoint, what was tried, and where
the stream was read up to (``<data dir>/webhooks/deliveries.sqlite3``, SQLite in WAL mode).

- ``cursor``: the last ``CBCM_EVENTS`` sequence fanned out, committed in the transaction that
  queues that message's deliveries (the consumer's own state is only a cursor; this is the
  truth, as a read model's position is for a projector).
- ``queue``: one row per (endpoint, event) not yet delivered, with the CloudEvent's bytes as
  published (no personal data: none travels on NATS), its attempts and the time of the next.
  Sent in position order per endpoint: a row is removed only after a 2xx answer.
- ``attempts``: the delivery log, one row per attempt (time, outcome, HTTP status or the
  error's type, duration). No body, no URL: what the log keeps is safe to show anyone who
  operates the deliverer.
- ``failing``: since when each endpoint has failed every attempt (cleared by a success).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    endpoint_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body BLOB NOT NULL,
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, position)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_endpoint ON attempts (endpoint_id, id);
CREATE TABLE IF NOT EXISTS failing (
    endpoint_id TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
"""


def outbox_path(data_dir: Path) -> Path:
    return data_dir / "webhooks" / "deliveries.sqlite3"


@dataclass(frozen=True)
class Queued:
    """One delivery waiting for its endpoint."""

    endpoint_id: UUID
    position: int
    webhook_id: str
    event_type: str
    body: bytes
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One line of the delivery log."""

    endpoint_id: UUID
    position: int
    webhook_id: str
    event_type: str
    attempt: int
    at: datetime
    outcome: str
    status: int | None
    error: str | None
    seconds: float


class Outbox:
    """The deliverer's SQLite file. One connection per thread that uses it."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        self.db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ fan-out

    def stream_seq(self) -> int:
        row = self.db.execute("SELECT stream_seq FROM cursor WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def queue_batch(
        self, rows: Iterable[tuple[UUID, int, str, str, bytes]], stream_seq: int, at: datetime
    ) -> int:
        """Queue ``rows`` (endpoint, position, webhook id, type, body) and move the cursor to
        ``stream_seq``, in one transaction; how many rows were new."""
        stamp = at.isoformat()
        added = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for endpoint_id, position, webhook_id, event_type, body in rows:
                done = self.db.execute(
                    "INSERT OR IGNORE INTO queue (endpoint_id, position, webhook_id, event_type,"
                    " body, queued_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (str(endpoint_id), position, webhook_id, event_type, body, stamp, stamp),
                )
                added += done.rowcount
            self.db.execute(
                "INSERT INTO cursor (id, stream_seq) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET stream_seq = excluded.stream_seq",
                (stream_seq,),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return added

    # ------------------------------------------------------------------ sending

    def head(self, endpoint_id: UUID) -> Queued | None:
        """The endpoint's next delivery: the lowest position (order per case follows)."""
        row = self.db.execute(
            "SELECT position, webhook_id, event_type, body, attempts, next_attempt_at "
            "FROM queue WHERE endpoint_id = ? ORDER BY position LIMIT 1",
            (str(endpoint_id),),
        ).fetchone()
        if row is None:
            return None
        return Queued(
            endpoint_id,
            int(row[0]),
            row[1],
            row[2],
            bytes(row[3]),
            int(row[4]),
            datetime.fromisoformat(row[5]),
        )

    def delivered(self, item: Queued, attempt: Attempt) -> None:
        """A 2xx answer: the row goes, the attempt is logged, the endpoint is not failing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "DELETE FROM queue WHERE endpoint_id = ? AND position = ?",
                (str(item.endpoint_id), item.position),
            )
            self._log(attempt)
            self.db.execute("DELETE FROM failing WHERE endpoint_id = ?", (str(item.endpoint_id),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def failed(self, item: Queued, attempt: Attempt, next_attempt_at: datetime) -> datetime:
        """A failed attempt: logged, the row's next attempt set; since when the endpoint has
        been failing (this attempt's time if it was not)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "UPDATE queue SET attempts = attempts + 1, next_attempt_at = ? "
                "WHERE endpoint_id = ? AND position = ?",
                (next_attempt_at.isoformat(), str(item.endpoint_id), item.position),
            )
            self._log(attempt)
            self.db.execute(
                "INSERT OR IGNORE INTO failing (endpoint_id, since) VALUES (?, ?)",
                (str(item.endpoint_id), attempt.at.isoformat()),
            )
            since = self.db.execute(
                "SELECT since FROM failing WHERE endpoint_id = ?", (str(item.endpoint_id),)
            ).fetchone()[0]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return datetime.fromisoformat(since)

    def retry_now(self, endpoint_id: UUID, at: datetime) -> None:
        """Make the endpoint's waiting rows due (an endpoint enabled again starts at once)."""
        self.db.execute(
            "UPDATE queue SET next_attempt_at = ? WHERE endpoint_id = ?",
            (at.isoformat(), str(endpoint_id)),
        )
        self.db.execute("DELETE FROM failing WHERE endpoint_id = ?", (str(endpoint_id),))

    def drop(self, endpoint_id: UUID) -> int:
        """Forget a removed endpoint's queue (its log stays)."""
        done = self.db.execute("DELETE FROM queue WHERE endpoint_id = ?", (str(endpoint_id),))
        self.db.execute("DELETE FROM failing WHERE endpoint_id = ?", (str(endpoint_id),))
        return done.rowcount

    def _log(self, attempt: Attempt) -> None:
        self.db.execute(
            "INSERT INTO attempts (endpoint_id, position, webhook_id, event_type, attempt, at,"
            " outcome, status, error, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(attempt.endpoint_id),
                attempt.position,
                attempt.webhook_id,
                attempt.event_type,
                attempt.attempt,
                attempt.at.isoformat(),
                attempt.outcome,
                attempt.status,
                attempt.error,
                attempt.seconds,
            ),
        )

    # ------------------------------------------------------------------ reading

    def queued(self) -> dict[str, int]:
        """Deliveries waiting, per endpoint id."""
        return {
            row[0]: int(row[1])
            for row in self.db.execute(
                "SELECT endpoint_id, count(*) FROM queue GROUP BY endpoint_id"
            )
        }

    def failing_since(self) -> dict[str, datetime]:
        return {
            row[0]: datetime.fromisoformat(row[1])
            for row in self.db.execute("SELECT endpoint_id, since FROM failing")
        }

    def attempts(self, endpoint_id: UUID | None = None, *, last: int = 50) -> list[Attempt]:
        """The delivery log, newest last (``last`` lines, of one endpoint or all)."""
        columns = (
            "SELECT endpoint_id, position, webhook_id, event_type, attempt, at, outcome, status,"
            " error, seconds FROM attempts"
        )
        if endpoint_id is None:
            query = columns + " ORDER BY id DESC LIMIT ?"
            rows = self.db.execute(query, (last,)).fetchall()
        else:
            query = columns + " WHERE endpoint_id = ? ORDER BY id DESC LIMIT ?"
            rows = self.db.execute(query, (str(endpoint_id), last)).fetchall()
        return [
            Attempt(
                UUID(r[0]),
                int(r[1]),
                r[2],
                r[3],
                int(r[4]),
                datetime.fromisoformat(r[5]),
                r[6],
                r[7],
                r[8],
                float(r[9]),
            )
            for r in reversed(rows)
        ]
