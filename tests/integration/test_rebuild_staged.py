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
import dataclasses
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import services.projector.staging as staging
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

CBCM = str(Path(sys.executable).parent / "cbcm")


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


def _env(places: Places, data: Path, nats_url: str) -> dict[str, str]:
    """The environment of a ``cbcm`` rebuilding into ``places``' schemas."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
        "CBCM_DATA_DIR": str(data),
        "CBCM_READ_MODEL_STORE": places.schema_url,
        "CBCM_NATS_URL": nats_url,
    }


def _rebuild_inbox(env: dict[str, str], **how: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CBCM, "projections", "rebuild", "inbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **how,
    )


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


async def _live_prefix(
    server: EmbeddedNats, stream: list[Outgoing], places: Places, applied: int
) -> tuple[PostgresReadModel, dict[str, list[tuple[Any, ...]]]]:
    """The stream published; the inbox in PostgreSQL holding its first ``applied`` messages
    (as the live projector applies them), and what it holds."""
    await publish(server.url, stream)
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    await asyncio.to_thread(_apply_live, PROJECTIONS["inbox"](), store, stream[:applied])
    return store, dump(store)


class Interrupted(Exception):
    pass


async def test_an_interrupted_rebuild_leaves_the_postgresql_read_model_as_it_was(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    store, before = await _live_prefix(server, stream, places, 200)

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
    store, before = await _live_prefix(server, stream, places, 100)
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


def test_a_value_postgresql_refuses_is_a_clear_error_and_changes_nothing(
    values_target: tuple[PostgresReadModelDb, Path],
) -> None:
    """SQLite keeps a NUL in text, PostgreSQL refuses it: the copy names the table, says
    nothing of the value, and changes nothing."""
    target, folder = values_target
    before = target.execute("SELECT k, label FROM vals ORDER BY k").fetchall()
    with stage(folder, "values") as scratch:
        prepare(Values(), scratch)
        scratch.execute("INSERT INTO vals (k, label) VALUES (?, ?)", (7, "secret\x00name"))
        with pytest.raises(StagingError, match="refuses a value of table vals") as refused:
            copy_stage(Values(), scratch, target)
    assert "secret" not in str(refused.value)
    assert target.execute("SELECT k, label FROM vals ORDER BY k").fetchall() == before


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
    done = _rebuild_inbox(_env(places, blocker / "data", "nats://127.0.0.1:9"))
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "scratch file of the data dir" in said and "NATS" not in said, said
    assert "Traceback" not in said
    assert dump(store) == before


# ------------------------------------------------------------------ attack review (ADR 28 §7)


def _prepared_target(store: PostgresReadModel) -> tuple[Any, PostgresReadModelDb]:
    lease = store.lease()
    assert lease.try_take()
    target = prepare(PROJECTIONS["inbox"](), store.writer(lease))
    assert isinstance(target, PostgresReadModelDb)
    return lease, target


def _count(store: PostgresReadModel) -> int:
    with store.reading() as db:
        return int(db.execute("SELECT count(*) FROM inbox_cases").fetchone()[0])


HOLD = 10.0
"""Seconds a test waits for the other side of a copy it holds open (never reached when the
copy behaves: each side waits for the other's event)."""


def _held_before_commit(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The copy held open after its rows are deleted and copied, before its position and
    commit: ``copied`` is set there, and the copy goes on once ``go_on`` is (or ``HOLD``
    later)."""
    copied, go_on = threading.Event(), threading.Event()
    real_set_position = staging.set_position

    def held(db: Any, position: int) -> None:
        copied.set()
        go_on.wait(HOLD)
        real_set_position(db, position)

    monkeypatch.setattr(staging, "set_position", held)
    return copied, go_on


def test_a_reader_during_the_copy_sees_the_old_read_model_then_the_new_one(
    stream: list[Outgoing], places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read while the copy's transaction is open (its rows deleted and copied) sees the old
    rows, whole (with the tables dropped and made again in that transaction, it waited for
    the commit and then saw an empty table)."""
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    _apply_live(PROJECTIONS["inbox"](), store, stream[:200])
    old = _count(store)
    lease, target = _prepared_target(store)
    copied, go_on = _held_before_commit(monkeypatch)
    seen: list[int] = []
    try:
        with stage(places.tmp_path / "data", store.schema) as scratch:
            projection = PROJECTIONS["inbox"]()
            prepare(projection, scratch)
            apply_batch(projection, scratch, [decode(item.payload) for item in stream])
            copying = threading.Thread(target=copy_stage, args=(projection, scratch, target))
            copying.start()
            try:
                assert copied.wait(HOLD), "the copy never reached its commit"
                seen.append(_count(store))  # inside the copy's open transaction
            finally:
                go_on.set()
                copying.join()
        new = _count(store)
    finally:
        target.close()
        lease.release()
    assert new > old
    assert seen == [old]


def test_an_inbox_page_read_during_the_copy_neither_waits_nor_fails_the_rebuild(
    stream: list[Outgoing], places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inbox page reads ``inbox_cases`` then ``inbox_actions`` in one transaction, and
    the copy runs between its two reads; with the tables dropped in the copy's transaction
    the two waited on each other (``DeadlockDetected``), and the rebuild was the one
    cancelled."""
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    _apply_live(PROJECTIONS["inbox"](), store, stream[:200])
    lease, target = _prepared_target(store)
    copied, go_on = _held_before_commit(monkeypatch)
    errors: list[BaseException] = []
    started = threading.Event()
    try:
        with stage(places.tmp_path / "data", store.schema) as scratch:
            projection = PROJECTIONS["inbox"]()
            prepare(projection, scratch)
            apply_batch(projection, scratch, [decode(item.payload) for item in stream])

            def page() -> None:
                try:
                    with store.reading() as db:
                        db.execute("SELECT * FROM inbox_cases").fetchall()
                        started.set()
                        if not copied.wait(HOLD):
                            errors.append(AssertionError("the copy waited for the page"))
                        db.execute("SELECT * FROM inbox_actions").fetchall()
                except BaseException as e:
                    errors.append(e)
                finally:
                    go_on.set()

            reader = threading.Thread(target=page)
            reader.start()
            assert started.wait(HOLD)
            try:
                assert copy_stage(projection, scratch, target) == stream[-1].position
            finally:
                reader.join()
    finally:
        target.close()
        lease.release()
    assert errors == []


async def test_a_view_of_an_operators_in_the_schema_does_not_stop_a_rebuild(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    store, _ = await _live_prefix(server, stream, places, 50)
    with store.connect("operator") as conn:  # a reporting tool's view
        conn.execute("CREATE VIEW report_now AS SELECT now() AS at")
    assert await rebuild(PROJECTIONS["inbox"](), store, server.url) == stream[-1].position


async def test_a_rebuild_keeps_its_lease_session_through_the_replay(
    stream: list[Outgoing], server: EmbeddedNats, places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's ``idle_session_timeout`` would end the lease's session, idle while the
    stream is replayed into the scratch file, and the copy with it."""
    store, _ = await _live_prefix(server, stream, places, 50)
    monkeypatch.setenv("PGOPTIONS", "-c idle_session_timeout=1500")

    class Slow(InboxProjection):
        def apply(self, db: ReadModelDb, message: Any) -> None:
            time.sleep(0.005)
            super().apply(db, message)

    assert await rebuild(Slow(), store, server.url, batch=64) == stream[-1].position


async def test_a_version_past_32_bits_is_applied_and_rebuilt_on_postgresql(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    """A case's version past 2^31 (the contracts allow 64 bits, SQLite's ``INTEGER`` holds
    them): PostgreSQL's 32-bit ``INTEGER`` stalled the live projector on that message for
    good, and a rebuild into PostgreSQL refused it. Its tables now have 64-bit integers."""
    items = list(stream)
    for i in range(len(items) - 1, -1, -1):
        body = json.loads(items[i].payload)
        if body["type"].startswith("org.psea.cbcm.case.") and ".received." not in body["type"]:
            body["data"]["version"] = 2**31
            items[i] = dataclasses.replace(items[i], payload=json.dumps(body).encode())
            break
    await publish(server.url, items)
    for name in ("inbox", "register", "assistance", "stats"):
        live = places(f"live_{name}", name)
        rebuilt = places(f"rebuilt_{name}", name)
        assert isinstance(live, PostgresReadModel) and isinstance(rebuilt, PostgresReadModel)
        await asyncio.to_thread(_apply_live, PROJECTIONS[name](), live, items)
        assert await rebuild(PROJECTIONS[name](), rebuilt, server.url) == items[-1].position
        assert dump(rebuilt) == dump(live), name


async def test_what_a_killed_rebuild_left_is_deleted_by_the_next_one(
    stream: list[Outgoing], server: EmbeddedNats, places: Places
) -> None:
    """SIGKILL runs no clean-up: the scratch read model (case data outside PostgreSQL) stays
    in the data dir until the next rebuild of that schema, which deletes it first."""
    await publish(server.url, stream)
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    left = places.tmp_path / "data" / f"{STAGE_PREFIX}{store.schema}"
    left.mkdir(parents=True)
    (left / "read-model.sqlite").write_bytes(b"what a killed rebuild left")
    assert await rebuild(PROJECTIONS["inbox"](), store, server.url) == stream[-1].position
    assert _scratch_left(places) == []


async def test_a_stopped_rebuild_leaves_no_scratch_file(
    stream: list[Outgoing], server: EmbeddedNats, places: Places, tmp_path: Path
) -> None:
    """``cbcm projections rebuild`` sent SIGTERM (systemd's, a container's stop) while its
    scratch file exists: the rebuild ends as on Ctrl-C, its clean-up run. The process is
    frozen (SIGSTOP) while the file is looked at, so it cannot finish meanwhile."""
    await publish(server.url, stream)
    store = places("inbox")
    assert isinstance(store, PostgresReadModel)
    data = tmp_path / "data"
    scratch = data / f"{STAGE_PREFIX}{store.schema}" / "read-model.sqlite"
    env = _env(places, data, server.url)
    caught, returncode, said = await asyncio.to_thread(_stop_while_staging, env, scratch)
    assert caught, "the rebuild never caught with its scratch file"
    assert returncode != 0, said
    assert "Traceback" not in said, said
    assert _scratch_left(places) == [] and not scratch.parent.exists()


def _stop_while_staging(env: dict[str, str], scratch: Path) -> tuple[bool, int, str]:
    """Start a rebuild; when its scratch file exists, freeze it, send SIGTERM, let it go on.
    Whether it was caught so (it may finish first: tried up to five times), its exit code and
    what it said."""
    for _attempt in range(5):
        process = subprocess.Popen(
            [CBCM, "projections", "rebuild", "inbox"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        while process.poll() is None and not scratch.exists():
            time.sleep(0.002)
        process.send_signal(signal.SIGSTOP)
        caught = scratch.exists() and process.poll() is None
        if caught:
            process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
        said = process.communicate(timeout=60)[0].decode()
        if caught:
            break
    return caught, process.returncode, said


async def test_a_full_disk_under_the_scratch_file_says_so(
    stream: list[Outgoing], server: EmbeddedNats, places: Places, tmp_path: Path
) -> None:
    """Writes past 40 KiB fail, as on a full disk: the rebuild says its scratch file could
    not be written (SQLite rolls back by itself, and the rebuild's own ROLLBACK then failed,
    "no transaction is active", and hid the cause)."""
    await publish(server.url, stream)
    places("inbox")
    env = _env(places, tmp_path / "data", server.url) | {"PYTHONDONTWRITEBYTECODE": "1"}
    done = await asyncio.to_thread(_rebuild_inbox, env, preexec_fn=_small_files)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "scratch file" in said and "is the disk full" in said, said
    assert "no transaction is active" not in said, said
    assert "Traceback" not in said, said
    assert _scratch_left(places) == []


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (40 * 1024, 40 * 1024))
