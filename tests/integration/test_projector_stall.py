"""A projector that cannot apply a message stops at it, loudly, once (issue #12, ADR 10).

Against a real nats-server, with the translated events of a demo run: a projection that
raises on one message in the middle of a batch, and a message no contract knows. The
projector commits everything before the message (the position ends exactly before it),
says so once (``projector.stalled``, its stall record, ``cbcm_projector_stalled``), and
waits, alive, for its stop. Restarted without the fix, it stalls at the same message again;
with the fix, it goes on from there, clears the record, and the read model equals a rebuild:
nothing skipped, nothing applied twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from prometheus_client import REGISTRY

from contracts.envelope import CloudEvent
from projections.inbox import InboxProjection
from services.nats.server import EmbeddedNats
from services.projector.runner import read_model_path, read_position, rebuild, run_projector
from services.projector.storage import status_place_of
from services.runtime.worker_status import Place, stall_of, stalls
from tests.integration import test_projector as projector_tests
from tests.integration.test_projector import DEADLINE, Outgoing, Watcher, dump, publish
from tests.read_model_places import Places

demo = projector_tests.demo
published = projector_tests.published
"""The demo run's translated events: ``test_projector``'s module fixtures, used here too."""

SECRET = "CANARY-93b0 what the complainant wrote"
"""The poisoned projection's error text: in no log line, no stall record."""


class InboxWithABug(InboxProjection):
    """The inbox, but ``apply`` raises on the message at ``position``."""

    def __init__(self, position: int) -> None:
        super().__init__()
        self.position = position

    def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None:
        if message.position == self.position:
            raise ZeroDivisionError(SECRET)
        super().apply(db, message)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as running:
        yield running


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def sample(name: str) -> float:
    """The inbox projector's value of metric ``name`` in this process (0 when none yet)."""
    return REGISTRY.get_sample_value(name, {"projection": "inbox"}) or 0.0


def stalled_gauge() -> float | None:
    return REGISTRY.get_sample_value("cbcm_projector_stalled", {"projection": "inbox"})


async def until_stalled(data_dir: Place, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(DEADLINE):
        while stall_of(data_dir, "project-inbox") is None:
            if task.done():
                task.result()
                raise AssertionError("the projector ended instead of stalling")
            await asyncio.sleep(0.02)


async def test_a_message_the_projection_cannot_apply_stops_the_projector_right_before_it(
    published: list[Outgoing],
    server: EmbeddedNats,
    tmp_path: Path,
    logs: list[MutableMapping[str, Any]],
    read_model_places: Places,
) -> None:
    # given the stream of a demo run, and an inbox projection that fails on one message in
    # the middle of a batch of 256 (a SQLite read model, then a PostgreSQL one)
    await publish(server.url, published)
    last = published[-1].position
    poison = published[700]
    data_dir = tmp_path / "data"  # the PostgreSQL places' data dir too
    path = (
        read_model_path(data_dir, "inbox")
        if read_model_places.kind == "sqlite"
        else read_model_places("inbox")
    )
    # where its stall is recorded: a file of the data dir beside SQLite, a row of the
    # read models' database with PostgreSQL (seen from every host; ADR 27)
    place = data_dir if isinstance(path, Path) else status_place_of(path)

    # when the projector meets it
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_projector(InboxWithABug(poison.position), path, server.url, stop, nats_options={})
    )
    await until_stalled(place, task)

    # then everything before it is committed, nothing after it, and it says so once
    assert read_position(path) == published[699].position
    stall = stall_of(place, "project-inbox")
    assert stall is not None
    assert (stall.position, stall.error) == (poison.position, "ZeroDivisionError")
    assert stall.message_type.startswith("org.psea.cbcm.")
    assert SECRET not in repr(stalls(place))
    if isinstance(place, Path):
        assert SECRET not in (data_dir / "status" / "project-inbox.json").read_text()
    else:
        assert not (data_dir / "status").exists()
    assert stalled_gauge() == 1.0
    await asyncio.sleep(1.5)
    assert not task.done()  # alive, waiting for its stop
    assert read_position(path) == published[699].position
    assert [e["position"] for e in logs if e["event"] == "projector.stalled"] == [poison.position]

    # and it stops cleanly when told to
    stop.set()
    await asyncio.wait_for(task, DEADLINE)

    # when it is restarted without a fix, it stalls at the same message again
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_projector(InboxWithABug(poison.position), path, server.url, stop, nats_options={})
    )
    await asyncio.sleep(1.5)
    assert not task.done()
    assert read_position(path) == published[699].position
    assert stall_of(place, "project-inbox") is not None and stalled_gauge() == 1.0
    stop.set()
    await asyncio.wait_for(task, DEADLINE)

    # when it is restarted with the fix, it goes on from there and clears the stall
    applied_before = sample("cbcm_projector_messages_applied_total")
    batches_before = sample("cbcm_projector_batch_seconds_count")
    watcher = Watcher()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_projector(InboxProjection(), path, server.url, stop, on_commit=watcher, nats_options={})
    )
    await watcher.until(last, task)
    stop.set()
    await asyncio.wait_for(task, DEADLINE)
    assert stall_of(place, "project-inbox") is None
    assert stalled_gauge() == 0.0
    # and its metrics say how far it got and what it did
    assert sample("cbcm_projector_applied_position") == last
    assert sample("cbcm_projector_messages_applied_total") - applied_before == len(published) - 700
    assert sample("cbcm_projector_batch_seconds_count") > batches_before
    assert [e["position"] for e in logs if e["event"] == "projector.stall_cleared"] == [
        poison.position
    ]

    # then the read model is what a rebuild gives: nothing skipped, nothing twice
    fresh = (
        tmp_path / "rebuilt" / "read_models" / "inbox.sqlite3"
        if read_model_places.kind == "sqlite"
        else read_model_places("rebuilt", "inbox")
    )
    assert await rebuild(InboxProjection(), fresh, server.url, nats_options={}) == last
    assert dump(path) == dump(fresh)
    # and the error's text is in no log line
    assert SECRET not in repr(list(logs))


async def test_a_message_no_contract_knows_is_a_stall_at_its_position_not_a_crash(
    published: list[Outgoing],
    server: EmbeddedNats,
    tmp_path: Path,
    logs: list[MutableMapping[str, Any]],
) -> None:
    # given a stream where the message of one position is of a type this projector's
    # contracts do not know (a publisher upgraded before the projector)
    message = msgspec.json.decode(published[100].payload)
    message["type"] = "org.psea.cbcm.case.received.v99"
    unknown = Outgoing(
        published[100].subject,
        published[100].msg_id,
        msgspec.json.encode(message),
        published[100].position,
    )
    await publish(server.url, [*published[:100], unknown, *published[101:200]])
    data_dir = tmp_path / "data"
    path = read_model_path(data_dir, "inbox")

    # when the projector meets it
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_projector(InboxProjection(), path, server.url, stop, nats_options={})
    )
    await until_stalled(data_dir, task)

    # then it stops right before it, naming its position and type, and stays up
    assert read_position(path) == published[99].position
    stall = stall_of(data_dir, "project-inbox")
    assert stall is not None
    assert (stall.position, stall.message_type, stall.error) == (
        unknown.position,
        "org.psea.cbcm.case.received.v99",
        "UnknownMessageType",
    )
    await asyncio.sleep(1.0)
    assert not task.done()
    assert len([e for e in logs if e["event"] == "projector.stalled"]) == 1
    stop.set()
    await asyncio.wait_for(task, DEADLINE)
    assert read_position(path) == published[99].position
