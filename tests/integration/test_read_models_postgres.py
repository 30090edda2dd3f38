"""Read models on PostgreSQL attacked (issue #16, ADR 16).

- Two projector processes race for one PostgreSQL read model: one writes, the other stands by
  (its advisory lock is held on the writer's session); killed, the active one is replaced and
  every event is still applied once, in order.
- Writers that ignore the lease altogether (two sessions applying the same batch at the same
  moment) still apply each event once: a batch locks the position row before reading it.
- A projector SIGKILLed in the middle of a batch (its transaction open, rows written in it):
  no row without its position, no position without its rows; a restart finishes the job.
- Hypothesis drives the real application with any sequence of commands; the same messages
  are applied to read models on SQLite and on PostgreSQL, which hold the same rows and answer
  every query alike.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from contracts.case import CaseReceivedV1
from contracts.catalogue import decode_message
from projections.assistance import AssistanceProjection, gaps, provider_referrals, tracker
from projections.base import ReadModelDb
from projections.inbox import InboxProjection, case_row, inbox
from projections.stats import StatisticsProjection, reports
from services.nats.server import EmbeddedNats
from services.projector import PROJECTIONS
from services.projector.runner import ReadModelInUse, apply_batch, open_projection, rebuild
from services.projector.storage import PostgresReadModel, PostgresReadModelDb
from services.settings import Settings
from tests.fault.applied_log import AppliedLog, applications
from tests.fault.stack import REPO, tail, wait_until
from tests.integration.test_projector import Outgoing, demo_stream, publish
from tests.read_model_places import Places, dump
from tests.unit import test_projections_total as total

START = datetime(2025, 9, 1, tzinfo=UTC)
DEADLINE = 60.0


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> list[Outgoing]:
    """About 600 translated events of a demo run, in position order."""
    return demo_stream(tmp_path_factory.mktemp("demo-store"), 40, 16, START)[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as running:
        yield running


@pytest.fixture
def pg_places(postgres_server_url: str, tmp_path: Path) -> Iterator[Places]:
    places = Places("postgres", tmp_path, postgres_server_url)
    yield places
    places.close()


class Projector:
    """``python -m tests.fault.applied_log postgres:SCHEMA URL`` as a process."""

    def __init__(self, name: str, schema: str, nats_url: str, pg_url: str, tmp: Path) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        self.argv = [
            sys.executable,
            "-m",
            "tests.fault.applied_log",
            f"postgres:{schema}",
            nats_url,
        ]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
            "CBCM_TEST_APPLIED_URL": pg_url,
            "CBCM_LOG_FORMAT": "json",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> Projector:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env | env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def logged(self, event: str) -> bool:
        return self.log.exists() and f'"event": "{event}"'.encode() in self.log.read_bytes()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def reap(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _position(store: PostgresReadModel) -> int:
    return store.position() or 0


def _once_in_order(rows: list[tuple[int, int]], positions: list[int]) -> None:
    assert [p for p, _ in rows] == positions, "every position once, in stream order"


async def test_two_projectors_race_for_a_postgresql_read_model_and_only_one_writes(
    stream: list[Outgoing], server: EmbeddedNats, pg_places: Places, tmp_path: Path
) -> None:
    # Given a stream and two projectors of one PostgreSQL read model started at once
    half = len(stream) // 2
    await publish(server.url, stream[:half])
    store = pg_places("applied")
    assert isinstance(store, PostgresReadModel)
    assert pg_places.server_url is not None
    pair = [
        Projector(f"p{i}", store.schema, server.url, pg_places.server_url, tmp_path)
        for i in range(2)
    ]
    try:
        for p in pair:
            p.start()
        wait_until(
            lambda: _position(store) == stream[half - 1].position,
            DEADLINE,
            lambda: "the first half applied:\n" + "\n".join(tail(p.log) for p in pair),
        )
        wait_until(
            lambda: all(
                p.logged("projector.active") or p.logged("projector.standby") for p in pair
            ),
            DEADLINE,
            lambda: "both to start:\n" + "\n".join(tail(p.log) for p in pair),
        )
        # Then exactly one took the lease and wrote; the other stands by, alive
        active = [p for p in pair if p.logged("projector.active")]
        standby = [p for p in pair if p.logged("projector.standby")]
        assert len(active) == 1 and len(standby) == 1 and active != standby
        assert all(p.alive() for p in pair)
        rows = applications(store)
        assert {pid for _, pid in rows} == {active[0].process.pid}  # type: ignore[union-attr]
        # and a rebuild into the live schema is refused while the lease is held
        with pytest.raises(ReadModelInUse):
            await rebuild(AppliedLog(), store, server.url)

        # When the active one is killed mid-stream and the rest of the stream comes
        active[0].kill()
        await publish(server.url, stream[half:])
        wait_until(
            lambda: _position(store) == stream[-1].position,
            DEADLINE,
            lambda: "the standby to take over:\n" + tail(standby[0].log),
        )
        # Then the standby took over, and every event was applied once, in order
        assert standby[0].logged("projector.active")
        rows = applications(store)
        _once_in_order(rows, [o.position for o in stream])
        assert {pid for _, pid in rows} == {p.process.pid for p in pair}  # type: ignore[union-attr]
    finally:
        for p in pair:
            p.reap()


class Hits:
    """A row per application, with nothing unique in it (so nothing but the position
    refuses a second application)."""

    name = "hits"
    schema_version = 1

    def __init__(self, slow_at: int | None = None) -> None:
        self.slow_at = slow_at

    def create_tables(self, db: ReadModelDb) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS hits (position BIGINT NOT NULL)")

    def drop_tables(self, db: ReadModelDb) -> None:
        db.execute("DROP TABLE IF EXISTS hits")

    def apply(self, db: ReadModelDb, message: Any) -> None:
        db.execute("INSERT INTO hits (position) VALUES (?)", (message.position,))
        if message.position == self.slow_at:
            time.sleep(0.3)  # both sessions are inside their batch by now

    def end_batch(self, db: ReadModelDb) -> None:
        """Nothing deferred."""


def test_writers_ignoring_the_lease_still_apply_each_event_once(
    stream: list[Outgoing], pg_places: Places
) -> None:
    """Two sessions apply the same batch at the same moment, without any lease: the second
    waits on the position row, then finds the batch applied and skips it."""
    store = pg_places("hits")
    assert isinstance(store, PostgresReadModel)
    messages = [(o.position, decode_message(o.payload)) for o in stream[:200]]
    open_projection(Hits(), store).close()  # type: ignore[attr-defined]
    start = threading.Barrier(2)
    results: list[Any] = []

    def writer() -> None:
        db = PostgresReadModelDb(store.connect("rogue writer"))
        try:
            start.wait()
            results.append(apply_batch(Hits(slow_at=messages[0][0]), db, messages))
        finally:
            db.close()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert sorted(r.applied for r in results) == [0, len(messages)]
    with store.reading() as db:
        hits = [r[0] for r in db.execute("SELECT position FROM hits ORDER BY position")]
    assert hits == [p for p, _ in messages]


async def test_a_projector_killed_mid_batch_leaves_no_row_without_its_position(
    stream: list[Outgoing], server: EmbeddedNats, pg_places: Places, tmp_path: Path
) -> None:
    await publish(server.url, stream)
    store = pg_places("applied")
    assert isinstance(store, PostgresReadModel) and pg_places.server_url is not None
    projector = Projector("p", store.schema, server.url, pg_places.server_url, tmp_path)
    rng = random.Random(1606)
    holds = sorted(rng.sample([o.position for o in stream[20:-20]], 2))
    try:
        for run, hold in enumerate(holds):
            # Given a projector that stops inside a batch, on position `hold`
            marker = tmp_path / f"held-{run}"
            projector.start(CBCM_TEST_HOLD_AT=str(hold), CBCM_TEST_HOLD_FILE=str(marker))
            wait_until(marker.exists, DEADLINE, lambda: "the hold:\n" + tail(projector.log))
            # its batch's transaction is open, with rows in it: a session holding a lock on a
            # table of this test's schema (other tests' projectors of the same name run on the
            # same server, so the session's name alone may be another test's)
            with psycopg.connect(store.url, autocommit=True) as conn:
                state = conn.execute(
                    "SELECT DISTINCT a.state FROM pg_locks l"
                    " JOIN pg_class c ON c.oid = l.relation"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE n.nspname = %s AND a.pid <> pg_backend_pid()"
                    " AND a.application_name LIKE %s",
                    (store.schema, "cbcm applied lease%"),
                ).fetchall()
            assert state and all(
                s.startswith(("idle in transaction", "active")) for (s,) in state
            ), state
            # When it is SIGKILLed there
            projector.kill()
            # Then what is committed is whole: every row has its position, and the position
            # has all its rows, each once
            recorded = _position(store)
            assert recorded < hold
            rows = applications(store)
            _once_in_order(rows, [o.position for o in stream if o.position <= recorded])
        # And a restart finishes the job: every event once, in order
        projector.start()
        wait_until(
            lambda: _position(store) == stream[-1].position,
            DEADLINE,
            lambda: "the restart to catch up:\n" + tail(projector.log),
        )
        _once_in_order(applications(store), [o.position for o in stream])
    finally:
        projector.reap()


def test_a_read_model_of_another_schema_version_is_dropped_and_replayed(tmp_path: Path) -> None:
    """An assistance read model made before ``made_position`` (version 1) would stall at its
    first referral: it starts again from position 0, to be replayed from the stream."""
    path = tmp_path / "assistance.sqlite3"
    db = open_projection(AssistanceProjection(), path)
    db.execute("DROP TABLE assistance_referrals")
    db.execute("CREATE TABLE assistance_referrals (referral_id TEXT PRIMARY KEY, case_id TEXT)")
    db.execute("DROP TABLE projection_schema")
    db.execute("UPDATE projection_position SET position = 42")
    db.close()
    db = open_projection(AssistanceProjection(), path)
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(assistance_referrals)")}
        assert "made_position" in columns
        assert db.execute("SELECT position FROM projection_position").fetchone()[0] == 0
    finally:
        db.close()


# ------------------------------------------------------------------------------- Hypothesis

_PG_URL: list[str] = []


class BothDatabases(total.CommandSequences):
    """The command sequences of ``test_projections_total``, each read model kept on SQLite
    and on PostgreSQL from the same messages."""

    def __init__(self) -> None:
        super().__init__()
        places = Places("postgres", Path("."), _PG_URL[0])
        self._resources.callback(places.close)
        self.postgres: list[ReadModelDb] = []
        for projection, _ in self.projections:
            store = places(projection.name)
            db = open_projection(projection, store)
            self._resources.callback(db.close)  # type: ignore[attr-defined]
            self.postgres.append(db)
        self.stores = list(places.made)

    @invariant()
    def read_models_follow(self) -> None:
        messages = list(total._published(self.app, self.position))
        if not messages:
            return
        for (projection, db), pg in zip(self.projections, self.postgres, strict=True):
            assert apply_batch(projection, db, messages).position == messages[-1][0]
            assert apply_batch(type(projection)(), pg, messages).position == messages[-1][0]
        self.position = messages[-1][0]

    @invariant()
    def postgresql_holds_what_sqlite_holds(self) -> None:
        for (projection, db), store in zip(self.projections, self.stores, strict=True):
            sqlite_rows = _sqlite_dump(db)
            assert sqlite_rows == dump(store), projection.name
        inbox_pg, assistance_pg, stats_pg = self.postgres
        inbox_lite, assistance_lite, stats_lite = (db for _, db in self.projections)
        now = self.now
        for agency in total.AGENCIES:
            assert inbox(inbox_lite, agency, now=now) == inbox(inbox_pg, agency, now=now)
            assert gaps(assistance_lite, now=now, agency=agency) == gaps(
                assistance_pg, now=now, agency=agency
            )
        for case_id in self.case_ids:
            assert case_row(inbox_lite, case_id) == case_row(inbox_pg, case_id)
            assert tracker(assistance_lite, case_id, now=now) == tracker(
                assistance_pg, case_id, now=now
            )
        assert provider_referrals(assistance_lite, "med-a", now=now, open_only=False) == (
            provider_referrals(assistance_pg, "med-a", now=now, open_only=False)
        )
        assert reports(stats_lite, k=3) == reports(stats_pg, k=3)


def _sqlite_dump(db: ReadModelDb) -> dict[str, list[tuple[Any, ...]]]:
    tables = [
        r[0]
        for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    return {
        t: sorted((tuple(r) for r in db.execute(f"SELECT * FROM {t}")), key=repr) for t in tables
    }


def _both_settings(machines: int, steps: int) -> settings:
    return settings(
        max_examples=machines,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_any_command_sequence_gives_the_same_read_models_on_postgresql_and_sqlite(
    postgres_server_url: str,
) -> None:
    _PG_URL[:] = [postgres_server_url]
    run_state_machine_as_test(BothDatabases, settings=_both_settings(3, 25))


@pytest.mark.soak
def test_a_long_run_of_command_sequences_gives_the_same_read_models_on_both(
    postgres_server_url: str,
) -> None:
    _PG_URL[:] = [postgres_server_url]
    run_state_machine_as_test(BothDatabases, settings=_both_settings(300, 60))


def test_postgres_statements_are_the_projections_own(pg_places: Places) -> None:
    """A ``?`` becomes ``%s``, a ``%`` stays a ``%``: nothing of a value ever reaches the
    statement's text (the values go as parameters)."""
    store = pg_places("inbox")
    db = open_projection(InboxProjection(), store)
    try:
        text = "50% off? '); DROP TABLE inbox_cases; --"
        db.execute("BEGIN")
        db.execute("UPDATE inbox_cases SET channel = ? WHERE case_id = ?", (text, text))
        found = db.execute("SELECT ? AS echoed, '%' AS percent", (text,)).fetchone()
        db.execute("ROLLBACK")
        assert (found["echoed"], found[1]) == (text, "%")
        assert db.execute("SELECT count(*) FROM inbox_cases").fetchone()[0] == 0
    finally:
        db.close()  # type: ignore[attr-defined]


def test_statistics_read_model_on_postgresql_answers_like_sqlite(
    stream: list[Outgoing], pg_places: Places, tmp_path: Path
) -> None:
    messages = [(o.position, decode_message(o.payload)) for o in stream]
    lite = open_projection(StatisticsProjection(), tmp_path / "stats.sqlite3")
    pg = open_projection(StatisticsProjection(), pg_places("stats"))
    try:
        apply_batch(StatisticsProjection(), lite, messages)
        apply_batch(StatisticsProjection(), pg, messages)
        assert reports(lite, k=2) == reports(pg, k=2)
    finally:
        lite.close()  # type: ignore[attr-defined]
        pg.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- the API


def _timeless(answer: Any) -> Any:
    """An answer without what depends on the moment it was asked (how long a referral has
    waited, counted from now)."""
    if isinstance(answer, dict):
        return {
            k: _timeless(v) for k, v in answer.items() if k not in ("since_referral", "waiting")
        }
    if isinstance(answer, list):
        return [_timeless(v) for v in answer]
    return answer


def test_the_api_answers_from_postgresql_read_models_as_from_sqlite(
    stream: list[Outgoing], pg_places: Places, tmp_path: Path
) -> None:
    """Two API instances over the same events, one reading SQLite files, one PostgreSQL
    schemas: the same answers; a read past the applied position waits and answers 503, and
    a read model whose database cannot be reached is 503 naming no address."""
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from services.api.app import create_app  # noqa: PLC0415
    from services.identity.tokens import issue_token  # noqa: PLC0415
    from services.projector.storage import read_model_store  # noqa: PLC0415
    from tests.api_world import CALLERS  # noqa: PLC0415

    messages = [(o.position, decode_message(o.payload)) for o in stream]
    lite = Settings(data_dir=tmp_path / "lite", read_wait_seconds=0.3)
    pg = Settings(
        data_dir=tmp_path / "pg", read_model_store=pg_places.schema_url, read_wait_seconds=0.3
    )
    for settings_ in (lite, pg):
        for projection in (factory() for factory in PROJECTIONS.values()):  # every read model
            store = read_model_store(settings_, projection.name)
            db = open_projection(projection, store)
            try:
                apply_batch(projection, db, messages)
            finally:
                db.close()  # type: ignore[attr-defined]
                store.close()
    received = next(m.data for _, m in messages if isinstance(m.data, CaseReceivedV1))
    case_id, agency = received.case_id, received.actor.agency
    user, _, role = CALLERS["coordinator"]
    answers = []
    for settings_ in (lite, pg):
        token = issue_token(settings_.data_dir, user=user, agency="ocha", roles=[role])
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(settings_)) as client:
            got = [
                client.get(path, headers=headers)
                for path in (
                    f"/v1/inbox/{agency}",
                    f"/v1/inbox/cases/{case_id}",
                    f"/v1/assistance/cases/{case_id}",
                    "/v1/assistance/gaps",
                    "/v1/stats",
                    "/v1/cases",
                )
            ]
            assert all(a.status_code == 200 for a in got), [a.text for a in got]
            answers.append([(_timeless(a.json()), a.headers["x-cbcm-position"]) for a in got])
            behind = client.get(f"/v1/inbox/cases/{case_id}?after={10**9}", headers=headers)
            assert behind.status_code == 503
            assert client.get("/readyz").status_code == 200
    assert answers[0] == answers[1]

    # a read-model database that cannot be reached: 503 at once, no address in the answer
    gone = Settings(
        data_dir=tmp_path / "pg",
        read_model_store="postgresql://postgres@127.0.0.1:1/nowhere",
        read_wait_seconds=0.3,
    )
    token = issue_token(gone.data_dir, user=user, agency="ocha", roles=[role])
    with TestClient(create_app(gone)) as client:
        answer = client.get(
            f"/v1/inbox/cases/{case_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "127.0.0.1" not in answer.text and "nowhere" not in answer.text
        assert client.get("/readyz").status_code == 503


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


async def test_cbcm_projections_rebuild_into_a_schema_and_refusing_a_live_one(
    stream: list[Outgoing], server: EmbeddedNats, pg_places: Places, tmp_path: Path
) -> None:
    """``cbcm projections rebuild NAME --into SCHEMA`` on PostgreSQL read models; the live
    schema is refused (exit 2) while a projector holds its lease."""
    await publish(server.url, stream)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
        "CBCM_DATA_DIR": str(tmp_path / "data"),
        "CBCM_READ_MODEL_STORE": pg_places.schema_url,
        "CBCM_NATS_URL": server.url,
    }
    cbcm = str(Path(sys.executable).parent / "cbcm")
    fresh = f"{pg_places.prefix}fresh"
    done = await asyncio.to_thread(
        _run, [cbcm, "projections", "rebuild", "inbox", "--into", fresh], env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rebuilt = pg_places("fresh", "inbox")
    assert isinstance(rebuilt, PostgresReadModel)
    assert rebuilt.position() == stream[-1].position
    # the same as a SQLite rebuild of the same stream
    lite = tmp_path / "inbox.sqlite3"
    assert await rebuild(InboxProjection(), lite, server.url) == stream[-1].position
    assert dump(rebuilt) == dump(lite)

    # a projector keeps the live schema: the rebuild of it is refused, nothing dropped
    live = pg_places("inbox")
    assert isinstance(live, PostgresReadModel)
    db = open_projection(InboxProjection(), live)  # holds the lease on its session
    try:
        refused = await asyncio.to_thread(_run, [cbcm, "projections", "rebuild", "inbox"], env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "kept up to date by a running projector" in refused.stdout + refused.stderr
    finally:
        db.close()  # type: ignore[attr-defined]
