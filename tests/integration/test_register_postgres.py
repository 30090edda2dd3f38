"""The case register rebuilt from the stream on SQLite and on PostgreSQL (issue #21, ADR 25):
``rebuild`` (what ``cbcm projections rebuild register`` runs) replays a demo network's
stream from a real nats-server into a SQLite file and into a PostgreSQL schema; both hold
the same rows, and answer every reader's pages (and their cursors) alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.catalogue import decode_message
from domain.actors import Role
from projections.base import ReadModelDb
from projections.register import (
    Cursor,
    RegisterFilter,
    RegisterProjection,
    all_rows,
    register_page,
)
from services.api.register import register_reader
from services.identity.tokens import Principal
from services.nats.server import EmbeddedNats
from services.projector.runner import apply_batch, open_projection, rebuild
from services.projector.storage import PostgresReadModel, SqliteReadModel
from tests.integration.test_projector import Outgoing, demo_stream, publish

START = datetime(2025, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Outgoing], list[str]]:
    """A demo network's translated events, and its agencies."""
    return demo_stream(tmp_path_factory.mktemp("register-demo"), 40, 21, START)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as running:
        yield running


def _pages(db: ReadModelDb, principal: Principal, flt: RegisterFilter) -> list[list[str]]:
    reader = register_reader(principal)
    now = START + timedelta(days=20)
    pages: list[list[str]] = []
    after: Cursor | None = None
    while True:
        page = register_page(db, reader, flt, now=now, after=after, limit=7)
        pages.append([str(r) for r in page.rows])
        if page.next_cursor is None:
            return pages
        after = page.next_cursor


async def test_a_rebuild_gives_the_same_register_on_sqlite_and_postgresql(
    stream: tuple[list[Outgoing], list[str]],
    server: EmbeddedNats,
    postgres_server_url: str,
    tmp_path: Path,
) -> None:
    outgoing, agencies = stream
    await publish(server.url, outgoing)
    lite = SqliteReadModel(tmp_path / "register.sqlite3", "register", tmp_path)
    pg = PostgresReadModel(postgres_server_url, "t_register_rebuild", "register", tmp_path)
    pg.drop()
    try:
        last = outgoing[-1].position
        assert await rebuild(RegisterProjection(), lite, server.url) == last
        assert await rebuild(RegisterProjection(), pg, server.url) == last
        with lite.reading() as a, pg.reading() as b:
            rows = all_rows(a)
            assert len(rows) >= 40
            assert len({r["status"] for r in rows}) >= 3  # a register worth comparing
            assert any(r["investigation_agency"] for r in rows)
            assert rows == all_rows(b)
            readers = [
                Principal("coord-1", "ocha", frozenset({Role.COORDINATOR})),
                Principal("aud-1", "ocha", frozenset({Role.AUDITOR})),
                *(Principal(f"fp-{c}", c, frozenset({Role.FOCAL_POINT})) for c in agencies),
                *(
                    Principal(f"inv-{c}", c, frozenset({Role.INVESTIGATING_ENTITY}))
                    for c in agencies
                ),
            ]
            searches = [
                RegisterFilter(),
                RegisterFilter(overdue=True),
                RegisterFilter(open=False),
                RegisterFilter(statuses=("under_investigation", "substantiated")),
                RegisterFilter(categories=("sea_allegation", "unassessed")),
            ]
            for principal in readers:
                for flt in searches:
                    assert _pages(a, principal, flt) == _pages(b, principal, flt), (principal, flt)
    finally:
        pg.close()
        pg.drop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_paging_neither_repeats_nor_skips_while_the_projector_writes(
    stream: tuple[list[Outgoing], list[str]],
    backend: str,
    postgres_server_url: str,
    tmp_path: Path,
) -> None:
    """A reader pages through the register, each page its own read, while the projector
    applies the rest of the stream in small batches in another thread (new cases, received
    at any time, transfers, closures): no case is given twice, and every case there at the
    start is given."""
    outgoing, _ = stream
    items = [(o.position, decode_message(o.payload)) for o in outgoing]
    previous = {
        o.position: p for o, p in zip(outgoing, [0, *[o.position for o in outgoing]], strict=False)
    }
    half = len(items) // 2
    store: SqliteReadModel | PostgresReadModel
    if backend == "sqlite":
        store = SqliteReadModel(tmp_path / "register.sqlite3", "register", tmp_path)
    else:
        store = PostgresReadModel(postgres_server_url, "t_register_paging", "register", tmp_path)
        store.drop()
    projection = RegisterProjection()
    writer = open_projection(projection, store)
    try:
        apply_batch(projection, writer, items[:half], previous)
        coordinator = register_reader(Principal("coord-1", "ocha", frozenset({Role.COORDINATOR})))
        now = START + timedelta(days=20)
        with store.reading() as db:
            there = {
                str(r.case_id) for r in register_page(db, coordinator, now=now, limit=200).rows
            }
        assert len(there) >= 10
        done = threading.Event()
        page_read = threading.Semaphore(0)

        def write() -> None:
            # a batch after each page read (waiting on the reader, not on time), so that
            # writes fall between every two pages; the last batches once the reader is done
            try:
                for i in range(half, len(items), 3):
                    page_read.acquire(timeout=30)
                    apply_batch(projection, writer, items[i : i + 3], previous)
            finally:
                done.set()

        thread = threading.Thread(target=write)
        thread.start()
        given: list[str] = []
        after: Cursor | None = None
        pages = 0
        while True:
            with store.reading() as db:
                page = register_page(db, coordinator, now=now, after=after, limit=2)
            given += [str(r.case_id) for r in page.rows]
            pages += 1
            page_read.release()
            if page.next_cursor is None:
                break
            after = page.next_cursor
        for _ in range(len(items)):
            page_read.release()
        thread.join()
        assert done.is_set()
        assert len(given) == len(set(given)), "a case given twice"
        assert there <= set(given), f"skipped: {there - set(given)}"
        assert pages > 5
    finally:
        close = getattr(writer, "close", None)
        if close is not None:
            close()
        store.close()
        if isinstance(store, PostgresReadModel):
            store.drop()
