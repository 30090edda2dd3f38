"""A store walked through the application once per module, copied for each test.

The audit tests that damage a store (``test_audit_chain``, ``test_audit_verify_paths``) and
read its tree (``test_audit_tree``) each need the same demo walk of many cases, on SQLite and
on PostgreSQL. Walking it for every test was most of their CPU (a walk of 12 to 40 cases
costs 0.2 to 0.8 s of the test process, more of PostgreSQL's). Here the walk is made once per
module and store, by the application, into a template that no test touches; each test gets
a copy of its own (the SQLite file; on PostgreSQL a fresh schema made by the same
migration as any store's, ``cbcm db init``, filled row for row from the template's tables,
its position sequence where the template's is) and of the template's data directory (the
key ring, the writer key: the files beside the keys), then opens the application on it.

So each test starts from an application that opened the walked store, as ``cbcm audit
verify`` and every other process after the first do, rather than from the one that wrote it;
what these tests look at (the stored events, links, marks and tiles, read through the
recorder) is the same bytes either way.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.event_store.schema import VERSION_TABLE
from services.settings import Settings
from tests.conftest import fresh_schema

EVENTS_DB = "events.sqlite3"

ORDER_BY = {"cbcm_events_data_keys": "scope, subject, generation"}
"""The data keys' INSERT trigger refuses a generation under an erased one: copied in order."""


@dataclass(frozen=True)
class Template:
    """A walked store no test writes to: its data directory and where its events are."""

    kind: str
    data_dir: Path
    event_store: str
    server: str | None = None
    """The PostgreSQL server's URL (no schema); None on SQLite."""


def _schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1].split("&", 1)[0]


def _copy_rows(server: str, source: str, target: str) -> None:
    """Every row of ``source``'s store tables into ``target``'s (made by the same migration),
    and the position sequence to where the source's is, in one transaction."""
    with psycopg.connect(server) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> %s "
                "ORDER BY tablename",
                (source, VERSION_TABLE),
            )
        ]
        # the migration's one row (the tracking table's mark of it): the template's stands
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(target, "cbcm_tracking")))
        for table in tables:
            order = ORDER_BY.get(table)
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {}{}").format(
                    sql.Identifier(target, table),
                    sql.Identifier(source, table),
                    sql.SQL(f" ORDER BY {order}" if order else ""),
                )
            )
        sequences = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s",
            (source,),
        ).fetchall()
        for name, last_value in sequences:
            if last_value is not None:
                conn.execute(
                    "SELECT setval(%s::regclass, %s, true)", (f'"{target}"."{name}"', last_value)
                )


@contextmanager
def make_template(
    kind: str, root: Path, server: str | None, walk: Callable[[ComplaintMechanism], Any]
) -> Iterator[Template]:
    """A store of ``kind`` walked by ``walk`` through the application, closed; removed after."""
    with ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{root / EVENTS_DB}"
        else:
            assert server is not None
            url = stack.enter_context(fresh_schema(server))
        template = Template(kind, root / "data", url, server)
        app = complaint_mechanism(Settings(data_dir=template.data_dir, event_store=url))
        try:
            walk(app)
        finally:
            app.close()
        yield template


@contextmanager
def copy_of(template: Template, root: Path) -> Iterator[Settings]:
    """Settings naming a copy of ``template``'s store and data directory under ``root``."""
    shutil.copytree(template.data_dir, root / "data")
    if template.kind == "sqlite":
        shutil.copyfile(template.event_store.removeprefix("sqlite:///"), root / EVENTS_DB)
        yield Settings(data_dir=root / "data", event_store=f"sqlite:///{root / EVENTS_DB}")
        return
    assert template.server is not None
    with fresh_schema(template.server) as url:
        _copy_rows(template.server, _schema_of(template.event_store), _schema_of(url))
        yield Settings(data_dir=root / "data", event_store=url)


def demo_walk(cases: int, seed: int, start: datetime) -> Callable[[ComplaintMechanism], None]:
    """The demo network, then ``cases`` cases walked with ``random.Random(seed)``."""

    def walk(app: ComplaintMechanism) -> None:
        build_demo_network(app, start)
        walk_cases(app, cases, random.Random(seed), start)

    return walk


def walked_store_fixtures(walk: Callable[[ComplaintMechanism], Any]) -> tuple[Any, Any]:
    """A module's ``template`` fixture (once per store, SQLite then PostgreSQL) and its
    ``store`` fixture (an application on a fresh copy of it, for each test)."""

    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def template(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Template]:
        server = None
        if request.param == "postgres":
            server = request.getfixturevalue("postgres_server_url")
        root = tmp_path_factory.mktemp(f"template-{request.param}")
        with make_template(request.param, root, server, walk) as made:
            yield made

    @pytest.fixture
    def store(template: Template, tmp_path: Path) -> Iterator[ComplaintMechanism]:
        with copy_of(template, tmp_path) as settings:
            app = complaint_mechanism(settings)
            try:
                yield app
            finally:
                app.close()

    return template, store
