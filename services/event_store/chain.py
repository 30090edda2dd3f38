"""The hash chain over the event log: every stored event is linked to the one before it.

Each event's *link* is SHA-256 over the previous link and the stored event's bytes::

    link(p) = SHA-256( link(previous) | position | originator id | version | topic | state )

with the position and version as 8-byte big-endian integers, the originator id as its 16
bytes, the topic as a 4-byte big-endian length and its UTF-8 bytes, then the state as stored.
The first event links to 32 zero bytes. Each chain row also names the position it links to,
because PostgreSQL positions have holes (a refused write still spends a sequence number).

The chain rows are written by the application recorder in the same transaction as the events
(PostgreSQL: while the recorder holds its table lock, so links follow commit order). Both the
event table and the chain table refuse UPDATE and DELETE by trigger; ``deploy/postgres``
grants the application's role INSERT and SELECT only.

Each commit is also marked with the writer key (``services.event_store.custody``, ADR 14),
in the same transaction; a new store's first commit draws the random part of its id.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import structlog
from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import get_topic, retry
from psycopg import Cursor, adapters, postgres
from psycopg.pq import Format, TransactionStatus
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal

from services.event_store import custody, reads, tiles
from services.event_store.custody import STORE_NONCE, WRITER_PREFIX, WriterKey, WriterKeyError
from services.event_store.personal_data import tables as key_tables
from services.event_store.personal_data.data_keys import DataKeyErased, DataKeys

GENESIS = bytes(32)
"""What the first event links to."""

APPEND_ONLY = "the event log is append-only: events are never updated or deleted"


def link_hash(
    previous: bytes, *, position: int, originator_id: UUID, version: int, topic: str, state: bytes
) -> bytes:
    """The chain link of one stored event."""
    digest = hashlib.sha256(previous)
    digest.update(position.to_bytes(8, "big", signed=True))
    digest.update(originator_id.bytes)
    digest.update(version.to_bytes(8, "big", signed=True))
    encoded = topic.encode()
    digest.update(len(encoded).to_bytes(4, "big"))
    digest.update(encoded)
    digest.update(state)
    return digest.digest()


@dataclass(frozen=True)
class ChainRow:
    position: int
    previous_position: int
    link: bytes


class UnreadableRow(ValueError):
    """A row of the log that is not stored as the library writes it (``LogRow.unreadable``)."""


@dataclass(frozen=True)
class LogRow:
    """One position of the log as stored: the event, its chain row, or (damaged) only one."""

    position: int
    originator_id: UUID | None
    version: int | None
    topic: str | None
    state: bytes | None
    chain: ChainRow | None
    unreadable: str = ""
    """Why the event or its chain row is not stored as the library writes them (a value of
    another type, an id that is not an id, a topic not in UTF-8): a DBA's edit that the
    application cannot read back. Its link cannot be recomputed: ``link_from`` refuses."""

    @property
    def has_event(self) -> bool:
        return self.originator_id is not None

    def link_from(self, previous: bytes) -> bytes:
        if self.unreadable:
            raise UnreadableRow(f"position {self.position}: {self.unreadable}")
        assert self.originator_id is not None and self.version is not None
        assert self.topic is not None and self.state is not None
        return link_hash(
            previous,
            position=self.position,
            originator_id=self.originator_id,
            version=self.version,
            topic=self.topic,
            state=self.state,
        )


def chain_rows(
    previous_position: int, previous: bytes, events: Sequence[tuple[int, StoredEvent]]
) -> list[tuple[int, int, bytes]]:
    """The chain rows (position, previous position, link) of ``events`` (position, event),
    in order, after the link ``previous`` at ``previous_position``."""
    rows = []
    for position, event in events:
        oid = event.originator_id
        link = link_hash(
            previous,
            position=position,
            originator_id=oid if isinstance(oid, UUID) else UUID(str(oid)),
            version=event.originator_version,
            topic=event.topic,
            state=event.state,
        )
        rows.append((position, previous_position, link))
        previous_position, previous = position, link
    return rows


def _relinked(count: int) -> None:
    # Right once, when a store written before the chain existed is first opened; at any other
    # time someone emptied the chain table: checkpoints signed before will not match.
    structlog.get_logger().warning("audit.chain_relinked", events=count)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _mark(
    writer: WriterKey | None, rows: list[tuple[int, int, bytes]], store: str | None
) -> tuple[int, int, bytes]:
    """The writer mark row (last position, first position, mac) of a commit's chain rows in
    the store ``store`` (a version-2 mark)."""
    assert writer is not None and rows and store is not None
    first, last, link = rows[0][0], rows[-1][0], rows[-1][2]
    return last, first, writer.mark(first, last, link, store)


def _new_store_rows(
    writer: WriterKey | None, first: tuple[int, StoredEvent], started: bool
) -> tuple[list[tuple[str, str, int]], str]:
    """The custody rows a new store's first commit records: its id's nonce, and (unless a
    start is recorded already) that the writer key marks every commit from position 1,
    sealed for the store's id."""
    from services.event_store.store_id import store_id  # noqa: PLC0415 (it imports us)

    nonce = secrets.token_hex(16)
    rows = [(STORE_NONCE, nonce, 0)]
    position, event = first
    notification = Notification(
        originator_id=event.originator_id,
        originator_version=event.originator_version,
        topic=event.topic,
        state=event.state,
        id=position,
    )
    store = store_id(notification, nonce)
    if writer is not None and not started:
        rows.append((WRITER_PREFIX + writer.key_id, writer.start_value(1, store), 1))
    return rows, store


def _store_of_first(first: tuple[Any, ...] | None, nonce: str | None) -> str | None:
    """The store id from its first event's (originator id, version, topic, state) as read
    in the writer's transaction, and its nonce."""
    from services.event_store.store_id import store_id  # noqa: PLC0415 (it imports us)

    if first is None:
        return None
    oid, version, topic, state = first
    notification = Notification(
        originator_id=oid if isinstance(oid, UUID) else UUID(str(oid)),
        originator_version=int(version),
        topic=str(topic),
        state=bytes(state),
        id=1,
    )
    return store_id(notification, nonce)


def ledger_dir(env: Mapping[str, str]) -> Path | None:
    """Where what the database forgets is kept (the erasure ledger, the high-water mark, a
    kept writer start: ADR 23): ``CBCM_ERASURE_LEDGER_DIR``, by default the writer key's
    directory."""
    chosen = env.get("CBCM_ERASURE_LEDGER_DIR")
    if chosen:
        return Path(chosen)
    path = env.get("CBCM_WRITER_KEY_FILE")
    return Path(path).parent if path else None


def attach_writer(env: Mapping[str, str], recorder: Any) -> None:
    """Give the recorder the writer key the environment names (``CBCM_WRITER_KEY_FILE``).
    A process with another key than the one the store's commits are marked with is refused
    before it writes anything, as is a store holding marks (or a nonce) but no record of the
    key. A new store records, with its first commit, that the key marks every commit from
    position 1; a store written before marks gets its record only from the operator (``cbcm
    audit start-marks``). If the record cannot be trusted (``custody.start_problem``) or was
    never made, the process starts, for the audit's sake, but writes nothing, saying why.
    Recorders without a chain (the library's in-memory one) are left alone."""
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        return
    path = env.get("CBCM_WRITER_KEY_FILE")
    if not path:
        raise WriterKeyError("the event log's commits are marked: configure CBCM_WRITER_KEY_FILE")
    key = custody.load_writer_key(Path(path), create=env.get("CBCM_WRITER_KEY_CREATE") == "y")
    try:
        rows = custody.custody_rows(recorder)
    except ProgrammingError:
        raise WriterKeyError(
            "the store has no tables for writer marks yet (a store made before issue 15, "
            "whose tables this process may not create): start one process as the tables' "
            "owner with CBCM_CREATE_TABLES=true, then apply deploy/postgres/02-grants.sql"
        ) from None
    recorded = [name for name in rows if name.startswith(WRITER_PREFIX)]
    records = custody.writer_records(recorder)
    mine = next((r for r in records if r.key_id == key.key_id), None)
    if recorded and WRITER_PREFIX + key.key_id not in recorded:
        raise WriterKeyError(
            "this store's commits are marked with writer key "
            f"{', '.join(n.removeprefix(WRITER_PREFIX) for n in recorded)}, not this "
            f"process's {key.key_id}: point CBCM_WRITER_KEY_FILE at the network's writer key"
        )
    if not recorded and next(custody.marks(recorder, 1, batch=1), None) is not None:
        # marks without the record of their key: someone removed it, perhaps to have
        # earlier positions pass for a store written before marks existed
        raise WriterKeyError(
            "this store holds writer marks but no record of the key that made them (the "
            "custody record was removed): restore it from a backup; nothing is written"
        )
    if not recorded and STORE_NONCE in rows:
        raise WriterKeyError(
            "this store was created with writer marks but holds no record of the key that "
            "makes them (the custody record was removed): restore it from a backup; nothing "
            "is written"
        )
    from services.event_store.store_id import store_id_of  # noqa: PLC0415 (it imports us)

    recorder.writer = key
    recorder.writer_start = None if mine is None else mine.start
    recorder.writer_file = Path(path)
    recorder.store = store_id_of(recorder)
    recorder.keys_dir = ledger_dir(env)
    recorder.retired_writers = custody.retired_keys(Path(path))
    if recorder.keys_dir is not None and recorder.store is not None:
        from services.event_store.writer_keys import catch_up  # noqa: PLC0415

        catch_up(recorder.keys_dir, recorder.store, key, recorder.retired_writers)
    from services.event_store.start_seal import keep_start  # noqa: PLC0415

    keep_start(recorder)  # a record upgraded before seals: its start kept beside the keys
    recorder.writer_problem = writer_problem(recorder)
    if recorder.writer_problem is not None:
        structlog.get_logger().error("audit.custody_untrusted", detail=recorder.writer_problem)
    from services.event_store.high_water import behind_high_water  # noqa: PLC0415

    behind = behind_high_water(recorder)
    if behind is not None:  # named, not refused: a restore from a backup is legitimate
        structlog.get_logger().error(
            "audit.store_behind_high_water", position=behind.position, detail=behind.detail
        )


LATEST_WRITER = (
    "SELECT position || ':' || name FROM {} WHERE name LIKE 'writer:%' "
    "ORDER BY position DESC, name DESC LIMIT 1"
)
"""The last writer key's record as ``<start>:writer:<key id>``, read by every commit."""

LATEST_LINK_PG = (
    "SELECT position, link, (SELECT position || ':' || name FROM {custody} WHERE name LIKE "
    "'writer:%' ORDER BY position DESC, name DESC LIMIT 1) AS latest FROM {chain} "
    "ORDER BY position DESC LIMIT 1"
)
"""The same, with the last link, on PostgreSQL (names filled in by ``psycopg.sql``)."""


def retired_message(key: WriterKey, latest: custody.WriterRecord, path: Path | None) -> str:
    """Why a process holding ``key`` may not write: the network rotated to another key."""
    staged = None if path is None else custody.staged_key_path(path)
    hint = (
        f" (the rotation left it staged in {staged}: move it into place)"
        if staged is not None and staged.exists()
        else ""
    )
    return (
        f"writer key {key.key_id} was retired: the network rotated to writer key "
        f"{latest.key_id} at position {latest.start}, and a retired key marks nothing "
        f"after its rotation; point CBCM_WRITER_KEY_FILE at the current key{hint}"
    )


def writer_problem(recorder: Any) -> str | None:
    """Why ``recorder`` may not write (its writer key's custody record is missing or cannot
    be trusted); None: it may."""
    key: WriterKey | None = recorder.writer
    if key is None:
        return None
    if WRITER_PREFIX + key.key_id not in custody.custody_rows(recorder):
        return None if head(recorder) is None else custody.NOT_STARTED
    records = custody.writer_records(recorder)
    mine = next(r for r in records if r.key_id == key.key_id)
    if records[-1].start > mine.start:  # rotated away from this key (ADR 26)
        return retired_message(key, records[-1], getattr(recorder, "writer_file", None))
    from services.event_store.start_seal import start_seal_problem  # noqa: PLC0415
    from services.event_store.store_id import store_id_of  # noqa: PLC0415 (it imports us)

    return custody.start_problem(recorder, key, store_id_of(recorder)) or start_seal_problem(
        recorder
    )


def start_marks(recorder: Any) -> int:
    """Record, once, that the writer key marks every commit after the chain's head of a
    store written before marks existed (``cbcm audit start-marks``); the position marks
    start from."""
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        raise WriterKeyError("this event store keeps no chain: there is nothing to mark")
    key = recorder.writer
    assert key is not None
    if recorder.writer_problem != custody.NOT_STARTED:
        raise WriterKeyError(
            recorder.writer_problem
            or f"writer marks are already started on this store (writer key {key.key_id})"
        )
    from services.event_store.store_id import store_id_of  # noqa: PLC0415 (it imports us)

    store = store_id_of(recorder)
    assert store is not None  # a store with no event is started by its first commit
    recorder.record_writer_start(key, store)
    recorder.writer_problem = writer_problem(recorder)
    started = custody.writer_started(recorder, key)
    assert started is not None
    return started


def _refuse_untrusted(recorder: Any) -> None:
    """Refuse a write while the writer key's custody record is missing or not trusted. Checked
    before the insert: the library's PostgreSQL recorder commits what was inserted before an
    exception raised in its transaction, and raises it after."""
    problem = recorder.writer_problem
    if problem is not None:
        raise WriterKeyError(problem)


def _with_data_keys(
    keys: DataKeys | None,
    insert: Callable[..., Sequence[int] | None],
    stored_events: Sequence[StoredEvent],
    **kwargs: Any,
) -> Sequence[int] | None:
    """Run the recorder's insert; tell the data keys whether their part was committed."""
    if keys is None:
        return insert(stored_events, **kwargs)
    try:
        positions = insert(stored_events, **kwargs)
    except BaseException as e:
        stale = keys.discarded()
        if stale and not isinstance(e, DataKeyErased):
            # PostgreSQL: the database aborted the transaction on our behalf; say why.
            raise DataKeyErased(f"{stale} data key(s) erased since they were read") from e
        raise
    keys.committed()
    return positions


def chain_table(events_table: str) -> str:
    return f"{events_table}_chain"


# --------------------------------------------------------------------------------- SQLite


class _MarkedWrites:
    """What both chained recorders add to the library's ``insert_events``: refusing to write
    while the custody record is untrusted, new data keys and erasures in the events'
    transaction, and learning the store's id from the commit that made it. Listed before the
    library's recorder class, so ``super().insert_events`` is the library's."""

    data_keys: DataKeys | None = None
    """Set by the application: new data keys and erasures go in with the events."""

    writer: WriterKey | None = None
    """Set by the application (``attach_writer``): every commit is marked with it."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        _refuse_untrusted(self)  # before anything is written (see _refuse_untrusted)
        self._new_store = None
        library_insert = super().insert_events  # type: ignore[misc]
        self._retired_now = False
        try:
            positions: Sequence[int] | None = _with_data_keys(
                self.data_keys, library_insert, stored_events, **kwargs
            )
        except Exception as e:
            if self._retired_now and not isinstance(e, WriterKeyError):
                raise WriterKeyError(self.writer_problem or "writer key retired") from e
            raise
        if self._new_store is not None:  # this commit made the store: its id is known
            self.store, self._new_store = self._new_store, None
        return positions

    writer_problem: str | None = None
    """Why this process may not write (``writer_problem``); None: it may."""
    keys_dir: Path | None = None
    """The directory of the writer key, where the erasure ledger and the high-water mark
    are kept (ADR 23)."""

    store: str | None = None
    """The store's id, which each writer mark names (None: not known yet)."""

    writer_start: int | None = None
    """Where the custody record of ``writer`` starts (None: not recorded yet). A commit
    finding another key's record after it refuses to write: the key was rotated meanwhile."""

    retired_writers: Mapping[str, WriterKey] = {}
    """The retired writer keys kept beside the key (ADR 26): they check older marks."""

    rotating: WriterKey | None = None
    """Set only for the commit of a writer key rotation (ADR 26): that commit is marked
    with the new key, and records the new key's start at its position."""

    _new_store: str | None = None
    _retired_now = False
    writer_file: Path | None = None

    def _rotation_rows(
        self, rows: list[tuple[int, int, bytes]], store: str | None
    ) -> tuple[WriterKey | None, list[tuple[str, str, int]]]:
        """The key that marks this commit, and the custody row a rotation adds."""
        new = self.rotating
        if new is None or store is None:
            return self.writer, []
        start = rows[0][0]
        return new, [(WRITER_PREFIX + new.key_id, new.start_value(start, store), start)]

    def _retired_since(self, latest: str | None) -> str | None:
        """Why this commit may not be marked with this process's key (None: it may).
        ``latest``: the last writer record, ``<start>:<name>``, as the commit reads it."""
        # A rotation's commit too: the key it retires must be the one the log names last
        # (two ceremonies at once: the second would retire a key already retired)
        if self.writer is None or latest is None:
            return None
        start, _, name = latest.partition(":")
        if name == WRITER_PREFIX + self.writer.key_id:
            return None
        record = custody.WriterRecord(int(start), name.removeprefix(WRITER_PREFIX), "")
        self.writer_problem = retired_message(self.writer, record, None)
        self._retired_now = True
        structlog.get_logger().error("audit.writer_key_retired", detail=self.writer_problem)
        return self.writer_problem


_uuid_of = functools.lru_cache(maxsize=1 << 16)(UUID)
"""``UUID(text)``, cached: a batch of the log holds each aggregate's id many times."""


class ChainedSQLiteRecorder(_MarkedWrites, SQLiteApplicationRecorder):
    """SQLite application recorder that links every event it inserts into the chain."""

    def convert_originator_id(self, originator_id: str) -> UUID | str:
        """A stored id as the library makes it, from a cache: a log read in batches (the
        relay, the audit) meets each aggregate's id once per event, and making a ``UUID``
        of its text is about a tenth of the relay's translating (UUIDs are immutable)."""
        if self.datastore.originator_id_type == "uuid":
            return _uuid_of(originator_id)
        return originator_id

    def construct_create_table_statements(self) -> list[str]:
        events = self.events_table_name
        chain = chain_table(events)
        statements = super().construct_create_table_statements()
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {chain} ("
            "position INTEGER PRIMARY KEY, previous_position INTEGER NOT NULL, "
            "link BLOB NOT NULL)"
        )
        for table in (events, chain):
            for action in ("UPDATE", "DELETE"):
                statements.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                    f"BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
                )
        # INSERT OR REPLACE deletes the row it conflicts with without firing DELETE triggers
        # (recursive_triggers is off by default): refuse an insert onto a taken key.
        refuse_taken = (
            "CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
            "WHEN EXISTS (SELECT 1 FROM {table} WHERE {taken}) "
            "BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        )
        for table, taken in (
            (
                events,
                "rowid = NEW.rowid OR (originator_id = NEW.originator_id "
                "AND originator_version = NEW.originator_version)",
            ),
            (chain, "position = NEW.position"),
        ):
            statements.append(refuse_taken.format(table=table, taken=taken, refusal=APPEND_ONLY))
        statements.extend(key_tables.sqlite_statements(events))
        statements.extend(custody.sqlite_statements(events, APPEND_ONLY))
        statements.extend(tiles.sqlite_statements(events))  # the Merkle tree (issue #15)
        return statements

    def record_writer_start(self, key: WriterKey, store: str) -> None:
        """Record that ``key`` marks every commit after the chain's head (once), sealed."""
        events = self.events_table_name
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT coalesce(max(position), 0) FROM {chain_table(events)}")  # noqa: S608
            top = int(c.fetchone()[0])
            c.execute(
                f"INSERT INTO {custody.custody_table(events)} VALUES (?, ?, ?)",  # noqa: S608
                (WRITER_PREFIX + key.key_id, key.start_value(top + 1, store), top + 1),
            )

    def _create_table(self, c: SQLiteCursor) -> None:
        super()._create_table(c)
        self._link_unchained(c)

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        assert positions is not None
        if self.data_keys is not None:
            self.data_keys.write_pending(c, _now())
        self._link(c, list(zip(positions, stored_events, strict=True)))
        return positions

    def _last_link(self, c: SQLiteCursor) -> tuple[int, bytes]:
        table = self.events_table_name
        c.execute(
            f"SELECT position, link, ({LATEST_WRITER.format(custody.custody_table(table))}) "  # noqa: S608
            f"FROM {chain_table(table)} ORDER BY position DESC LIMIT 1"
        )
        row = c.fetchone()
        if row is not None:
            retired = self._retired_since(row[2])
            if retired is not None:
                raise WriterKeyError(retired)  # rolls the commit back
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def _link(
        self, c: SQLiteCursor, events: list[tuple[int, StoredEvent]], *, sign: bool = True
    ) -> None:
        previous_position, previous = self._last_link(c)
        rows = chain_rows(previous_position, previous, events)
        table = self.events_table_name
        c.executemany(f"INSERT INTO {chain_table(table)} VALUES (?, ?, ?)", rows)  # noqa: S608
        if not sign or not rows:
            return
        custody_rows: list[tuple[str, str, int]] = []
        store = self.store
        if previous_position == 0:
            # a new store's first commit (not a chain someone emptied): draw its id's nonce
            c.execute(
                f"SELECT (SELECT 1 FROM {table} WHERE rowid < ?), "  # noqa: S608
                f"(SELECT 1 FROM {custody.custody_table(table)} WHERE name = ?), "
                f"(SELECT 1 FROM {custody.custody_table(table)} WHERE name LIKE ?)",
                (rows[0][0], STORE_NONCE, WRITER_PREFIX + "%"),
            )
            older, nonce, started = c.fetchone()
            if older is None and nonce is None:
                custody_rows, store = _new_store_rows(self.writer, events[0], started is not None)
                self._new_store = store  # known once the commit is
        if self.writer is not None:
            if store is None:  # the store was empty when this process started
                c.execute(
                    "SELECT originator_id, originator_version, topic, state "  # noqa: S608
                    f"FROM {table} ORDER BY rowid LIMIT 1"
                )
                first = c.fetchone()
                c.execute(
                    f"SELECT value FROM {custody.custody_table(table)} WHERE name = ?",  # noqa: S608
                    (STORE_NONCE,),
                )
                found = c.fetchone()
                store = self.store = _store_of_first(
                    None if first is None else tuple(first), None if found is None else found[0]
                )
            marker, rotation = self._rotation_rows(rows, store)
            custody_rows += rotation
            c.execute(
                f"INSERT INTO {custody.writer_table(table)} VALUES (?, ?, ?)",  # noqa: S608
                _mark(marker, rows, store),
            )
        for row in custody_rows:
            c.execute(
                f"INSERT INTO {custody.custody_table(table)} VALUES (?, ?, ?)",  # noqa: S608
                row,
            )

    def _link_unchained(self, c: SQLiteCursor) -> None:
        """A store written before the chain existed: link its events, once, in order."""
        chain = chain_table(self.events_table_name)
        c.execute(f"SELECT COUNT(*) FROM {chain}")  # noqa: S608
        if c.fetchone()[0]:
            return
        c.execute(
            "SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {self.events_table_name} ORDER BY rowid"
        )
        events = [
            (int(r[0]), StoredEvent(UUID(r[1]), int(r[2]), str(r[3]), bytes(r[4])))
            for r in c.fetchall()
        ]
        if events:
            _relinked(len(events))
            self._link(c, events, sign=False)  # not written by this process: never marked


# --------------------------------------------------------------------------------- PostgreSQL


class _TwoRoundTrips(PostgresApplicationRecorder):
    """The library's insert, in one transaction as there, in two round trips instead of five.

    The library opens its transaction with ``conn.transaction()`` inside ``conn.pipeline()``,
    and psycopg then syncs the pipeline at each of the transaction's ends, and once more as
    the pipeline closes: with the sync after the events' INSERT, five waits on the server per
    commit. Here the transaction is ``BEGIN`` and ``COMMIT`` sent in the pipeline like its
    other statements: one sync after the INSERT (the positions, the chain's last link), one
    as the pipeline closes (the links, the writer mark, ``COMMIT``).

    Unlike the library's, an exception raised between the two rolls the transaction back
    (the library commits what its statements did, then raises: ``_refuse_untrusted``, and the
    ``RAISE EXCEPTION`` statements below, which make the database abort, stay).
    """

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return None
        failed: BaseException | None = None
        positions: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            assert conn.autocommit  # BEGIN and COMMIT are ours
            try:
                with conn.pipeline() as pipeline:
                    curs = conn.cursor()
                    try:
                        curs.execute(_BEGIN)
                        self._insert_events(curs, stored_events, **kwargs)  # the library's hook
                        self._insert_stored_events(curs, stored_events, **kwargs)
                        # now, so a unique violation is raised as an IntegrityError here
                        pipeline.sync()
                        positions = self._fetch_ids_after_insert_events(
                            curs, stored_events, **kwargs
                        )
                        curs.execute(_COMMIT)
                    except BaseException as e:  # raised once the pipeline is closed
                        failed = e
            except BaseException as e:  # the last sync: the second part failed in the database
                failed = failed or e
            if failed is None and conn.info.transaction_status != TransactionStatus.IDLE:
                failed = ProgrammingError("the events' transaction did not end")
            if failed is not None:
                _roll_back(conn)
                raise failed
        return positions


_BEGIN = SQL("BEGIN")
_COMMIT = SQL("COMMIT")


def _roll_back(conn: Any) -> None:
    """End a failed insert's transaction (aborted by the database, or open still)."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except Exception:
        conn.close()  # the pool replaces it: a connection left in a transaction is never reused


class ChainedPostgresRecorder(_MarkedWrites, _TwoRoundTrips):
    """PostgreSQL application recorder that links every event it inserts into the chain,
    while holding the recorder's exclusive table lock (so links follow commit order)."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            raise ValueError("the hash chain needs POSTGRES_ENABLE_DB_FUNCTIONS off")
        reads.install(datastore)  # read transactions keep the prepared statements
        schema = Identifier(datastore.schema)
        self._pipelined = threading.local()  # the last link's cursor, per inserting thread
        self._latest_link_statement = SQL(LATEST_LINK_PG).format(
            custody=self._table(custody.custody_table), chain=self._chain()
        )
        self._insert_links_statement = SQL(
            "INSERT INTO {} (position, previous_position, link) VALUES (%s, %s, %s)"
        ).format(self._chain())
        self._insert_mark_statement = SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(
            self._table(custody.writer_table)
        )
        # Inserts are serialised (links follow commit order, as notification ids do) by a
        # transaction-scoped advisory lock rather than the library's EXCLUSIVE table lock:
        # taking that lock needs UPDATE or DELETE on the table, which the application's
        # role does not have (deploy/postgres grants it INSERT and SELECT only).
        self.lock_table_statements = [
            # The link read after the lock must see the previous holder's commit: a
            # REPEATABLE READ default would take the snapshot before the lock is granted.
            SQL("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            SQL("SET LOCAL lock_timeout = '{}s'").format(SQL(str(datastore.lock_timeout))),
            SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
                Literal(f"cbcm-log:{datastore.schema}.{self.events_table_name}")
            ),
        ]
        chain = Identifier(chain_table(self.events_table_name))
        refuse = Identifier(f"{self.events_table_name}_append_only")
        self.sql_create_statements.extend(
            key_tables.postgres_statements(datastore.schema, self.events_table_name)
        )
        self.sql_create_statements.extend(  # the Merkle tree's tiles (issue #15)
            tiles.postgres_statements(datastore.schema, self.events_table_name)
        )
        self.sql_create_statements.extend(
            custody.postgres_statements(datastore.schema, self.events_table_name)
        )
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (position bigint PRIMARY KEY, "
                    "previous_position bigint NOT NULL, link bytea NOT NULL)"
                ).format(schema, chain),
                SQL(
                    "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION '{}'; END $$"
                ).format(schema, refuse, SQL(APPEND_ONLY)),
            ]
        )
        for name in (
            self.events_table_name,
            chain_table(self.events_table_name),
            custody.writer_table(self.events_table_name),
            custody.custody_table(self.events_table_name),
        ):
            for kind, when, each in (
                ("row", "UPDATE OR DELETE", "ROW"),
                ("truncate", "TRUNCATE", "STATEMENT"),
            ):
                self.sql_create_statements.append(
                    SQL(
                        "DO $$ BEGIN CREATE TRIGGER {} BEFORE {} ON {}.{} FOR EACH {} "
                        "EXECUTE FUNCTION {}.{}(); EXCEPTION WHEN duplicate_object THEN NULL; "
                        "END $$"
                    ).format(
                        Identifier(f"{name}_no_{kind}"),
                        SQL(when),
                        schema,
                        Identifier(name),
                        SQL(each),
                        schema,
                        refuse,
                    )
                )

    def record_writer_start(self, key: WriterKey, store: str) -> None:
        """Record that ``key`` marks every commit after the chain's head (once), sealed."""
        with self.datastore.transaction(commit=True) as curs:
            for statement in self.lock_table_statements:
                curs.execute(statement)
            curs.execute(
                SQL("SELECT coalesce(max(position), 0) AS top FROM {}").format(self._chain())
            )
            found = curs.fetchone()
            top = 0 if found is None else int(found["top"])
            curs.execute(
                SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(
                    self._table(custody.custody_table)
                ),
                (WRITER_PREFIX + key.key_id, key.start_value(top + 1, store), top + 1),
            )

    def _table(self, name: Callable[[str], str]) -> Composed:
        return SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(name(self.events_table_name))
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # Processes starting together would race on the catalogue (functions, triggers).
        curs.execute(
            SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
                Literal(f"cbcm-ddl:{self.datastore.schema}")
            )
        )
        super()._create_table(curs)

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            for statement in self.lock_table_statements:
                curs.execute(statement)
            self._link_unchained(curs)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_stored_events(curs, stored_events, **kwargs)  # lock, NOTIFY, INSERT
        # The chain's last link, asked for in the pipeline right behind the INSERT (so still
        # under the insert lock): the library's sync after the INSERT brings both answers in
        # one round trip, where reading it in ``_link`` took one more per commit.
        latest = curs.connection.cursor()
        latest.execute(self._latest_link_statement, prepare=True)
        self._pipelined.latest = latest

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        latest = getattr(self._pipelined, "latest", None)
        self._pipelined.latest = None
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        assert positions is not None
        if self.data_keys is not None:
            # Under the insert lock: no erasure can commit between this check and the commit.
            self.data_keys.write_pending(curs, _now())
        self._link(curs, list(zip(positions, stored_events, strict=True)), latest=latest)
        return positions

    def _chain(self) -> Composed:
        return SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(chain_table(self.events_table_name))
        )

    def _link(
        self,
        curs: Cursor[DictRow],
        events: list[tuple[int, StoredEvent]],
        *,
        sign: bool = True,
        latest: Cursor[DictRow] | None = None,
    ) -> None:
        """Link ``events`` after the chain's last link, which ``latest`` has read already in
        this transaction, under the insert lock (None: read it here)."""
        if latest is None:
            latest = curs
            curs.execute(self._latest_link_statement, prepare=True)
        row = latest.fetchone()
        if row is not None and sign:
            retired = self._retired_since(row["latest"])
            if retired is not None:
                # raised by the database: the library commits a transaction whose
                # statements all succeeded even when Python raised inside it
                curs.execute(SQL("DO $$ BEGIN RAISE EXCEPTION {}; END $$").format(Literal(retired)))
        previous_position, previous = (
            (0, GENESIS)
            if row is None
            else (
                int(row["position"]),
                bytes(row["link"]),
            )
        )
        rows = chain_rows(previous_position, previous, events)
        curs.executemany(self._insert_links_statement, rows)
        if not sign or not rows:
            return
        custody_rows: list[tuple[str, str, int]] = []
        store = self.store
        if previous_position == 0:
            # a new store's first commit (not a chain someone emptied): draw its id's nonce
            curs.execute(
                SQL(
                    "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE notification_id < %s) AS older, "
                    "EXISTS (SELECT 1 FROM {} WHERE name = %s) AS nonce, "
                    "EXISTS (SELECT 1 FROM {} WHERE name LIKE %s) AS started"
                ).format(
                    Identifier(self.datastore.schema),
                    Identifier(self.events_table_name),
                    self._table(custody.custody_table),
                    self._table(custody.custody_table),
                ),
                (rows[0][0], STORE_NONCE, WRITER_PREFIX + "%"),
            )
            found = curs.fetchone()
            if found is not None and not found["older"] and not found["nonce"]:
                custody_rows, store = _new_store_rows(
                    self.writer, events[0], bool(found["started"])
                )
                self._new_store = store  # known once the commit is
        if self.writer is not None:
            if store is None:  # the store was empty when this process started
                curs.execute(
                    SQL(
                        "SELECT originator_id, originator_version, topic, state FROM {}.{} "
                        "ORDER BY notification_id LIMIT 1"
                    ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
                )
                first = curs.fetchone()
                curs.execute(
                    SQL("SELECT value FROM {} WHERE name = %s").format(
                        self._table(custody.custody_table)
                    ),
                    (STORE_NONCE,),
                )
                nonce_row = curs.fetchone()
                store = self.store = _store_of_first(
                    None if first is None else tuple(first.values()),
                    None if nonce_row is None else str(nonce_row["value"]),
                )
            marker, rotation = self._rotation_rows(rows, store)
            custody_rows += rotation
            curs.execute(self._insert_mark_statement, _mark(marker, rows, store), prepare=True)
        if custody_rows:
            curs.executemany(
                SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(
                    self._table(custody.custody_table)
                ),
                custody_rows,
            )

    def _link_unchained(self, curs: Cursor[DictRow]) -> None:
        curs.execute(SQL("SELECT COUNT(*) AS n FROM {}").format(self._chain()))
        counted = curs.fetchone()
        if counted is None or counted["n"]:
            return
        curs.execute(
            SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {}.{} ORDER BY notification_id"
            ).format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        )
        events = [
            (
                int(r["notification_id"]),
                StoredEvent(
                    r["originator_id"], int(r["originator_version"]), r["topic"], bytes(r["state"])
                ),
            )
            for r in curs.fetchall()
        ]
        if events:
            _relinked(len(events))
            self._link(curs, events, sign=False)  # not written by this process: never marked


SQLITE_RECORDER_TOPIC = get_topic(ChainedSQLiteRecorder)
POSTGRES_RECORDER_TOPIC = get_topic(ChainedPostgresRecorder)


# --------------------------------------------------------------------------------- reading


_LAST_POSITION = (1 << 63) - 1
"""The largest position SQLite (and PostgreSQL's bigint) can hold."""


def read_log(recorder: Any, start: int = 1, batch: int = 2000) -> Iterator[LogRow]:
    """Every position of the log from ``start``, events and chain rows side by side, in
    position order; a position held by only one of the two is yielded with the other empty."""
    events = recorder.events_table_name
    chain = chain_table(events)
    position = start
    while True:
        if isinstance(recorder, SQLiteApplicationRecorder):
            rows = _sqlite_rows(recorder, events, chain, position, batch)
        else:
            rows = _postgres_rows(recorder, events, chain, position, batch)
        # a DBA's chain table whose positions are not integers returns the same rows again
        # (a text compares above any number): only what lies ahead counts, and a position at
        # the very end of SQLite's integers ends the log
        rows = [row for row in rows if row.position >= position]
        if not rows:
            return
        yield from rows
        if rows[-1].position >= _LAST_POSITION:
            return
        position = rows[-1].position + 1


def _sqlite_rows(recorder: Any, events: str, chain: str, start: int, limit: int) -> list[LogRow]:
    # every value as its bytes with its type: a DBA may store any type in any SQLite column
    # (a text that is not UTF-8 included), and the careful path must name that, not stop
    statement = (
        "SELECT p.position, e.rowid IS NOT NULL, typeof(e.originator_id), "  # noqa: S608
        "CAST(e.originator_id AS BLOB), typeof(e.originator_version), "
        "CASE WHEN typeof(e.originator_version) = 'integer' THEN e.originator_version END, "
        "typeof(e.topic), CAST(e.topic AS BLOB), typeof(e.state), CAST(e.state AS BLOB), "
        "c.position IS NOT NULL, typeof(c.previous_position), "
        "CASE WHEN typeof(c.previous_position) = 'integer' THEN c.previous_position END, "
        "typeof(c.link), CAST(c.link AS BLOB) FROM ("
        f"SELECT rowid AS position FROM {events} WHERE rowid >= ? "
        f"UNION SELECT position FROM {chain} WHERE position >= ? "
        "ORDER BY position LIMIT ?) p "
        f"LEFT JOIN {events} e ON e.rowid = p.position "
        f"LEFT JOIN {chain} c ON c.position = p.position ORDER BY p.position"
    )
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(statement, (start, start, limit))
        found = c.fetchall()
    return [_sqlite_log_row(tuple(r)) for r in found]


_STORED_TYPES = {"originator_id": "text", "originator_version": "integer", "topic": "text"}


def _sqlite_log_row(r: tuple[Any, ...]) -> LogRow:
    """One row of ``_sqlite_rows`` as a ``LogRow``; a value not of the library's type makes
    it ``unreadable`` (and its link unrecomputable), with what is wrong."""
    position = int(r[0])
    (has_event, id_type, id_raw, version_type, version, topic_type, topic_raw) = r[1:8]
    (state_type, state, has_link, previous_type, previous, link_type, link) = r[8:15]
    wrong = []
    originator_id: UUID | None = None
    topic: str | None = None
    if has_event:
        for column, kind in (
            ("originator_id", id_type),
            ("originator_version", version_type),
            ("topic", topic_type),
        ):
            if kind != _STORED_TYPES[column]:
                wrong.append(f"{column} stored as {kind}")
        if state_type != "blob":
            wrong.append(f"state stored as {state_type}")
        originator_id = _stored_id_bytes(id_raw) if id_type == "text" else None
        if originator_id is None:
            originator_id = UUID(int=0)  # an event is there: its id is what is wrong
            if id_type == "text":
                wrong.append("originator_id is not an id")
        try:
            topic = None if topic_raw is None else bytes(topic_raw).decode()
        except UnicodeDecodeError:
            wrong.append("topic not in UTF-8")
            topic = ""
    chain = None
    if has_link:
        if previous_type != "integer":
            wrong.append(f"previous_position stored as {previous_type}")
        if link_type != "blob":
            wrong.append(f"link stored as {link_type}")
        chain = ChainRow(position, -1 if previous is None else int(previous), bytes(link or b""))
    return LogRow(
        position=position,
        originator_id=originator_id,
        version=None if version is None else int(version),
        topic=topic,
        state=None if state is None else bytes(state),
        chain=chain,
        unreadable=", ".join(wrong),
    )


def _stored_id_bytes(raw: bytes | None) -> UUID | None:
    """``_stored_id`` of an id read as its bytes; None when it is no id at all."""
    if raw is None:
        return None
    try:
        return _stored_id(bytes(raw).decode("ascii"))
    except ValueError:  # not ASCII (UnicodeDecodeError), or not a UUID
        return None


def _stored_id(text: str) -> UUID:
    """The id as stored. The library finds an aggregate's events by the 32 lowercase hex
    characters; UUID() also parses other spellings, which would hide an event from its
    aggregate while its link still recomputes: such an id is made not to recompute."""
    parsed = UUID(text)
    return parsed if parsed.hex == text else UUID(int=parsed.int ^ 1)


def _postgres_rows(recorder: Any, events: str, chain: str, start: int, limit: int) -> list[LogRow]:
    schema = Identifier(recorder.datastore.schema)
    statement = SQL(
        "SELECT p.position, e.originator_id, e.originator_version, e.topic, e.state, "
        "c.previous_position, c.link FROM ("
        "SELECT notification_id AS position FROM {s}.{e} WHERE notification_id >= %s "
        "UNION SELECT position FROM {s}.{c} WHERE position >= %s "
        "ORDER BY position LIMIT %s) p "
        "LEFT JOIN {s}.{e} e ON e.notification_id = p.position "
        "LEFT JOIN {s}.{c} c ON c.position = p.position ORDER BY p.position"
    ).format(s=schema, e=Identifier(events), c=Identifier(chain))
    with reads.one_statement(recorder.datastore) as curs:
        curs.execute(statement, (start, start, limit))
        found = curs.fetchall()
    return [
        LogRow(
            position=int(r["position"]),
            originator_id=r["originator_id"],
            version=None if r["originator_version"] is None else int(r["originator_version"]),
            topic=r["topic"],
            state=None if r["state"] is None else bytes(r["state"]),
            chain=None
            if r["previous_position"] is None
            else ChainRow(int(r["position"]), int(r["previous_position"]), bytes(r["link"])),
        )
        for r in found
    ]


def head(recorder: Any) -> ChainRow | None:
    """The last link of the chain (what a checkpoint signs), or None for an empty store."""
    chain = chain_table(recorder.events_table_name)
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(
                # any type a DBA stored, as bytes (the careful path names it)
                f"SELECT position, CAST(previous_position AS INTEGER), CAST(link AS BLOB) "  # noqa: S608
                f"FROM {chain} ORDER BY position DESC LIMIT 1"
            )
            row = c.fetchone()
        return None if row is None else ChainRow(int(row[0]), int(row[1]), bytes(row[2]))
    statement = SQL(
        "SELECT position, previous_position, link FROM {}.{} ORDER BY position DESC LIMIT 1"
    ).format(Identifier(recorder.datastore.schema), Identifier(chain))
    with reads.one_statement(recorder.datastore) as curs:
        curs.execute(statement)
        found = curs.fetchone()
    if found is None:
        return None
    return ChainRow(int(found["position"]), int(found["previous_position"]), bytes(found["link"]))


def link_at(recorder: Any, position: int) -> ChainRow | None:
    """The chain row at ``position`` (evidence that an event is in the chain)."""
    for row in read_log(recorder, position, batch=1):
        return row.chain if row.position == position else None
    return None


def link_before(recorder: Any, position: int) -> ChainRow | None:
    """The last chain row before ``position`` (where a verification from it starts)."""
    chain = chain_table(recorder.events_table_name)
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT position, CAST(previous_position AS INTEGER), CAST(link AS BLOB) "  # noqa: S608
                f"FROM {chain} WHERE position < ? ORDER BY position DESC LIMIT 1",
                (position,),
            )
            row = c.fetchone()
        return None if row is None else ChainRow(int(row[0]), int(row[1]), bytes(row[2]))
    statement = SQL(
        "SELECT position, previous_position, link FROM {}.{} WHERE position < %s "
        "ORDER BY position DESC LIMIT 1"
    ).format(Identifier(recorder.datastore.schema), Identifier(chain))
    with reads.one_statement(recorder.datastore) as curs:
        curs.execute(statement, (position,))
        found = curs.fetchone()
    if found is None:
        return None
    return ChainRow(int(found["position"]), int(found["previous_position"]), bytes(found["link"]))


# --------------------------------------------------------------------------------- batches

BATCH_ROWS = 5000
"""Positions per range of ``log_batches``."""


LogTuple = tuple[int, bytes, int, bytes, bytes, int, bytes]
"""A position as ``log_batches`` reads it: position, originator id (16 bytes), version,
topic (UTF-8), state, previous position, link."""


class LogBatch(NamedTuple):
    """The positions ``first <= p < end`` of the log, for the fast path of ``verify``.

    ``rows`` are plain tuples ``(position, originator id as its 16 bytes, version, topic as
    UTF-8 bytes, state, previous position, link)``, in position order, of the positions where
    both an event of the expected column types and its chain row are stored. ``complete`` is
    false when the range holds anything else: an event without a link, a link without an event,
    a value of another type (SQLite), an id spelled otherwise than the library writes it; then
    the rows do not tell the whole range and ``read_log`` must be asked.
    """

    first: int
    end: int
    rows: list[LogTuple]
    complete: bool


def log_batches(
    recorder: Any, start: int = 1, stop: int | None = None, size: int = BATCH_ROWS
) -> Iterator[LogBatch] | None:
    """The log from ``start`` (to ``stop``) in ranges of ``size`` positions, each read in one
    snapshot with two statements: the rows, and what else the range holds. Ranges go on to
    the head as it is when they reach it (a log that grew meanwhile is read on).

    None when this store cannot be read so (a SQLite file not in UTF-8, a PostgreSQL
    connection not in UTF-8): then only ``read_log`` reads it."""
    read = batch_reader(recorder)
    if read is None:
        return None
    return (read(recorder, first, end) for first, end in log_ranges(recorder, start, stop, size))


def batch_reader(recorder: Any) -> Callable[[Any, int, int], LogBatch] | None:
    """How ``log_batches`` reads one range ``first <= p < end`` of this store (None: it
    cannot, see there)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return _sqlite_batch if sqlite_tables_as_created(recorder) else None
    with recorder.datastore.transaction(commit=False) as curs:
        if curs.connection.info.encoding != "utf-8":
            return None
    return _postgres_batch


def sqlite_tables_as_created(recorder: Any) -> bool:
    """The SQLite store is in UTF-8 and its events and chain are tables as the library and
    ``cbcm db init`` create them: not views (whose values may depend on the connection that
    reads them), the chain's position its rowid (an integer; a table rebuilt with positions
    of another type compares them otherwise). Only then do the fast paths read it; the
    careful path reads anything."""
    events = recorder.events_table_name
    chain = chain_table(events)
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA encoding")
        if str(c.fetchone()[0]).upper() != "UTF-8":
            return False
        c.execute("SELECT name, type FROM sqlite_master WHERE name IN (?, ?)", (events, chain))
        kinds = {str(r[0]): str(r[1]) for r in c.fetchall()}
        if kinds != {events: "table", chain: "table"}:
            return False
        c.execute(f"SELECT name, type, pk FROM pragma_table_info('{chain}')")  # noqa: S608
        columns = {str(r[0]): (str(r[1]).upper(), int(r[2])) for r in c.fetchall()}
    keys = [name for name, (_, pk) in columns.items() if pk]
    return columns.get("position") == ("INTEGER", 1) and keys == ["position"]


def log_ranges(
    recorder: Any, start: int = 1, stop: int | None = None, size: int = BATCH_ROWS
) -> Iterator[tuple[int, int]]:
    """The ranges ``(first, end)`` of ``log_batches``: ``size`` positions each from ``start``,
    on to the head as it is when they reach it, or to ``stop``."""
    first = start
    while True:
        top = _top(recorder)
        if stop is not None:
            top = min(top, stop)
        if first > top:
            return
        while first <= top:
            # over a stretch that holds nothing (a sequence's gap, or a DBA's far position),
            # in one step rather than range by empty range
            first = _next_position(recorder, first, top)
            if first > top:
                break
            end = min(first + size, top + 1)
            yield first, end
            first = end


def _next_position(recorder: Any, first: int, top: int) -> int:
    """The lowest position from ``first`` holding an event or a link (``top + 1``: none)."""
    found = _one_value(
        recorder,
        "SELECT min(p) FROM (SELECT min(rowid) AS p FROM {e} WHERE rowid >= :first "
        "UNION ALL SELECT min(position) FROM {c} WHERE position >= :first)",
        "SELECT least((SELECT min(notification_id) FROM {s}.{e} WHERE notification_id >= "
        "%(first)s), (SELECT min(position) FROM {s}.{c} WHERE position >= %(first)s)) AS value",
        first=first,
    )
    return top + 1 if found is None else int(found)


def _top(recorder: Any) -> int:
    """The highest position holding an event or a link (0: none)."""
    found = _one_value(
        recorder,
        "SELECT max(coalesce((SELECT max(rowid) FROM {e}), 0), "
        "coalesce((SELECT max(position) FROM {c}), 0))",
        "SELECT greatest(coalesce((SELECT max(notification_id) FROM {s}.{e}), 0), "
        "coalesce((SELECT max(position) FROM {s}.{c}), 0)) AS value",
    )
    return 0 if found is None else int(found)


def _one_value(recorder: Any, sqlite: str, postgres: str, **params: int) -> Any:
    """The one value a query over the store's events ``{e}`` and chain ``{c}`` answers, in
    its SQLite or its PostgreSQL spelling (``{s}``: the schema; the value named ``value``),
    with named ``params``."""
    events = recorder.events_table_name
    chain = chain_table(events)
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(sqlite.format(e=events, c=chain), params)
            return c.fetchone()[0]
    schema = Identifier(recorder.datastore.schema)
    statement = SQL(postgres).format(s=schema, e=Identifier(events), c=Identifier(chain))
    with reads.one_statement(recorder.datastore) as curs:
        curs.execute(statement, params)
        row = curs.fetchone()
    return None if row is None else row["value"]


_ID_TEXT_CHARS = 32


def _id_bytes(text: bytes, known: dict[bytes, bytes]) -> bytes:
    """The 16 bytes of an id stored as text (read as its bytes), when it is spelled as the
    library writes it (32 lowercase hex characters; see ``_stored_id``); otherwise bytes
    that recompute no link, so the range goes to ``read_log``, which names the damage."""
    try:
        raw = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raw = b""
    if len(text) != _ID_TEXT_CHARS or raw.hex().encode() != text:
        raw = b""
    known[text] = raw
    return raw


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _sqlite_batch(recorder: Any, first: int, end: int) -> LogBatch:
    events = recorder.events_table_name
    chain = chain_table(events)
    rows_statement = (
        "SELECT e.rowid, CAST(e.originator_id AS BLOB), e.originator_version, "  # noqa: S608
        "CAST(e.topic AS BLOB), "
        f"e.state, c.previous_position, c.link FROM {events} e "
        f"JOIN {chain} c ON c.position = e.rowid "
        "WHERE e.rowid >= ? AND e.rowid <= ? AND typeof(e.originator_id) = 'text' "
        "AND typeof(e.originator_version) = 'integer' AND typeof(e.topic) = 'text' "
        "AND typeof(e.state) = 'blob' AND typeof(c.previous_position) = 'integer' "
        "AND typeof(c.link) = 'blob' ORDER BY e.rowid"
    )
    counts_statement = (
        f"SELECT (SELECT count(*) FROM {events} WHERE rowid >= ? AND rowid <= ?), "  # noqa: S608
        f"(SELECT count(*) FROM {chain} WHERE position >= ? AND position <= ?)"
    )
    with recorder.datastore.transaction(commit=False) as c:
        cursor = c.sqlite_cursor
        cursor.row_factory = None  # plain tuples, not the library's sqlite3.Row
        last = end - 1  # inclusive: the last position SQLite holds is 2**63 - 1
        cursor.execute(rows_statement, (first, last))
        found = cursor.fetchall()
        cursor.execute(counts_statement, (first, last, first, last))
        stored_events, links = cursor.fetchone()
    known: dict[bytes, bytes] = {}
    get = known.get
    rows = [(p, get(o) or _id_bytes(o, known), v, t, s, q, k) for p, o, v, t, s, q, k in found]
    complete = (
        stored_events == links == len(rows)
        and all(known.values())
        # the application reads a topic as text: one that is not UTF-8 it cannot read
        and all(map(_utf8, {r[3] for r in rows}))
    )
    return LogBatch(first, end, rows, complete)


_BYTES_LOADER = adapters.get_loader(postgres.types["bytea"].oid, Format.BINARY)
"""Loads a binary value as its bytes: a uuid's 16 bytes, a text's bytes in the connection's
encoding (UTF-8, checked by ``log_batches``), with no parsing."""


def _postgres_batch(recorder: Any, first: int, end: int) -> LogBatch:
    schema = Identifier(recorder.datastore.schema)
    events = Identifier(recorder.events_table_name)
    chain = Identifier(chain_table(recorder.events_table_name))
    rows_statement = SQL(
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
        "c.previous_position, c.link FROM {s}.{e} e JOIN {s}.{c} c "
        "ON c.position = e.notification_id "
        "WHERE e.notification_id >= %s AND e.notification_id < %s "
        "AND c.position >= %s AND c.position < %s "
        "AND e.topic IS NOT NULL AND e.state IS NOT NULL ORDER BY e.notification_id"
    ).format(s=schema, e=events, c=chain)
    counts_statement = SQL(
        "SELECT (SELECT count(*) FROM {s}.{e} WHERE notification_id >= %s "
        "AND notification_id < %s), "
        "(SELECT count(*) FROM {s}.{c} WHERE position >= %s AND position < %s)"
    ).format(s=schema, e=events, c=chain)
    with recorder.datastore.transaction(commit=False) as curs:
        # one snapshot for both statements (READ COMMITTED would take one each)
        curs.execute(SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        cursor = curs.connection.cursor(row_factory=tuple_row, binary=True)
        for name in ("uuid", "text"):
            cursor.adapters.register_loader(name, _BYTES_LOADER)
        cursor.execute(rows_statement, (first, end, first, end))
        rows = cursor.fetchall()
        cursor.execute(counts_statement, (first, end, first, end))
        counted = cursor.fetchone()
    assert counted is not None
    complete = counted[0] == counted[1] == len(rows)
    return LogBatch(first, end, rows, complete)
