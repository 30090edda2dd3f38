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
from services.projector.runner import data_dir_of, read_position, worker_name
from services.runtime.worker_status import Stall, stall_of

READ_MODELS = tuple(PROJECTIONS)

READ_MODEL_STALLED = "urn:cbcm:problem:read-model-stalled"
"""The problem type of a read waiting for a position its read model cannot reach: its
projector (or the relay, upstream of every read model) stopped at a message it cannot
handle, and goes on only once a fix is deployed (ADR 10). Not "try again": no Retry-After."""

RELAY_WORKER = "relay"
"""The relay's name in the stall records (``services.relay.relay.WORKER``)."""


def applied_position(path: Path) -> int | None:
    """The last store position the read model applied, or None if it does not exist yet."""
    return read_position(path) if path.exists() else None


def read_model_stall(path: Path) -> Stall | None:
    """The stall its projector recorded for the read model at ``path`` (``None``: none)."""
    return stall_of(data_dir_of(path), worker_name(path.stem))


def stall_before(path: Path, after: int) -> Stall | None:
    """The stall that keeps the read model at ``path`` from ever reaching ``after``: its
    projector's, or the relay's (nothing past the relay's stall reaches any read model)."""
    for stall in (read_model_stall(path), stall_of(data_dir_of(path), RELAY_WORKER)):
        if stall is not None and after >= stall.position:
            return stall
    return None


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


def stalled_problem(name: str, stall: Stall, applied: int, after: int) -> Problem:
    """503 ``READ_MODEL_STALLED`` for a read after ``after``: ids and positions only."""
    where = (
        f"read model {name} stopped"
        if stall.worker == worker_name(name)
        else f"the {stall.worker} stopped, so read model {name} stops too,"
    )
    return Problem(
        503,
        f"{where} at position {stall.position} ({stall.message_type}, {stall.error}) and "
        f"applies nothing after position {applied} until a fix is deployed: position "
        f"{after} cannot be read yet (reads of earlier positions are answered)",
        title="Read model stalled",
        type=READ_MODEL_STALLED,
        read_model=name,
        worker=stall.worker,
        stalled_position=stall.position,
        applied_position=applied,
    )


async def wait_for_position(path: Path, after: int | None, bound: float) -> int:
    """Wait (bounded) until the read model has applied position ``after``.

    Read-your-writes: a client that wrote at position N asks with ``after=N``. Past the
    bound the answer is 503 with Retry-After, never a silently stale read. A position at or
    beyond the one the read model, or the relay, stalled at (``stall_before``) is answered at
    once with the ``READ_MODEL_STALLED`` problem: waiting would not help.
    """
    deadline = time.monotonic() + bound
    delay = 0.005
    while True:
        applied = applied_position(path)
        if applied is not None and (after is None or applied >= after):
            return applied
        if after is not None:
            stall = stall_before(path, after)
            if stall is not None:
                raise stalled_problem(path.stem, stall, applied or 0, after)
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
