"""A projector that cannot apply one message stops there, loudly, and goes on after the fix
(issue #12, acceptance).

The whole stack: the event store (SQLite, and a real PostgreSQL), a real nats-server, the
relay, the HTTP API, and the three projectors, the inbox's running a test projection that
raises on one marked complaint (a bug to fix). Then:

- the inbox projector commits everything before the marked message, and stays alive without
  restarting into it: ``cbcm_projector_stalled`` is 1, one ``projector.stalled`` log line
  names the position and the message type (never the payload nor the error's text);
- ``/status`` answers 503 naming the read model, the worker and the position; ``/readyz``
  still says the instance can serve;
- a read waiting for a position at or past the marked one answers at once 503
  ``urn:cbcm:problem:read-model-stalled``, without Retry-After; an earlier one is answered;
  the other read models go on;
- "the fix is deployed": the inbox projector is stopped and started with the real
  projection. It goes on from that position (the marked complaint is in the inbox: nothing
  skipped), clears its stall record and gauge, and the read answers 200; ``/status`` is 200.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from contracts.case import CaseReceivedV1
from contracts.envelope import CloudEvent
from projections.base import Projection
from projections.inbox import InboxProjection
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.projector import projection_named
from services.projector.runner import read_model_path, read_position, run_projector
from services.relay.relay import run_relay
from services.runtime.worker_status import stall_of
from services.settings import Settings
from tests.api_world import World, make_world

CANARY = "CANARY-5e1d the words a survivor said"
"""In the marked complaint's narrative and in the test projection's error: in no log line,
no status, no problem, no stall record."""

DEADLINE = 30.0


class InboxWithABug(InboxProjection):
    """The inbox, but ``apply`` raises on the complaint received at ``MARKED``."""

    def __init__(self, marked: datetime) -> None:
        super().__init__()
        self.marked = marked

    def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None:
        data = message.data
        if isinstance(data, CaseReceivedV1) and data.received_at == self.marked:
            raise OverflowError(CANARY)
        super().apply(db, message)


@dataclass
class Running:
    """The workers of the stack, each an asyncio task with its own stop event."""

    tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=dict)

    def start(self, name: str, work: Callable[[asyncio.Event], Any]) -> None:
        stop = asyncio.Event()
        self.tasks[name] = (asyncio.create_task(work(stop), name=name), stop)

    def check(self) -> None:
        for name, (task, _) in self.tasks.items():
            if task.done():
                task.result()  # raises its error
                raise AssertionError(f"{name} ended before it was stopped")

    async def stop(self, name: str) -> None:
        task, stop = self.tasks.pop(name)
        stop.set()
        await asyncio.wait_for(task, DEADLINE)

    async def stop_all(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[World]:
    data_dir = tmp_path / "data"
    mechanism = complaint_mechanism(Settings(data_dir=data_dir, event_store=store_url))
    try:
        yield make_world(data_dir, mechanism, event_store=store_url, read_wait_seconds=5.0)
    finally:
        mechanism.close()


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://cbcm") as client:
        yield client


async def until(condition: Callable[[], Any], what: str, running: Running) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        running.check()
        result = condition()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")


def stalled_gauge() -> float | None:
    return REGISTRY.get_sample_value("cbcm_projector_stalled", {"projection": "inbox"})


async def test_a_projector_stalls_at_a_message_it_cannot_apply_and_resumes_after_the_fix(
    world: World,
    api: httpx.AsyncClient,
    nats_server: EmbeddedNats,
    logs: list[MutableMapping[str, Any]],
) -> None:
    data_dir = world.settings.data_dir
    inbox_path = read_model_path(data_dir, "inbox")
    marked = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=424242)
    running = Running()

    def projector(name: str, projection: Projection) -> Callable[[asyncio.Event], Any]:
        path = read_model_path(data_dir, name)
        return lambda stop: run_projector(
            projection, path, nats_server.url, stop, batch=16, nats_options={}
        )

    async def complaint(received_at: datetime, narrative: str) -> tuple[str, int]:
        answer = await api.post(
            "/v1/cases",
            json={
                "received_at": received_at.isoformat(),
                "channel": "hotline",
                "complainant_role": "anonymous",
                "narrative": narrative,
            },
            headers=world.headers("intake_operator"),
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"]), int(answer.json()["position"])

    async def read(path: str, after: int) -> httpx.Response:
        return await api.get(path, params={"after": after}, headers=world.headers("coordinator"))

    try:
        running.start("relay", lambda stop: run_relay(world.settings, stop, nats_server.url))
        running.start("project-inbox", projector("inbox", InboxWithABug(marked)))
        for name in ("assistance", "stats", "register"):
            running.start(f"project-{name}", projector(name, projection_named(name)))

        # given the stack at work: a complaint goes in and the inbox shows it
        first, first_at = await complaint(marked - timedelta(minutes=5), "a first complaint")
        assert (await read(f"/v1/inbox/cases/{first}", first_at)).status_code == 200

        # when a complaint the inbox projection cannot apply comes, and another after it
        poison, poison_at = await complaint(marked, CANARY)
        after, after_at = await complaint(marked + timedelta(minutes=5), "one more complaint")

        # then the inbox projector stops right before it, records the stall, and says so once
        stall = await until(
            lambda: stall_of(data_dir, "project-inbox"), "the inbox's stall", running
        )
        assert (stall.worker, stall.position) == ("project-inbox", poison_at)
        assert (stall.message_type, stall.error) == (
            "org.psea.cbcm.case.received.v1",
            "OverflowError",
        )
        assert first_at <= read_position(inbox_path) < poison_at
        assert stalled_gauge() == 1.0
        await asyncio.sleep(1.5)  # alive, not restarting into it, not saying it again
        running.check()
        stalled_lines = [e for e in logs if e["event"] == "projector.stalled"]
        assert len(stalled_lines) == 1
        line = stalled_lines[0]
        assert (line["projection"], line["position"], line["message_type"], line["error"]) == (
            "inbox",
            poison_at,
            "org.psea.cbcm.case.received.v1",
            "OverflowError",
        )
        assert read_position(inbox_path) < poison_at

        # the deep status names the read model, the worker and the position; the instance
        # can still serve
        status = await api.get("/status")
        assert status.status_code == 503
        body = status.json()
        assert body["read_models"]["inbox"]["stalled_position"] == poison_at
        assert [(s["worker"], s["position"], s["message_type"]) for s in body["stalls"]] == [
            ("project-inbox", poison_at, "org.psea.cbcm.case.received.v1")
        ]
        assert (await api.get("/readyz")).status_code == 200

        # a read waiting at or past the stall is told so at once, not "retry"
        began = time.monotonic()
        answer = await read(f"/v1/inbox/cases/{after}", after_at)
        assert time.monotonic() - began < 2.0  # the wait bound is 5 s
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert "retry-after" not in answer.headers
        problem = answer.json()
        assert problem["type"] == "urn:cbcm:problem:read-model-stalled"
        assert (problem["read_model"], problem["stalled_position"]) == ("inbox", poison_at)
        assert "inbox" in problem["detail"] and str(poison_at) in problem["detail"]
        # an earlier position is read, and the other read models go on
        assert (await read(f"/v1/inbox/cases/{first}", first_at)).status_code == 200
        assert (await read(f"/v1/assistance/cases/{after}", after_at)).status_code == 200

        # when the fix is deployed: the projector stopped, started with the real projection
        await running.stop("project-inbox")
        running.start("project-inbox", projector("inbox", InboxProjection()))

        # then it goes on from that position and clears the stall once past it (until
        # then, the record stands: a restart without the fix stalls there again) ...
        # (the record is removed first, then the gauge: wait for both, not one look)
        await until(
            lambda: stall_of(data_dir, "project-inbox") is None and stalled_gauge() == 0.0,
            "cleared",
            running,
        )
        assert read_position(inbox_path) >= poison_at
        # ... nothing skipped: the marked complaint is in the inbox, and the read answers
        assert (await read(f"/v1/inbox/cases/{poison}", poison_at)).status_code == 200
        assert (await read(f"/v1/inbox/cases/{after}", after_at)).status_code == 200
        assert any(e["event"] == "projector.stall_cleared" for e in logs)
        status = await api.get("/status")
        assert status.status_code == 200, status.text
        assert status.json()["stalls"] == []
    finally:
        await running.stop_all()

    # the error's text and the payload are nowhere an operator looks
    assert CANARY not in repr(list(logs))
    assert CANARY not in status.text and CANARY not in answer.text
