"""The read model's lease: which instance of a projector is the active one (ADR 9)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from projections.inbox import InboxProjection
from services.nats.server import free_port
from services.projector.runner import ReadModelInUse, ReadModelLease, rebuild, run_projector

HOLD = """
import sys, time
from pathlib import Path
from services.projector.runner import ReadModelLease
assert ReadModelLease(Path(sys.argv[1])).try_take()
print("held", flush=True)
time.sleep(120)
"""


async def until(condition: Callable[[], Any]) -> None:
    async with asyncio.timeout(5.0):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def test_one_holder_at_a_time_and_the_next_once_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    first, second = ReadModelLease(path), ReadModelLease(path)
    assert first.try_take()
    assert not second.try_take()
    assert second.holder().startswith("pid ")
    first.release()
    assert second.try_take()
    assert not first.try_take()


def test_a_holder_killed_with_sigkill_leaves_the_lease_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, cwd=Path.cwd()
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        lease = ReadModelLease(path)
        assert not lease.try_take()
        assert f"pid {holder.pid} " in lease.holder()
        holder.kill()
        holder.wait(10)
        # no expiry to wait out: the kernel released the lock with the process
        assert lease.try_take()
    finally:
        holder.kill()
        holder.wait(10)


async def test_a_rebuild_refuses_a_read_model_a_projector_holds(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    lease = ReadModelLease(path)
    assert lease.try_take()
    with pytest.raises(ReadModelInUse, match="running projector"):
        await rebuild(InboxProjection(), path, f"nats://127.0.0.1:{free_port()}")
    assert not path.exists()


async def test_a_second_instance_stands_by_untouching_until_the_lease_is_free(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.sqlite3"
    lease = ReadModelLease(path)
    assert lease.try_take()
    stop = asyncio.Event()
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens: it only needs to start
    with capture_logs() as logged:

        def seen(event: str) -> bool:
            return any(entry["event"] == event for entry in logged)

        task = asyncio.create_task(run_projector(InboxProjection(), path, url, stop))
        await until(lambda: seen("projector.standby"))
        assert not path.exists()  # a standby opens nothing
        lease.release()
        await until(lambda: seen("projector.started"))
        assert path.exists()
        assert not lease.try_take()  # the instance that took over holds it
        stop.set()
        await asyncio.wait_for(task, 2.0)
    assert lease.try_take()  # and lets it go when it stops
