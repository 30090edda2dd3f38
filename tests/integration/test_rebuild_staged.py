"""A rebuild into PostgreSQL is made in a scratch SQLite file, then copied in (ADR 28
section 7), attacked:

- for every read model, a rebuild into PostgreSQL holds exactly the rows that applying the
  same stream into PostgreSQL, batch by batch as the live projector does, holds;
- any value a column can hold (text with tabs, newlines, backslashes, ``\\N``, quotes, any
  Unicode; 64-bit integers at their bounds; any float, infinities included; NULL) comes out
  of the copy as it went in (Hypothesis);
- a rebuild that does not end (interrupted, or stopped by a message the projection cannot
  take) leaves the PostgreSQL read model exactly as it was, rows and position, and no
  scratch file behind; a scratch read model that does not match the PostgreSQL tables
  changes nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.base import Projection, ReadModelDb, set_position
from projections.inbox import InboxProjection
from services.nats.server import EmbeddedNats
from services.projector import PROJECTIONS
from services.projector.runner import (
    ProjectorError,
    apply_batch,
    decode,
    open_projection,
    prepare,
    rebuild,
)
from services.projector.staging import STAGE_PREFIX, StagingError, copy_stage, stage
from services.projector.storage import PostgresReadModel, PostgresReadModelDb
from tests.integration.test_projector import Outgoing, demo_stream, publish
from tests.read_model_places import Places, dump

START = datetime(2025, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> list[Outgoing]:
    """About 600 translated events of a demo run, in position order."""
    return demo_stream(tmp_path_factory.mktemp("demo-store"), 40, 21, START)[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as running:
        yield running


@pytest.fixture
def places(postgres_server_url: str, tmp_path: Path) -> Iterator[Places]:
    made = Places("postgres", tmp_path, postgres_server_url)
    yield made
    made.close()


def _scratch_left(places: Places) -> list[Path]:
    data = places.tmp_path / "data"
    return sorted(data.glob(f"{STAGE_PREFIX}*")) if data.exists() else []


def _apply_live(projection: Projection, store: PostgresReadModel, items: list[Outgoing]) -> None:
    """What the live projector does: batches applied into PostgreSQL, each with its position."""
    db = open_projection(projection, store)
    try:
        messages = [decode(item.payload) for item in items]
        for start in range(0, len(messages), 97):
            chunk = messages[start : start + 97]
            assert apply_batch(projection, db, chunk).position == chunk[-1][0]
    finally:
        db.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
async def test_a_rebuild_into_postgresql_holds_what_applying_there_holds(
    name: str, stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    await publish(server.url, stream)
    live = places("live", name)
    rebuilt = places("rebuilt", name)
    assert isinstance(live, PostgresReadModel) and isinstance(rebuilt, PostgresReadModel)
    await asyncio.to_thread(_apply_live, PROJECTIONS[name](), live, stream)
    # the schema to rebuild into holds something else first: a rebuild replaces it
    await asyncio.to_thread(_apply_live, PROJECTIONS[name](), rebuilt, stream[:50])

    assert await rebuild(PROJECTIONS[name](), rebuilt, server.url, batch=64) == stream[-1].position
    assert rebuilt.position() == stream[-1].position
    rows = dump(rebuilt)
    assert sum(len(table) for table in rows.values()) > 2, "the rebuild copied rows"
    assert rows == dump(live)
    assert _scratch_left(places) == []


class Interrupted(Exception):
    pass


async def test_an_interrupted_rebuild_leaves_the_postgresql_read_model_as_it_was(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    await publish(server.url, stream)
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    await asyncio.to_thread(_apply_live, PROJECTIONS["inbox"](), store, stream[:200])
    before = dump(store)

    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 128:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rebuild(PROJECTIONS["inbox"](), store, server.url, stop_after_two_batches, batch=64)
    assert store.position() == stream[199].position
    assert dump(store) == before
    assert _scratch_left(places) == []

    # the lease was let go: a rebuild runs to the end afterwards
    assert await rebuild(PROJECTIONS["inbox"](), store, server.url) == stream[-1].position


async def test_a_rebuild_stopped_by_a_message_it_cannot_take_changes_nothing(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    await publish(server.url, stream)
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    await asyncio.to_thread(_apply_live, PROJECTIONS["inbox"](), store, stream[:100])
    before = dump(store)
    poisoned = stream[300].position

    class Refusing(InboxProjection):
        def apply(self, db: ReadModelDb, message: Any) -> None:
            if message.position == poisoned:
                raise ValueError("a message this projection cannot take")
            super().apply(db, message)

    with pytest.raises(ProjectorError, match=f"cannot apply position {poisoned}"):
        await rebuild(Refusing(), store, server.url, batch=64)
    assert dump(store) == before
    assert _scratch_left(places) == []


# ------------------------------------------------------------------------------- values


class Values:
    """A read model of one table whose columns take every type the projections use."""

    name = "values"
    schema_version = 1

    def create_tables(self, db: ReadModelDb) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS vals (k BIGINT NOT NULL, label TEXT, n BIGINT, "
            "small INTEGER, x DOUBLE PRECISION)"
        )
        if db.execute("SELECT count(*) FROM vals").fetchone()[0] == 0:
            db.execute("INSERT INTO vals (k, label) VALUES (?, ?)", (-1, "made with the table"))

    def drop_tables(self, db: ReadModelDb) -> None:
        db.execute("DROP TABLE IF EXISTS vals")

    def apply(self, db: ReadModelDb, message: Any) -> None:
        raise AssertionError("not fed messages")

    def end_batch(self, db: ReadModelDb) -> None:
        pass


TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
VALUE_ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), TEXT, st.sampled_from(["\\N", "\t", "\n", "\\", "\\.", '"', ""])),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        st.one_of(st.none(), st.floats(allow_nan=False)),
    ),
    max_size=30,
)


@pytest.fixture(scope="module")
def values_target(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    places = Places("postgres", tmp_path_factory.mktemp("values"), postgres_server_url)
    store = places("values")
    assert isinstance(store, PostgresReadModel)
    db = open_projection(Values(), store)
    assert isinstance(db, PostgresReadModelDb)
    yield db, places.tmp_path
    db.close()
    places.close()


@settings(max_examples=60, deadline=None)
@given(rows=VALUE_ROWS, position=st.integers(0, 2**53))
def test_every_value_comes_out_of_the_copy_as_it_went_in(
    values_target: tuple[PostgresReadModelDb, Path],
    rows: list[tuple[str | None, int | None, int | None, float | None]],
    position: int,
) -> None:
    target, folder = values_target
    with stage(folder, "values") as scratch:
        prepare(Values(), scratch)
        scratch.execute("BEGIN")
        scratch.executemany(
            "INSERT INTO vals (k, label, n, small, x) VALUES (?, ?, ?, ?, ?)",
            [(i, *row) for i, row in enumerate(rows)],
        )
        set_position(scratch, position)
        scratch.execute("COMMIT")
        assert copy_stage(Values(), scratch, target) == position
    got = target.execute("SELECT k, label, n, small, x FROM vals ORDER BY k").fetchall()
    expected = [(-1, "made with the table", None, None, None)] + [
        (i, *row) for i, row in enumerate(rows)
    ]
    assert [tuple(r) for r in got] == expected
    for row in got:
        assert row[4] is None or not math.isnan(row[4])
    assert target.execute("SELECT position FROM projection_position").fetchall() == [(position,)]


def test_a_scratch_read_model_unlike_the_postgresql_one_changes_nothing(
    values_target: tuple[PostgresReadModelDb, Path],
) -> None:
    target, folder = values_target
    before = target.execute("SELECT k, label FROM vals ORDER BY k").fetchall()

    class Other(Values):
        def create_tables(self, db: ReadModelDb) -> None:
            super().create_tables(db)
            if not isinstance(db, PostgresReadModelDb):
                db.execute("ALTER TABLE vals ADD COLUMN extra TEXT")

    with stage(folder, "values") as scratch:
        prepare(Other(), scratch)
        with pytest.raises(StagingError, match="table vals has columns"):
            copy_stage(Other(), scratch, target)
    assert target.execute("SELECT k, label FROM vals ORDER BY k").fetchall() == before


def test_a_rebuild_with_no_room_for_its_scratch_file_says_so_and_changes_nothing(
    stream: list[Outgoing], places: Places, tmp_path: Path
) -> None:
    """``cbcm projections rebuild`` into PostgreSQL when the data dir cannot hold a scratch
    file (here: it lies under a plain file): a clear message, exit 2, the read model as it
    was; not "cannot reach NATS" (an ``OSError`` as any other)."""
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    _apply_live(PROJECTIONS["inbox"](), store, stream[:80])
    before = dump(store)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
        "CBCM_DATA_DIR": str(blocker / "data"),
        "CBCM_READ_MODEL_STORE": places.schema_url,
        "CBCM_NATS_URL": "nats://127.0.0.1:9",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cbcm"), "projections", "rebuild", "inbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "scratch file of the data dir" in said and "NATS" not in said, said
    assert "Traceback" not in said
    assert dump(store) == before
