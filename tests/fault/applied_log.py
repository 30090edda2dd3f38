"""A read model with one row per message applied, and a process running it with the real
projector runner: ``python -m tests.fault.applied_log READ_MODEL_FILE NATS_URL``.

cbcm's own read models set rows rather than count them, so a message applied twice does not
always show in them. This one shows it: a row per application, in the order applied, with the
pid of the process that applied it. Its durable consumer is ``cbcm-applied``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from contracts.envelope import CloudEvent
from services.projector.runner import run_projector
from services.runtime.logging import configure_logging


class AppliedLog:
    name = "applied"

    def create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "position INTEGER NOT NULL, pid INTEGER NOT NULL)"
        )

    def drop_tables(self, db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE IF EXISTS applied")

    def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None:
        db.execute(
            "INSERT INTO applied (position, pid) VALUES (?, ?)", (message.position, os.getpid())
        )

    def end_batch(self, db: sqlite3.Connection) -> None:
        """Nothing deferred."""


def applications(path: Path) -> list[tuple[int, int]]:
    """(position, pid) of every application, in the order they were made."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [
            (int(p), int(pid))
            for p, pid in db.execute("SELECT position, pid FROM applied ORDER BY seq")
        ]
    finally:
        db.close()


async def _main(path: Path, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_projector(AppliedLog(), path, url, stop)


if __name__ == "__main__":
    configure_logging("json", "applied-log")
    asyncio.run(_main(Path(sys.argv[1]), sys.argv[2]))
