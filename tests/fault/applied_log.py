"""A read model with one row per message applied, and a process running it with the real
projector runner: ``python -m tests.fault.applied_log PLACE NATS_URL``.

``PLACE`` is a SQLite file, or ``postgres:SCHEMA`` for a schema of the PostgreSQL database
named by ``CBCM_TEST_APPLIED_URL`` (ADR 16).

cbcm's own read models set rows rather than count them, so a message applied twice does not
always show in them. This one shows it: a row per application, in the order applied, with the
pid of the process that applied it. Its durable consumer is ``cbcm-applied``.

``CBCM_TEST_HOLD_AT=N`` (with ``CBCM_TEST_HOLD_FILE``): on applying position N, the process
writes the file (the batch's transaction is open, the rows before N in it) and waits there
for good: a test kills it mid-batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from contracts.envelope import CloudEvent
from projections.base import ReadModelDb
from services.projector.runner import run_projector
from services.projector.storage import PostgresReadModel, ReadModelStore, as_store
from services.runtime.logging import configure_logging


class AppliedLog:
    name = "applied"
    schema_version = 1

    def __init__(self) -> None:
        hold = os.environ.get("CBCM_TEST_HOLD_AT")
        self.hold_at = int(hold) if hold else None

    def create_tables(self, db: ReadModelDb) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS applied (seq BIGINT PRIMARY KEY, "
            "position BIGINT NOT NULL, pid INTEGER NOT NULL)"
        )

    def drop_tables(self, db: ReadModelDb) -> None:
        db.execute("DROP TABLE IF EXISTS applied")

    def apply(self, db: ReadModelDb, message: CloudEvent[Any]) -> None:
        if message.position == self.hold_at:
            Path(os.environ["CBCM_TEST_HOLD_FILE"]).write_text(str(os.getpid()))
            time.sleep(3600)
        # the writer excludes every other (the position row is locked): max + 1 is safe
        db.execute(
            "INSERT INTO applied (seq, position, pid) "
            "SELECT coalesce(max(seq), 0) + 1, ?, ? FROM applied",
            (message.position, os.getpid()),
        )

    def end_batch(self, db: ReadModelDb) -> None:
        """Nothing deferred."""


def place(text: str) -> Path | ReadModelStore:
    if text.startswith("postgres:"):
        url = os.environ["CBCM_TEST_APPLIED_URL"]
        return PostgresReadModel(url, text.removeprefix("postgres:"), "applied", Path("."))
    return Path(text)


def applications(where: Path | ReadModelStore) -> list[tuple[int, int]]:
    """(position, pid) of every application, in the order they were made."""
    store = as_store(where)
    with store.reading() as db:
        return [
            (int(p), int(pid))
            for p, pid in db.execute("SELECT position, pid FROM applied ORDER BY seq")
        ]


async def _main(where: Path | ReadModelStore, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_projector(AppliedLog(), where, url, stop)


if __name__ == "__main__":
    configure_logging("json", "applied-log")
    asyncio.run(_main(place(sys.argv[1]), sys.argv[2]))
