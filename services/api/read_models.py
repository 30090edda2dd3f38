"""How far each read model has got, reading one, and waiting for a position."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg

from projections.base import ReadModelDb
from services.api.problems import Problem
from services.projector import PROJECTIONS
from services.projector.runner import worker_name
from services.projector.storage import (
    ReadModelStore,
    SqliteReadModel,
    as_store,
    status_place_of,
)
from services.runtime.worker_status import Stall, stall_of

T = TypeVar("T")

READ_MODELS = tuple(PROJECTIONS)

READ_MODEL_STALLED = "urn:cbcm:problem:read-model-stalled"
"""The problem type of a read waiting for a position its read model cannot reach: its
projector (or the relay, upstream of every read model) stopped at a message it cannot
handle, and goes on only once a fix is deployed (ADR 10). Not "try again": no Retry-After."""

RELAY_WORKER = "relay"
"""The relay's name in the stall records (``services.relay.relay.WORKER``)."""


def _unreachable(name: str) -> Problem:
    # which server, and why, is for the log: a caller is told no internal address
    return Problem(
        503, f"read model {name} cannot be reached; retry shortly", headers={"Retry-After": "1"}
    )


def applied_position(where: Path | ReadModelStore) -> int | None:
    """The last store position the read model applied, or None if it does not exist yet
    (503 while its database cannot be reached)."""
    store = as_store(where)
    try:
        return store.position()
    except psycopg.Error:
        raise _unreachable(store.name) from None


def read_model_stall(where: Path | ReadModelStore) -> Stall | None:
    """The stall its projector recorded for the read model (``None``: none). With read
    models on PostgreSQL the records are in their database, which every host sees (ADR 27);
    with SQLite, files of the data dir."""
    store = as_store(where)
    return stall_of(status_place_of(store), worker_name(store.name))


def stall_before(where: Path | ReadModelStore, after: int) -> Stall | None:
    """The stall that keeps the read model from ever reaching ``after``: its projector's,
    or the relay's (nothing past the relay's stall reaches any read model)."""
    store = as_store(where)
    for stall in (read_model_stall(store), stall_of(status_place_of(store), RELAY_WORKER)):
        if stall is not None and after >= stall.position:
            return stall
    return None


@contextmanager
def reading(where: Path | ReadModelStore) -> Iterator[ReadModelDb]:
    """A read-only connection, or 503 while the projector has not created the read model
    (or its database cannot be reached)."""
    store = as_store(where)
    if isinstance(store, SqliteReadModel) and not store.exists():
        raise Problem(
            503, f"read model {store.name} is not ready yet", headers={"Retry-After": "1"}
        )
    try:
        with store.reading() as db:
            yield db
    except psycopg.errors.UndefinedTable:
        raise Problem(
            503, f"read model {store.name} is not ready yet", headers={"Retry-After": "1"}
        ) from None
    except psycopg.OperationalError:
        raise _unreachable(store.name) from None


async def query(store: ReadModelStore, read: Callable[[ReadModelDb], T]) -> T:
    """``read(db)`` on a read-only connection; in a worker thread for a PostgreSQL read
    model (across the network: the event loop never waits for it)."""

    def run() -> T:
        with reading(store) as db:
            return read(db)

    if isinstance(store, SqliteReadModel):
        return run()
    return await asyncio.to_thread(run)


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


async def wait_for_position(where: Path | ReadModelStore, after: int | None, bound: float) -> int:
    """Wait (bounded) until the read model has applied position ``after``.

    Read-your-writes: a client that wrote at position N asks with ``after=N``. Past the
    bound the answer is 503 with Retry-After, never a silently stale read. A position at or
    beyond the one the read model, or the relay, stalled at (``stall_before``) is answered at
    once with the ``READ_MODEL_STALLED`` problem: waiting would not help.
    """
    store = as_store(where)
    deadline = time.monotonic() + bound
    delay = 0.005
    while True:
        applied = (
            applied_position(store)
            if isinstance(store, SqliteReadModel)  # a local file: quicker than a thread hop
            else await asyncio.to_thread(applied_position, store)
        )
        if applied is not None and (after is None or applied >= after):
            return applied
        if after is not None:
            stall = stall_before(store, after)
            if stall is not None:
                raise stalled_problem(store.name, stall, applied or 0, after)
        if time.monotonic() >= deadline:
            raise Problem(
                503,
                f"read model {store.name} has applied position {applied or 0}, "
                f"not yet {after}; retry shortly",
                title="Read model behind",
                headers={"Retry-After": "1"},
                applied_position=applied or 0,
            )
        await asyncio.sleep(delay)
        delay = min(0.05, delay * 2)
