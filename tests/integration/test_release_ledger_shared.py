"""The statistics release ledger in the read-model database (issue #16, ADR 27).

With read models on PostgreSQL, the statistics projector may run on any host, a standby may
take over from it, and API instances on other hosts read the releases. Attacked here:
- two publishers on two hosts (two data dirs, two connections, two clocks an hour apart)
  over one PostgreSQL read model: each version is made once and goes out on NATS once, with
  the bytes the ledger keeps, whichever publishes and however they interleave; another host
  reads the same releases (`cbcm stats release`);
- a publisher caught between sending and marking while a second one runs (a standby taking
  over, on one host with SQLite or on two with PostgreSQL): the second sends nothing;
- a file ledger of a network that moves its read models to PostgreSQL is taken over as it
  is, not made again with other bytes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from typer.testing import CliRunner

from contracts.catalogue import decode_message
from projections.base import ReadModelDb
from projections.stats import StatisticsProjection
from services.cli.main import cli
from services.nats.server import EmbeddedNats
from services.projector.publication import StatisticsPublisher
from services.projector.runner import apply_batch, open_projection
from services.projector.storage import PostgresReadModel, ReadModelStore, SqliteReadModel
from services.statistics.releases import (
    ReleasePolicy,
    ledger_path,
    list_releases,
    open_ledger,
    release_due,
)
from tests.integration.test_projector import Outgoing, demo_stream
from tests.read_model_places import Places

START = datetime(2025, 9, 1, tzinfo=UTC)
DEADLINE = 60.0
RELEASE_DAY = datetime(2026, 6, 1, tzinfo=UTC)
"""The demo's quarters are closed and past their embargo."""


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> list[Outgoing]:
    """The translated events of a demo run of 30 cases, in position order."""
    return demo_stream(tmp_path_factory.mktemp("demo-store"), 30, 29, START)[0]


@pytest.fixture
def places(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Places]:
    kind = getattr(request, "param", "postgres")
    server = None if kind == "sqlite" else request.getfixturevalue("postgres_server_url")
    made = Places(kind, tmp_path, server)
    yield made
    made.close()


def _stats_read_model(places: Places, stream: list[Outgoing]) -> tuple[ReadModelStore, int]:
    """The statistics read model of the stream, written once, at ``places("stats")``."""
    where = places("stats")
    store = SqliteReadModel(where) if isinstance(where, Path) else where
    db = open_projection(StatisticsProjection(), store)
    try:
        messages = [(o.position, decode_message(o.payload)) for o in stream]
        last = apply_batch(StatisticsProjection(), db, messages).position
    finally:
        db.close()  # type: ignore[attr-defined]
    return store, last


def _host_store(store: ReadModelStore) -> ReadModelStore:
    """The same read model as another host sees it: a store object, pool and sessions of
    its own."""
    if isinstance(store, PostgresReadModel):
        return PostgresReadModel(store.url, store.schema, store.name, store.data_dir)
    return store


class Listener:
    """Every statistics release message on NATS: (release id, payload)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.nc: Any = None

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)

        async def note(msg: Any) -> None:
            self.received.append((msg.headers["Cbcm-Release"], msg.data))

        await self.nc.subscribe("cbcm.v1.stats.release.>", cb=note)
        await self.nc.flush()

    async def settle(self, publishers: list[StatisticsPublisher]) -> None:
        """Everything the publishers flushed has reached the listener (a round trip of
        each publisher's connection, then of the listener's)."""
        for p in publishers:
            if p._nc is not None and p._nc.is_connected:
                await p._nc.flush()
        await self.nc.flush()

    async def close(self) -> None:
        await self.nc.close()


def _ledger_rows(schema_url: str) -> dict[str, str]:
    """id -> document of every release in the PostgreSQL ledger, read with plain SQL."""
    server, _, query = schema_url.partition("?")
    prefix = dict(p.split("=", 1) for p in query.split("&") if p)["schema"]
    rest = "&".join(p for p in query.split("&") if p and not p.startswith("schema="))
    with psycopg.connect(server + (f"?{rest}" if rest else "")) as conn:
        rows = conn.execute(
            f"SELECT id, document FROM {prefix}_stats_releases.stats_release ORDER BY id"
        ).fetchall()
    return {str(i): str(d) for i, d in rows}


async def test_two_publishers_on_two_hosts_make_and_send_each_version_once(
    stream: list[Outgoing], places: Places, tmp_path: Path
) -> None:
    # Given one statistics read model on PostgreSQL, and the statistics publishers of two
    # hosts: data dirs of their own, connections of their own, clocks an hour apart
    store, last = _stats_read_model(places, stream)
    hosts = {"a": _host_store(store), "b": _host_store(store)}
    clocks = {"a": RELEASE_DAY, "b": RELEASE_DAY + timedelta(hours=1)}
    with EmbeddedNats(tmp_path / "nats") as server:
        listener = Listener()
        await listener.start(server.url)
        publishers = {
            h: StatisticsPublisher(
                server.url,
                every=0.0,
                nats_options={},
                data_dir=tmp_path / f"host-{h}",
                store=hosts[h],
                clock=lambda h=h: clocks[h],  # type: ignore[misc]
            )
            for h in hosts
        }

        async def publish(h: str) -> None:
            with hosts[h].reading() as db:
                await publishers[h].publish(db, last)

        try:
            # When both publish at once, again and again, then one after the other (the
            # second as a standby that took over: it starts after the first published)
            for _ in range(3):
                await asyncio.gather(publish("a"), publish("b"))
            await publish("a")
            await publish("b")
            await listener.settle(list(publishers.values()))
        finally:
            for p in publishers.values():
                await p.close()
            await listener.close()
            for s in hosts.values():
                s.close()
    # Then each version went out once ...
    ids = [r for r, _ in listener.received]
    assert ids, "the demo's quarters are released"
    assert sorted(ids) == sorted(set(ids)), f"a version sent twice: {sorted(ids)}"
    # ... with the bytes the one shared ledger keeps, and no version was made twice
    kept = _ledger_rows(places.schema_url)
    assert {r: p.decode() for r, p in listener.received} == kept
    # And another host (its own data dir, the API's configuration) reads the same releases
    env = {"CBCM_READ_MODEL_STORE": places.schema_url, "CBCM_DATA_DIR": str(tmp_path / "api")}
    listed = CliRunner().invoke(cli, ["stats", "release", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert sorted(line.split("\t")[0] for line in listed.output.splitlines()) == sorted(kept)
    first = sorted(kept)[0]
    shown = CliRunner().invoke(cli, ["stats", "release", "show", first], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == json.loads(kept[first])


class Caught(StatisticsPublisher):
    """A publisher held between making its releases and sending them, until let go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inside = threading.Event()
        self.go = threading.Event()

    def _due(self, db: ReadModelDb, *args: Any) -> list[tuple[str, str, bytes]]:
        found = super()._due(db, *args)  # type: ignore[arg-type]
        self.inside.set()
        self.go.wait(DEADLINE)
        return found


@pytest.mark.parametrize("places", ["sqlite", "postgres"], indirect=True)
async def test_a_publisher_taking_over_while_the_other_sends_sends_nothing_twice(
    stream: list[Outgoing], places: Places, tmp_path: Path
) -> None:
    # Given one statistics read model (SQLite: one host; PostgreSQL: two), and a publisher
    # caught after making the releases, before sending them (a slow NATS, a paused process)
    store, last = _stats_read_model(places, stream)
    hosts = {"a": _host_store(store), "b": _host_store(store)}
    data_dirs = (
        {"a": tmp_path / "data", "b": tmp_path / "data"}  # SQLite: one host, one data dir
        if places.kind == "sqlite"
        else {"a": tmp_path / "host-a", "b": tmp_path / "host-b"}
    )
    with EmbeddedNats(tmp_path / "nats") as server:
        listener = Listener()
        await listener.start(server.url)
        common: dict[str, Any] = {"every": 0.0, "nats_options": {}, "clock": lambda: RELEASE_DAY}
        caught = Caught(server.url, data_dir=data_dirs["a"], store=hosts["a"], **common)
        other = StatisticsPublisher(server.url, data_dir=data_dirs["b"], store=hosts["b"], **common)
        try:
            with hosts["a"].reading() as db_a, hosts["b"].reading() as db_b:
                first = asyncio.create_task(caught.publish(db_a, last))
                assert await asyncio.to_thread(caught.inside.wait, DEADLINE)
                # When the other publisher publishes meanwhile (a standby that took over)
                took = await other.publish(db_b, last)
                caught.go.set()
                await asyncio.wait_for(first, DEADLINE)
                # and again, once the first is done
                again = await other.publish(db_b, last)
            await listener.settle([caught, other])
        finally:
            caught.go.set()
            await caught.close()
            await other.close()
            await listener.close()
            for s in hosts.values():
                s.close()
    # Then every version went out once: the other found the ledger held and sent nothing,
    # and once it was let go, found everything sent
    ids = [r for r, _ in listener.received]
    assert ids and sorted(ids) == sorted(set(ids)), f"a version sent twice: {sorted(ids)}"
    assert (took, again) == (False, True)


async def test_a_file_ledger_is_taken_over_when_the_read_models_move_to_postgresql(
    stream: list[Outgoing], places: Places, tmp_path: Path
) -> None:
    # Given releases made and published from the embedded SQLite read model, in the data
    # dir's ledger file, before the read models move to PostgreSQL
    data_dir = tmp_path / "data"
    lite = open_projection(StatisticsProjection(), tmp_path / "stats.sqlite3")
    try:
        apply_batch(
            StatisticsProjection(), lite, [(o.position, decode_message(o.payload)) for o in stream]
        )
        with open_ledger(ledger_path(data_dir)) as led:
            before = {
                v.id: v.document for v in release_due(lite, led, ReleasePolicy(), RELEASE_DAY)
            }
            for id_ in before:
                led.execute("INSERT INTO stats_release_published (id) VALUES (?)", (id_,))
            led.commit()
    finally:
        lite.close()
    assert before
    # When the statistics projector runs on PostgreSQL read models, an hour later
    store, last = _stats_read_model(places, stream)
    with EmbeddedNats(tmp_path / "nats") as server:
        listener = Listener()
        await listener.start(server.url)
        publisher = StatisticsPublisher(
            server.url,
            every=0.0,
            nats_options={},
            data_dir=data_dir,
            store=store,
            clock=lambda: RELEASE_DAY + timedelta(hours=1),
        )
        try:
            with store.reading() as db:
                await publisher.publish(db, last)
            await listener.settle([publisher])
        finally:
            await publisher.close()
            await listener.close()
            store.close()
    # Then nothing is made again nor sent again: the shared ledger holds the file's releases
    assert listener.received == []
    kept = _ledger_rows(places.schema_url)
    assert {i: json.loads(d) for i, d in kept.items()} == before
    with open_ledger(places.schema_url, readonly=True) as led:
        assert [v.id for v in list_releases(led)] == sorted(before)
