"""How far each read model has got, reading one, and waiting for a position."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from projections.base import open_read_model
from services.api.problems import Problem
from services.projector import PROJECTIONS
from services.projector.runner import read_position

READ_MODELS = tuple(PROJECTIONS)


def applied_position(path: Path) -> int | None:
    """The last store position the read model applied, or None if it does not exist yet."""
    return read_position(path) if path.exists() else None


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection, or 503 while the projector has not created the read model.

    Callers have waited with ``wait_for_position`` first, which read the position; here a
    stat of the file is enough, rather than opening the database a second time.
    """
    if not path.exists():
        raise Problem(503, f"read model {path.stem} is not ready yet", headers={"Retry-After": "1"})
    db = open_read_model(path, readonly=True)
    try:
        yield db
    finally:
        db.close()


async def wait_for_position(path: Path, after: int | None, bound: float) -> int:
    """Wait (bounded) until the read model has applied position ``after``.

    Read-your-writes: a client that wrote at position N asks with ``after=N``. Past the
    bound the answer is 503 with Retry-After, never a silently stale read.
    """
    deadline = time.monotonic() + bound
    delay = 0.005
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
        delay = min(0.05, delay * 2)
