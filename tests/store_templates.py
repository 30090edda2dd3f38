"""A store written once through the application, copied for each test that reads it or adds
to a copy of its own.

Writing a store (the demo's walk of many cases, say) is most of the CPU of a test that only
reads it: 0.2 to 0.8 s of the test process, more of PostgreSQL's. A template is written once
(per module or test process, and store) and each test gets a copy: its keys' directory, and
the SQLite file, or on PostgreSQL a fresh schema made as ``cbcm db init`` makes one
(``tests.conftest.fresh_schema``) with the template's rows copied into it, counted, and its
sequences set as the template's. The copy is the same store: same events at the same
positions, same hash chain, same data keys and nonce (so the same store id), only opened by
an application that did not write it, as every process after the first opens a store
(the relay, ``cbcm audit verify``). Used by the relay's tests (``tests/relay_stores.py``)
and the audit tests (``tests/integration/walked_stores.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import psycopg
from psycopg import sql

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.conftest import fresh_schema

T = TypeVar("T")


@dataclass(frozen=True)
class StoreTemplate(Generic[T]):
    """A store written once; ``made`` is what its writing returned."""

    kind: str
    """``sqlite`` or ``postgres``."""
    url: str
    data_dir: Path
    made: T
    server_url: str | None

    @contextmanager
    def copy(self, data_dir: Path) -> Iterator[str]:
        """A copy of the store, its keys in ``data_dir``: the copy's ``CBCM_EVENT_STORE``
        URL (a PostgreSQL copy is dropped after)."""
        shutil.copytree(self.data_dir, data_dir)
        if self.server_url is None:
            source = Path(self.url.removeprefix("sqlite:///"))
            target = data_dir.parent / source.name
            shutil.copyfile(source, target)
            yield f"sqlite:///{target}"
            return
        with fresh_schema(self.server_url) as url:
            _copy_rows(self.server_url, _schema_of(self.url), _schema_of(url))
            yield url


def _schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1].split("&", 1)[0]


def _copy_rows(server_url: str, source: str, target: str) -> None:
    """Every row of the tables of schema ``source`` into ``target`` (made by ``cbcm db
    init``; a table the application made at its start is made like the source's), and every
    sequence set where the source's is."""
    with psycopg.connect(server_url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name",
                (source,),
            )
        ]
        for table in tables:
            src, dst = sql.Identifier(source, table), sql.Identifier(target, table)
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(dst, src)
            )
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = %s ORDER BY ordinal_position",
                    (source, table),
                )
            ]
            listed = sql.SQL(", ").join(map(sql.Identifier, columns))
            # data keys in generation order: a key's tombstone refuses an older generation
            # inserted after it (the store's trigger), as it did when they were written
            order = sql.SQL(" ORDER BY generation" if "generation" in columns else "")
            # what `cbcm db init` wrote itself (its schema version, applied at its own time;
            # its mark in the tracking table) is kept: the same keys
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}{} "
                    "ON CONFLICT DO NOTHING"
                ).format(dst, listed, listed, src, order)
            )
            count = sql.SQL("SELECT count(*) FROM {}")
            copied = conn.execute(count.format(dst)).fetchone()
            assert copied == conn.execute(count.format(src)).fetchone(), table
        for name, last in conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s",
            (source,),
        ).fetchall():
            if last is not None:  # None: never used
                target_sequence = sql.Identifier(target, name).as_string(conn)
                conn.execute("SELECT setval(%s::regclass, %s)", (target_sequence, last))


@contextmanager
def store_template(
    kind: str, folder: Path, server_url: str | None, write: Callable[[ComplaintMechanism], T]
) -> Iterator[StoreTemplate[T]]:
    """A store of ``kind`` written by ``write`` through the application, closed after it,
    kept (a PostgreSQL schema dropped) until the context ends."""
    data_dir = folder / "data"
    if kind == "sqlite":
        with _written(f"sqlite:///{folder / 'events.sqlite3'}", data_dir, write) as template:
            yield template
        return
    assert server_url is not None
    with fresh_schema(server_url) as url, _written(url, data_dir, write, server_url) as template:
        yield template


@contextmanager
def _written(
    url: str,
    data_dir: Path,
    write: Callable[[ComplaintMechanism], T],
    server_url: str | None = None,
) -> Iterator[StoreTemplate[T]]:
    app = complaint_mechanism(Settings(data_dir=data_dir, event_store=url))
    try:
        made = write(app)
    finally:
        app.close()
    kind = "sqlite" if server_url is None else "postgres"
    yield StoreTemplate(kind, url, data_dir, made, server_url)
