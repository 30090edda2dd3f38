"""What the relay's tests share: a store written once and copied for each test, and the
translating processes started from a fork server.

A store written once (``StoreTemplate``; the demo's, fixture ``demo_template`` of
``tests/integration/conftest.py``, once per test process and store): the demo's walk through
the application costs a test 0.7 s of CPU on SQLite and more on PostgreSQL, and the tests of
``test_relay_messages.py`` (and one of ``test_relay_translating_attacks.py``) only read it, or
add to it in a copy of their own. Each test
gets a copy of the written store, its keys' directory with it: the SQLite file copied, or on
PostgreSQL a fresh schema made as ``cbcm db init`` makes one (``tests.conftest.fresh_schema``)
with the template's rows copied into it and its sequences set as the template's. The copy is
the same store: same events at the same positions, same hash chain, same data keys and
nonce (so the same store id), only opened by an application that did not write it (as the
relay always is: a process of its own).

Translating processes (``translator_processes``): ``TranslatorProcess`` spawns a fresh
interpreter, which imports the application (about 0.9 s of CPU) before it opens the store.
The tests start about twenty; here they fork from a fork server that imported those modules
once per test process. The fork server is itself a fresh interpreter (never a fork of the
test process and its threads), so each translating process starts as a spawned one would,
with nothing of the test process's state (a monkeypatch stays in the test process, as with
spawn); ``cbcm relay`` spawns its own (``test_relay_leader.py`` runs it so).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path
from typing import Generic, TypeVar

import nats.js.errors
import psycopg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import sql

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.relay.translating import TranslatorProcess
from services.settings import Settings
from tests.conftest import fresh_schema

T = TypeVar("T")

_PRELOAD = [
    # what a translating process imports (``translating._serve``): the application and both
    # stores' recorders, the logging
    "services.relay.translating",
    "services.bootstrap",
    "services.runtime.logging",
    "services.event_store.store_id",
    "eventsourcing.sqlite",
    "eventsourcing.postgres",
]


@contextmanager
def translator_processes() -> Iterator[Callable[..., TranslatorProcess]]:
    """Makes ``TranslatorProcess``es whose processes fork from a fork server (see the module);
    the fork server is stopped and reaped at the end, so that its CPU and its processes'
    count as this process's children's, as spawned processes' do."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    try:
        yield functools.partial(TranslatorProcess, context=context)
    finally:
        forkserver._forkserver._stop()  # the one way to reap it (CPython tests use it)


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


async def stream_contents(js: JetStreamContext, stream: str) -> list[StoredMessage]:
    """What ``stream`` holds from its first sequence to its last (as ``stream_info`` says when
    asked), in order: each message's sequence, subject, data and headers, as ``get_msg``
    returns them one request each (2,000 requests cost a test 0.45 s of CPU, the server about
    as much); read here in batches by a consumer of its own, deleted after. A message no
    longer there (a share purged with its case's erasure) is not in it."""
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not info.state.messages:
        return []
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    name = (await subscription.consumer_info()).name
    out: list[StoredMessage] = []
    try:
        while True:
            for msg in await subscription.fetch(500, timeout=10):
                seq = msg.metadata.sequence.stream
                if seq > last:
                    return out
                out.append(StoredMessage(seq, msg.subject, msg.data, dict(msg.headers or {})))
                if seq == last or msg.metadata.num_pending == 0:
                    return out
    finally:
        await subscription.unsubscribe()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, name)


@dataclass(frozen=True)
class StoredMessage:
    """One message of a stream, as ``stream_contents`` reads it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
