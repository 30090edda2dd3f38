"""A worker's stall, told to every other process on the host (ADR 10).

A projector or the relay that cannot handle a message stops at that position rather than
restarting into the same error. It records the stall here, once: which worker, the position it
stopped at, the message's type and the error's type (never the payload, never its text, which
could quote personal data). The API reads these records for ``/status`` and answers a read
waiting on a stalled read model with a problem that says so. The worker clears its record when
it goes past the position (after the operator deployed a fix and restarted it).

Where the records are (``Place``): with the embedded SQLite read models, one small JSON file
per worker, ``<data dir>/status/<worker>.json``, replaced atomically (every process is on one
host). With read models on PostgreSQL (``CBCM_READ_MODEL_STORE``, ADR 16), API instances and
workers run on any host: the records are rows of ``<prefix>_status.worker_stalls`` in that
database, which every one of them reaches (ADR 27). ``status_place(settings)`` says which.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import psycopg
from psycopg import sql

from services.settings import Settings

STATUS_DIR = "status"
DEFAULT_PREFIX = "cbcm"
TABLE = "worker_stalls"
CONNECT_TIMEOUT = 5

Place = Path | str
"""A data directory (records are files of this host), or the ``postgresql://`` URL of the
read-model database (records are rows every host sees)."""


def status_place(settings: Settings) -> Place:
    """Where this configuration keeps the stall records: the read-model database when it is
    PostgreSQL (its URL, ``schema=`` naming the read models' prefix), else the data
    directory."""
    url = settings.read_model_store
    if url is not None and url.startswith(("postgresql://", "postgres://")):
        return url
    return settings.data_dir


def _split(url: str) -> tuple[str, str]:
    """The connection URL, and the schema of the records: ``<prefix>status``, the prefix of
    the read models' schemas (``schema=`` of ``CBCM_READ_MODEL_STORE``, default ``cbcm``),
    so that several networks sharing a database keep their records apart."""
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if p]
    named = [p.split("=", 1)[1] for p in query if p.startswith("schema=")]
    rest = "&".join(p for p in query if not p.startswith("schema="))
    prefix = named[-1] if named else DEFAULT_PREFIX
    return parts._replace(scheme="postgresql", query=rest).geturl(), f"{prefix}_status"


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        _split(url)[0],
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        application_name="cbcm status",
    )


def _table(url: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(_split(url)[1]), sql.Identifier(TABLE))


def ensure_table(url: str) -> None:
    """The records' schema and table (idempotent; by the read models' owner, or a worker
    whose role may create them)."""
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(_split(url)[1]))
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (worker text PRIMARY KEY, position bigint NOT "
                "NULL, message_type text NOT NULL, error text NOT NULL, since text NOT NULL)"
            ).format(_table(url))
        )


class Stall(msgspec.Struct, frozen=True, kw_only=True):
    """Where a worker stopped and why, in words safe to log and show (also the record's
    JSON layout)."""

    worker: str
    position: int
    message_type: str
    error: str
    since: str

    def describe(self) -> str:
        return (
            f"{self.worker} stopped at position {self.position} ({self.message_type}): "
            f"{self.error}; it goes on from there once a fix is deployed and it is restarted"
        )


def status_dir(data_dir: Path) -> Path:
    return data_dir / STATUS_DIR


def _check_name(worker: str) -> None:
    if not worker or "/" in worker or worker.startswith("."):
        raise ValueError(f"not a worker name: {worker!r}")


def _path(data_dir: Path, worker: str) -> Path:
    _check_name(worker)
    return status_dir(data_dir) / f"{worker}.json"


def record_stall(
    data_dir: Place, worker: str, *, position: int, message_type: str, error: str
) -> Stall:
    """Record that ``worker`` stopped at ``position`` (replacing an earlier record)."""
    stall = Stall(
        worker=worker,
        position=position,
        message_type=message_type,
        error=error,
        since=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if isinstance(data_dir, str):
        _check_name(worker)
        ensure_table(data_dir)
        with _connect(data_dir) as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (worker, position, message_type, error, since) VALUES "
                    "(%s, %s, %s, %s, %s) ON CONFLICT (worker) DO UPDATE SET "
                    "position = EXCLUDED.position, message_type = EXCLUDED.message_type, "
                    "error = EXCLUDED.error, since = EXCLUDED.since"
                ).format(_table(data_dir)),
                (worker, position, message_type, error, stall.since),
            )
        return stall
    path = _path(data_dir, worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{worker}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(stall))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return stall


def clear_stall(data_dir: Place, worker: str) -> bool:
    """Forget ``worker``'s stall; whether there was one."""
    if isinstance(data_dir, str):
        _check_name(worker)
        try:
            with _connect(data_dir) as conn:
                done = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE worker = %s").format(_table(data_dir)), (worker,)
                )
                return done.rowcount > 0
        except psycopg.errors.UndefinedTable:
            return False
    try:
        _path(data_dir, worker).unlink()
    except FileNotFoundError:
        return False
    return True


def stall_of(data_dir: Place, worker: str) -> Stall | None:
    """``worker``'s recorded stall, if any (an unreadable record counts as none)."""
    if isinstance(data_dir, str):
        _check_name(worker)
        return next((s for s in _rows(data_dir, worker) if s.worker == worker), None)
    try:
        raw = _path(data_dir, worker).read_bytes()
        return msgspec.json.decode(raw, type=Stall)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _rows(url: str, worker: str | None = None) -> list[Stall]:
    query = sql.SQL("SELECT worker, position, message_type, error, since FROM {}").format(
        _table(url)
    )
    params: tuple[str, ...] = ()
    if worker is not None:
        query = query + sql.SQL(" WHERE worker = %s")
        params = (worker,)
    try:
        with _connect(url) as conn:
            rows = conn.execute(query + sql.SQL(" ORDER BY worker"), params).fetchall()
    except psycopg.errors.UndefinedTable:  # no worker ever stalled here
        return []
    return [
        Stall(worker=str(w), position=int(str(p)), message_type=str(m), error=str(e), since=str(t))
        for w, p, m, e, t in rows
    ]


def stalls(data_dir: Place) -> list[Stall]:
    """Every recorded stall, by worker name."""
    if isinstance(data_dir, str):
        return _rows(data_dir)
    folder = status_dir(data_dir)
    if not folder.is_dir():
        return []
    found = (stall_of(data_dir, p.stem) for p in sorted(folder.glob("*.json")))
    return [s for s in found if s is not None]
