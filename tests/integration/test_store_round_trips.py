"""What a commit and a read cost the PostgreSQL event store in statements and round trips, and
the chain they write (issue #13).

- A commit's statements go to the server in two round trips: the lock, ``NOTIFY``, the events'
  ``INSERT`` and the read of the chain's last link in one, the links, the writer mark and the
  ``COMMIT`` in the other (counted at psycopg's pipeline syncs and result fetches).
- An exception raised between the two round trips rolls the commit back.
- The relay's record of its position is one statement in one round trip (no BEGIN, COMMIT).
- A read transaction (``transaction(commit=False)``) keeps the statements psycopg prepared on
  its connection (it ends with ``COMMIT``, where a ``ROLLBACK`` made psycopg deallocate them
  all), and is read only: the database refuses a write inside it, and the connection goes back
  to the pool writable.
- The links written for given events, at given positions, are the same bytes as those the
  code before these changes wrote (a golden), on both stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from services.application.mechanism import ComplaintMechanism
from services.audit.verify import verify
from services.event_store import reads
from services.event_store.chain import head, read_log

GOLDEN_HEAD = "433c513a6e11f46a3b5bae5433479f95d30a7458e18b7d3f60db82fed69326c8"
"""The chain's last link after ``golden_events`` in three commits, as main at 557e372 wrote it."""


def golden_events() -> list[list[StoredEvent]]:
    """Fixed events (no clock, no random key) in three commits of 1, 3 and 2 events."""
    ids = [uuid.UUID(int=n * 0x1111) for n in range(1, 4)]

    def event(oid: uuid.UUID, version: int, text: str) -> StoredEvent:
        return StoredEvent(oid, version, f"tests.golden:Event{version}", text.encode() * 7)

    return [
        [event(ids[0], 1, "a")],
        [event(ids[1], 1, "b"), event(ids[1], 2, "c"), event(ids[2], 1, "é")],
        [event(ids[0], 2, "d"), event(ids[2], 2, "e")],
    ]


def test_the_links_for_given_events_are_the_golden_bytes(app: ComplaintMechanism) -> None:
    # given a fresh store, when fixed events are committed through the application's recorder
    for commit in golden_events():
        app.recorder.insert_events(commit)

    # then the chain holds, its head is the link main wrote for them, and the audit agrees
    rows = list(read_log(app.recorder))
    assert [(r.position, None if r.chain is None else r.chain.previous_position) for r in rows] == [
        (1, 0),
        (2, 1),
        (3, 2),
        (4, 3),
        (5, 4),
        (6, 5),
    ]
    top = head(app.recorder)
    assert top is not None
    assert top.link.hex() == GOLDEN_HEAD
    assert verify(app.recorder).first is None


# --------------------------------------------------------------------- round trips


class Waits:
    """Counts the round trips to the server in this process, while on: every wait of a
    psycopg connection on the server, named by what psycopg waits for."""

    PIPELINE = frozenset(
        # a sync, the last sync as a pipeline closes, a fetch asking the server to flush
        ("BasePipeline._sync_gen", "BasePipeline._exit_gen", "BasePipeline._fetch_gen")
    )
    NO_TRIP = frozenset(("BasePipeline._enter_gen",))

    def __init__(self) -> None:
        self.count = 0
        self.on = False

    def waits(self, conn: Any, gen: Any) -> bool:
        name = getattr(gen, "__qualname__", "")
        if name in self.PIPELINE:
            return True
        if conn._pipeline is not None or name in self.NO_TRIP:
            return False  # queued in a pipeline: sent without waiting
        # a commit with no transaction open (the pool's, handing a connection back) sends
        # nothing; any other wait outside a pipeline is a statement and its answer
        return not (name == "BaseConnection._commit_gen" and conn.info.transaction_status == 0)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Waits]:
    counter = Waits()
    wait = psycopg.Connection.wait

    def waited(self: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if counter.on and counter.waits(self, gen):
            counter.count += 1
        return wait(self, gen, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "wait", waited)
    yield counter


def test_a_commit_takes_two_round_trips(postgres_url: str, tmp_path: Any, waits: Waits) -> None:
    from services.bootstrap import complaint_mechanism  # noqa: PLC0415
    from services.settings import Settings  # noqa: PLC0415

    app = complaint_mechanism(Settings(data_dir=tmp_path / "data", event_store=postgres_url))
    try:
        commits = golden_events()
        app.recorder.insert_events(commits[0])  # the store's first commit draws its id
        # when two more commits are made
        waits.on = True
        for commit in commits[1:]:
            app.recorder.insert_events(commit)
        waits.on = False
    finally:
        app.close()

    # then each took two round trips: (lock, NOTIFY, INSERT, last link) and (links, mark,
    # COMMIT); the code before this change took three (the last link read on its own)
    assert waits.count == 2 * 2


def test_an_exception_between_the_round_trips_rolls_the_commit_back(
    postgres_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.bootstrap import complaint_mechanism  # noqa: PLC0415
    from services.event_store import chain  # noqa: PLC0415
    from services.settings import Settings  # noqa: PLC0415

    app = complaint_mechanism(Settings(data_dir=tmp_path / "data", event_store=postgres_url))
    try:
        commits = golden_events()
        app.recorder.insert_events(commits[0])

        # when the links of the next commit cannot be computed (the events are inserted, the
        # round trip that brought their positions is over)
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise MemoryError

        monkeypatch.setattr(chain, "chain_rows", broken)
        with pytest.raises(MemoryError):
            app.recorder.insert_events(commits[1])
        monkeypatch.undo()

        # then none of its events is stored (the library's insert committed them unlinked),
        # and the next commit links on from the last
        assert [r.position for r in read_log(app.recorder)] == [1]
        app.recorder.insert_events(commits[1])
        assert verify(app.recorder).first is None
        assert [r.has_event for r in read_log(app.recorder)] == [True, True, True, True]
    finally:
        app.close()


def test_recording_the_relays_position_takes_one_round_trip(
    postgres_url: str, tmp_path: Any, waits: Waits
) -> None:
    from services.bootstrap import complaint_mechanism  # noqa: PLC0415
    from services.settings import Settings  # noqa: PLC0415

    app = complaint_mechanism(Settings(data_dir=tmp_path / "data", event_store=postgres_url))
    try:
        tracking = app.factory.tracking_recorder()
        tracking.insert_tracking(Tracking("relay", 3))
        # when the relay records that it published up to position 5
        waits.on = True
        tracking.insert_tracking(Tracking("relay", 5))
        waits.on = False
        # then that took one statement, alone (BEGIN, INSERT, COMMIT were three round trips)
        assert waits.count == 1
        # and a position that does not move forward is still refused, changing nothing
        with pytest.raises(IntegrityError):
            tracking.insert_tracking(Tracking("relay", 4))
        assert tracking.max_tracking_id("relay") == 5
    finally:
        app.close()


# --------------------------------------------------------------------- read transactions


@pytest.fixture
def datastore(postgres_url: str) -> Iterator[PostgresDatastore]:
    """A datastore of one connection (each transaction gets the same one), with read
    transactions as the event store's recorder installs them."""
    url, _, query = postgres_url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    schema = params.pop("schema")
    info = conninfo_to_dict(url + ("?" + "&".join(f"{k}={v}" for k, v in params.items())))
    store = PostgresDatastore(
        dbname=str(info.get("dbname") or "postgres"),
        host=str(info.get("host") or "127.0.0.1"),
        port=str(info.get("port") or "5432"),
        user=str(info.get("user") or "postgres"),
        password=str(info.get("password") or ""),
        pool_size=1,
        max_overflow=0,
        schema=schema,
    )
    reads.install(store)
    with store.transaction(commit=True) as curs:
        curs.execute(f'CREATE TABLE "{schema}".notes (n integer)')
        curs.execute(f'SET search_path TO "{schema}"')  # not transaction-local: stays on
    yield store
    store.close()


def _prepared(store: PostgresDatastore) -> list[str]:
    with store.get_connection() as conn, conn.cursor() as curs:
        curs.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
        return [str(row["name"]) for row in curs.fetchall()]


def test_a_read_transaction_keeps_the_prepared_statements(datastore: PostgresDatastore) -> None:
    # given a statement psycopg prepared on the connection
    with datastore.get_connection() as conn:
        conn.execute("SELECT count(*) FROM notes", prepare=True)
    before = _prepared(datastore)
    assert before

    # when a read transaction runs on it
    with datastore.transaction(commit=False) as curs:
        curs.execute("SELECT count(*) AS n FROM notes")
        assert curs.fetchone() == {"n": 0}

    # then the statement is still prepared (a ROLLBACK made psycopg send DEALLOCATE ALL)
    assert _prepared(datastore) == before


def test_a_read_transaction_cannot_write(datastore: PostgresDatastore) -> None:
    # when a read transaction tries to write
    with (
        pytest.raises(PersistenceError) as refused,
        datastore.transaction(commit=False) as curs,
    ):
        curs.execute("INSERT INTO notes VALUES (1)")
    assert isinstance(refused.value.__cause__, errors.ReadOnlySqlTransaction)

    # then nothing is written, and the connection it used writes again once handed out
    with datastore.transaction(commit=True) as curs:
        curs.execute("INSERT INTO notes VALUES (2)")
    with datastore.transaction(commit=False) as curs:
        curs.execute("SELECT n FROM notes")
        assert [row["n"] for row in curs.fetchall()] == [2]


def test_a_read_transaction_left_by_an_error_leaves_the_connection_writable(
    datastore: PostgresDatastore,
) -> None:
    # given a read transaction left by an exception of the reader's own
    with pytest.raises(LookupError), datastore.transaction(commit=False) as curs:
        curs.execute("SELECT 1")
        raise LookupError
    # then the same connection writes
    with datastore.transaction(commit=True) as curs:
        curs.execute("INSERT INTO notes VALUES (3)")
    with datastore.transaction(commit=False) as curs:
        curs.execute("SELECT count(*) AS n FROM notes")
        assert curs.fetchone() == {"n": 1}
