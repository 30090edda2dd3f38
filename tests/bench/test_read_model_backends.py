"""Read models on PostgreSQL next to SQLite (issue #16, ADR 16), in the same run.

One event store (SQLite, so that only the read models differ), an embedded nats-server and
``cbcm relay`` as a process. ``cbcm project inbox`` runs as a process too, in turns: on a
SQLite read model, then on a PostgreSQL one (``CBCM_READ_MODEL_STORE``), and again, so that
drift on a shared machine falls on both. Each turn catches up on the stream (the durable
consumer is re-created at the read model's position), then complaints are received at 100
commands/s for ``PHASE_SECONDS``; the lag is from a command's commit to a poller (its own
connection, every millisecond) seeing the read model's position reach it (the row is in the
same transaction). Reported: lag p50 and p99 per backend, the turns pooled.

Then a demo load is relayed, and each read model (inbox, assistance, stats) is rebuilt from
the whole stream into a fresh SQLite file and into a fresh PostgreSQL schema, alternating
``ROUNDS`` times; the best rate of each is kept. Both rebuilds must hold the same rows.

Figures: the PostgreSQL value with the SQLite one as its baseline (ratio PostgreSQL / SQLite
for a rate, SQLite / PostgreSQL for a lag: above 1 means PostgreSQL is faster).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from projections.assistance import AssistanceProjection
from projections.base import Projection
from projections.inbox import InboxProjection
from projections.stats import StatisticsProjection
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, demo_start, walk_cases
from services.nats.server import EmbeddedNats
from services.projector.runner import read_position, rebuild
from services.projector.storage import PostgresReadModel, SqliteReadModel, read_model_store
from services.settings import Settings
from tests.bench.results import Figure, quick, record
from tests.bench.test_event_flow import CBCM, PositionPoller, Timed, best, drive, pct, wait_until
from tests.read_model_places import Places, dump

pytestmark = pytest.mark.bench

RATE = 100
PHASE_SECONDS = float(os.environ.get("CBCM_BENCH_PHASE_SECONDS", "5" if quick() else "10"))
TURNS = 2
"""Lag turns per backend, alternating."""
ROUNDS = 2
"""Rebuilds per read model and backend, alternating; the best is kept."""
DEMO_EVENTS = int(os.environ.get("CBCM_BENCH_REBUILD_EVENTS", "4000" if quick() else "10000"))
BENCH = "read models on PostgreSQL (#16)"


class Poller(PositionPoller):
    """``PositionPoller`` reading the position through ``position`` (any backend)."""

    def __init__(self, position: Callable[[], int]) -> None:
        super().__init__(Path("."))
        self.position = position

    def _run(self) -> None:
        while not self._stop.is_set():
            position = self.position()
            now = time.perf_counter()
            expected = self.expected
            i = len(self.reached)
            while i < len(expected) and expected[i][0] <= position:
                self.reached.append(now)
                i += 1
            time.sleep(self.interval)


def _process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([CBCM, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _poll_position(store: Any) -> Callable[[], int]:
    """A quick position read over one connection of the poller's own."""
    if isinstance(store, SqliteReadModel):
        from projections.base import get_position, open_read_model  # noqa: PLC0415

        holder: list[Any] = []

        def sqlite_position() -> int:
            if not holder:
                if not store.path.exists():
                    return 0
                holder.append(open_read_model(store.path, readonly=True))
            return get_position(holder[0])

        return sqlite_position
    assert isinstance(store, PostgresReadModel)
    conn = store.connect("bench poller")

    def pg_position() -> int:
        try:
            row = conn.execute("SELECT position FROM projection_position").fetchone()
        except Exception:  # not created yet
            return 0
        return int(row[0]) if row else 0

    return pg_position


def test_read_models_on_postgresql_next_to_sqlite(postgres_server_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store_url = f"sqlite:///{data / 'events.sqlite3'}"
    places = Places("postgres", tmp_path, postgres_server_url)
    nats = EmbeddedNats(tmp_path / "nats").start()
    settings = {
        "sqlite": Settings(data_dir=data, event_store=store_url),
        "postgres": Settings(
            data_dir=data, event_store=store_url, read_model_store=places.schema_url
        ),
    }
    inbox = {kind: read_model_store(s, "inbox") for kind, s in settings.items()}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
        "CBCM_DATA_DIR": str(data),
        "CBCM_EVENT_STORE": store_url,
        "CBCM_NATS_URL": nats.url,
        "CBCM_LOG_FORMAT": "json",
    }
    env = {
        "sqlite": base_env,
        "postgres": base_env | {"CBCM_READ_MODEL_STORE": places.schema_url},
    }
    app = complaint_mechanism(settings["sqlite"])
    relay = _process(["relay"], base_env, tmp_path / "relay.log")
    switch_interval = sys.getswitchinterval()
    lags: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    try:
        start = demo_start()
        build_demo_network(app, start)
        ids: list[Any] = []
        for turn in range(TURNS):
            for kind in ("sqlite", "postgres"):
                projector = _process(
                    ["project", "inbox"], env[kind], tmp_path / f"project-{kind}.log"
                )
                try:
                    head = app.recorder.max_notification_id() or 0
                    wait_until(
                        lambda k=kind, h=head: read_position(inbox[k]) >= h,  # type: ignore[misc]
                        120,
                        f"the {kind} inbox to catch up",
                    )
                    poller = Poller(_poll_position(inbox[kind]))
                    poller.start()
                    sys.setswitchinterval(0.0005)
                    first, _, _, _ = drive(
                        app, RATE, PHASE_SECONDS, poller, random.Random(turn), ids
                    )
                    wait_until(lambda p=poller: p.pending == 0, 30, f"{kind} at {RATE}/s")  # type: ignore[misc]
                    sys.setswitchinterval(switch_interval)
                    poller.stop()
                    lags[kind] += [
                        (reached - committed) * 1000
                        for (_, committed), reached in zip(
                            poller.expected[first:], poller.reached[first:], strict=True
                        )
                    ]
                    assert projector.poll() is None, f"cbcm project inbox on {kind} exited"
                finally:
                    sys.setswitchinterval(switch_interval)
                    _stop(projector)

        # ---- a demo load, relayed; then rebuilds on both, alternating
        rng = random.Random(16)
        walked = 0
        before = app.recorder.max_notification_id() or 0
        while (app.recorder.max_notification_id() or 0) - before < DEMO_EVENTS:
            walk_cases(app, 200, rng, start + timedelta(hours=1, days=walked))
            walked += 1
        last = app.recorder.max_notification_id() or 0
        projection_of: dict[str, Callable[[], Projection]] = {
            "inbox": InboxProjection,
            "assistance": AssistanceProjection,
            "stats": StatisticsProjection,
        }
        # the relay has published the whole load before anything is timed
        wait_until(lambda: _stream_last(nats.url)[1] >= last, 300, "the relay to catch up")
        messages = _stream_last(nats.url)[0]
        rates: dict[tuple[str, str], list[Timed]] = {}
        for name, make in projection_of.items():
            for r in range(ROUNDS):
                fresh = {
                    "sqlite": tmp_path / f"rebuilt-{name}-{r}.sqlite3",
                    "postgres": places(f"rebuilt_{name}_{r}", name),
                }
                for kind, where in fresh.items():
                    began = time.perf_counter()
                    assert asyncio.run(rebuild(make(), where, nats.url)) == last
                    rates.setdefault((name, kind), []).append(
                        Timed(messages, time.perf_counter() - began)
                    )
                assert dump(fresh["sqlite"]) == dump(fresh["postgres"]), name

        # ---- report
        print()
        print("-" * 100)
        print(
            f"read models on PostgreSQL next to SQLite: inbox lag at {RATE} commands/s "
            f"({TURNS} turns of {PHASE_SECONDS:.0f} s each, alternating), rebuilds of {messages} "
            f"messages (best of {ROUNDS}, alternating)"
        )
        print(f"{'':40}{'SQLite':>12}{'PostgreSQL':>12}{'PG/SQLite':>12}")
        for q in (50, 99):
            lite, pg = pct(lags["sqlite"], q), pct(lags["postgres"], q)
            print(f"{f'inbox lag p{q} (ms)':40}{lite:>12.1f}{pg:>12.1f}{pg / lite:>12.2f}")
            record(
                Figure(
                    BENCH,
                    f"inbox lag p{q}, commit -> read model, {RATE} commands/s",
                    "postgres",
                    pg,
                    "ms",
                    baseline=lite,
                    baseline_name="the same on a SQLite read model (alternating turns)",
                    better="lower",
                )
            )
        for name in projection_of:
            lite_t, pg_t = best(rates[(name, "sqlite")]), best(rates[(name, "postgres")])
            print(
                f"{f'{name} rebuild (msgs/s)':40}{lite_t.rate:>12.0f}{pg_t.rate:>12.0f}"
                f"{pg_t.rate / lite_t.rate:>12.2f}"
            )
            record(
                Figure(
                    BENCH,
                    f"{name} rebuild rate",
                    "postgres",
                    pg_t.rate,
                    "msgs/s",
                    baseline=lite_t.rate,
                    baseline_name="the same rebuild into a SQLite file (alternating)",
                )
            )
        print("-" * 100)
    finally:
        sys.setswitchinterval(switch_interval)
        _stop(relay)
        app.close()
        for store in inbox.values():
            store.close()
        nats.stop()
        places.close()


def _stream_last(url: str) -> tuple[int, int]:
    """The stream's message count, and the position of its last message (0 when empty)."""
    import msgspec  # noqa: PLC0415
    import nats as nats_py  # noqa: PLC0415

    from contracts.subjects import STREAM  # noqa: PLC0415

    class _P(msgspec.Struct):
        position: int | None = None

    async def main() -> tuple[int, int]:
        nc = await nats_py.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            if not info.state.last_seq:
                return 0, 0
            raw = await js.get_msg(STREAM, info.state.last_seq)
            last = msgspec.json.decode(raw.data or b"{}", type=_P).position or 0
            return int(info.state.messages), last
        finally:
            await nc.close()

    return asyncio.run(main())
