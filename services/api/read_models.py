"""Where the read models are, how far each has got, and waiting for a position."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.api.problems import Problem

READ_MODELS = ("inbox", "assistance", "stats")


def read_model_path(data_dir: Path, name: str) -> Path:
    """The SQLite file of read model ``name`` (ADR 3)."""
    return data_dir / "read_models" / f"{name}.sqlite3"


def applied_position(path: Path) -> int | None:
    """The last store position the read model applied, or None if it does not exist yet."""
    if not path.exists():
        return None
    try:
        with _connect(path) as db:
            row = db.execute("SELECT position FROM projection_position").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else 0


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection, or 503 while the projector has not created the read model."""
    if applied_position(path) is None:
        raise Problem(
            503,
            f"read model {path.stem} is not ready yet",
            headers={"Retry-After": "1"},
        )
    with _connect(path) as db:
        yield db


async def wait_for_position(path: Path, after: int | None, bound: float) -> int:
    """Wait (bounded) until the read model has applied position ``after``.

    Read-your-writes: a client that wrote at position N asks with ``after=N``. Past the
    bound the answer is 503 with Retry-After, never a silently stale read.
    """
    deadline = time.monotonic() + bound
    delay = 0.01
    while True:
        applied = applied_position(path)
        if applied is not None and (after is None or applied >= after):
            return applied
        if time.monotonic() >= deadline:
            raise Problem(
                503,
                f"read model {path.stem} has applied position {applied or 0}, "
                f"not yet {after}; retry shortly",
                title="Read model behind",
                headers={"Retry-After": "1"},
                applied_position=applied or 0,
            )
        await asyncio.sleep(delay)
        delay = min(0.1, delay * 2)
