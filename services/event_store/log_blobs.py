"""The log read a range at a time as a few buffers, for the fast path of ``cbcm audit verify``
(issue #15, ADR 33).

``chain.log_batches`` hands verify a Python tuple per event: about 1.2 µs an event to make,
more than the hashing, and SQL functions putting the bytes together cost as much. Here the C
module ``services.event_store._log_reader`` reads a range with SQLite's C API and returns,
per event in position order, ``preimages``: what its link hashes (``chain.link_hash``: the
stored link before it, its position, originator id and version as big-endian integers, its
topic's length, its topic in UTF-8 and its state), one after the other, with ``bounds``;
and ``links``: its stored link.

It does so only when the range is *plain*: every position of it holds an event of the
library's column types and id spelling (with a topic in UTF-8) and a link to the position
just before it, as the tuple path requires (``chain._sqlite_batch``). Verify then hashes the
range with one call (``services.audit.hashing.sha256_segments``); any other range, and a plain
one whose hashes do not match, it reads as before (``log_batches``, then ``read_log``). So a
range read here is never *trusted* more than one read as tuples: the buffers only spare
Python objects, and a wrong buffer can only fail the comparison.

The C module reads the file on a read-only connection of its own, through the same SQLite
library as Python's ``sqlite3`` module: two copies of SQLite in one process do not see each
other's POSIX locks, and one can reset the WAL index the other is reading (SQLite's "How To
Corrupt An SQLite Database File", 2.2). :func:`same_sqlite` checks it is the same library;
where it is not, or the module was not built, or the store is in memory or not in UTF-8 or
on PostgreSQL, there is no reader and verify reads tuples as before.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from array import array
from itertools import accumulate
from typing import Any, NamedTuple

from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from services.event_store import reads
from services.event_store.chain import GENESIS, chain_table

try:
    from services.event_store import _log_reader
except ImportError:  # not built (no compiler or no SQLite headers where cbcm was installed)
    _log_reader = None  # type: ignore[assignment]

__all__ = ["BlobBatch", "BlobReader", "PostgresBlobReader", "blob_reader", "same_sqlite"]


class BlobBatch(NamedTuple):
    first: int
    end: int
    rows: int
    preimages: bytes
    bounds: array[int]
    """``preimages[bounds[i]:bounds[i + 1]]`` is what event ``i``'s link hashes."""
    links: bytes
    plain: bool


@functools.cache
def same_sqlite() -> bool:
    """The C reader calls the very SQLite library Python's ``sqlite3`` module calls (the
    same ``sqlite3_open_v2``, found through ``_sqlite3``'s own dependencies)."""
    if _log_reader is None:
        return False
    import _sqlite3  # noqa: PLC0415 - the module behind sqlite3, for its library

    try:
        library = ctypes.CDLL(_sqlite3.__file__)
        theirs = ctypes.cast(library.sqlite3_open_v2, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return False
    return theirs is not None and theirs == _log_reader.open_v2_address()


class BlobReader:
    """Ranges of one SQLite store read as buffers."""

    def __init__(self, path: str, events_table: str) -> None:
        assert _log_reader is not None
        self._read = functools.partial(
            _log_reader.read_range, path, events_table, chain_table(events_table)
        )

    def read(self, first: int, end: int, previous_position: int, previous: bytes) -> BlobBatch:
        """The range ``first <= p < end``, whose first event must link to
        ``previous_position`` (whose link is ``previous``); not ``plain`` (and empty) where
        it is not plain."""
        try:
            plain, preimages, starts, links = self._read(first, end, previous_position, previous)
        except OSError:  # the file could not be read so: read as tuples
            plain = False
        if not plain:
            return BlobBatch(first, end, 0, b"", array("q", [0]), b"", False)
        bounds = array("q")
        bounds.frombytes(starts)
        return BlobBatch(first, end, len(links) // 32, preimages, bounds, links, True)


_PG_STATEMENT = (
    # PostgreSQL's columns are typed (uuid, bigint, text, bytea): what remains to check is
    # that every position holds both rows, each link names the position before and is 32
    # bytes. The preimages are put together on the server with pg_catalog's own functions;
    # the bytes are the stored values, as a tuple would carry them, and are hashed here.
    "SELECT pg_catalog.string_agg("
    "coalesce(p.link, CASE WHEN c.previous_position = 0 THEN {genesis} END) "
    "|| pg_catalog.int8send(e.notification_id) || pg_catalog.uuid_send(e.originator_id) "
    "|| pg_catalog.int8send(e.originator_version) "
    "|| pg_catalog.int4send(pg_catalog.octet_length(e.topic)) "
    "|| pg_catalog.convert_to(e.topic, 'UTF8') || e.state, ''::bytea "
    "ORDER BY e.notification_id), "
    "pg_catalog.string_agg(pg_catalog.int8send(68 + pg_catalog.octet_length(e.topic) "
    "+ pg_catalog.octet_length(e.state)), ''::bytea ORDER BY e.notification_id), "
    "pg_catalog.string_agg(c.link, ''::bytea ORDER BY e.notification_id), "
    "count(*), min(e.notification_id), max(e.notification_id), "
    "count(*) FILTER (WHERE c.previous_position = e.notification_id - 1 "
    "AND pg_catalog.octet_length(c.link) = 32), "
    "(SELECT count(*) FROM {s}.{e} WHERE notification_id >= %(first)s "
    "AND notification_id < %(end)s), "
    "(SELECT count(*) FROM {s}.{c} WHERE position >= %(first)s AND position < %(end)s) "
    "FROM {s}.{e} e JOIN {s}.{c} c ON c.position = e.notification_id "
    "LEFT JOIN {s}.{c} p ON p.position = c.previous_position "
    "WHERE e.notification_id >= %(first)s AND e.notification_id < %(end)s "
    "AND c.position >= %(first)s AND c.position < %(end)s"
)


class PostgresBlobReader:
    """Ranges of one PostgreSQL store read as buffers, put together by the server."""

    def __init__(self, recorder: PostgresApplicationRecorder) -> None:
        self.recorder = recorder
        events = recorder.events_table_name
        self._statement = SQL(_PG_STATEMENT).format(
            s=Identifier(recorder.datastore.schema),
            e=Identifier(events),
            c=Identifier(chain_table(events)),
            genesis=SQL("'\\x" + GENESIS.hex() + "'::bytea"),
        )

    def read(self, first: int, end: int, previous_position: int, previous: bytes) -> BlobBatch:
        """As ``BlobReader.read``."""
        nothing = BlobBatch(first, end, 0, b"", array("q", [0]), b"", False)
        with reads.one_statement(self.recorder.datastore) as curs:
            cursor = curs.connection.cursor(row_factory=tuple_row, binary=True)
            cursor.execute(self._statement, {"first": first, "end": end})
            row = cursor.fetchone()
        if row is None:
            return nothing
        preimages, sizes, links, count, low, high, linked, events, chain = row
        rows = end - first
        if not (count == linked == events == chain == rows and low == first and high == end - 1):
            return nothing
        if preimages is None or sizes is None or links is None or len(links) != 32 * rows:
            return nothing
        preimages, links = bytes(preimages), bytes(links)
        lengths = array("q")
        lengths.frombytes(bytes(sizes))
        if lengths.itemsize != 8 or len(lengths) != rows:
            return nothing
        if sys.byteorder == "little":
            lengths.byteswap()  # int8send writes big-endian
        bounds = array("q", accumulate(lengths, initial=0))
        if (
            bounds[-1] != len(preimages)
            or preimages[:32] != previous
            or previous_position != first - 1
        ):
            return nothing
        return BlobBatch(first, end, rows, preimages, bounds, links, True)


def blob_reader(recorder: Any) -> BlobReader | PostgresBlobReader | None:
    """A reader of ``recorder``'s log as buffers, or None where there is none (see above)."""
    if isinstance(recorder, PostgresApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as curs:
            if curs.connection.info.encoding != "utf-8":
                return None
        return PostgresBlobReader(recorder)
    if not isinstance(recorder, SQLiteApplicationRecorder) or not same_sqlite():
        return None
    pool = recorder.datastore.pool
    if pool.is_sqlite_memory_mode:
        return None
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA encoding")
        if str(c.fetchone()[0]).upper() != "UTF-8":
            return None
    return BlobReader(pool.db_name, recorder.events_table_name)
