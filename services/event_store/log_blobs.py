"""The log read a range at a time as one buffer, for the fast path of ``cbcm audit verify``
(issue #15, ADR 33).

``chain.log_batches`` hands verify a Python tuple per event: about 1.2 µs an event to make,
more than the hashing. Here the database puts a range's bytes together itself, and verify
hashes them with one call (``services.audit.hashing``). For each range ``first <= p < end``
one statement, in one snapshot, returns:

- ``data``: for each event in position order, the bytes its link hashes after the previous
  link (``chain.link_hash``: position, originator id and version as big-endian integers, the
  topic's length and UTF-8 bytes, the state), then its stored link. So ``previous link +
  data`` holds each event's whole preimage, one after the other:
  ``(previous + data)[bounds[i]:bounds[i + 1]]`` is ``link[i - 1] || event[i]``;
- ``bounds`` (``array('q')``), ``links`` (the stored links, joined);
- what says whether the range is *plain*: every position of the range holds an event of
  the library's column types and id spelling, and a link to the position just before it.
  (Positions are unique, so a range whose every position is joined holds nothing else.)

Only a plain range is for the fast path; verify reads any other range as before
(``log_batches``, then ``read_log``), and a plain range whose hashes do not match goes there
too. So a range read here is never *trusted* more than one read as tuples: the buffer only
spares Python objects, and a wrong buffer can only fail the comparison.

SQLite: read with ``apsw`` (its bundled SQLite has ``unhex``, which the standard library's
SQLite 3.40 lacks), a read-only connection of its own to the same file; an in-memory store
has no file, so it has no bulk reader. PostgreSQL: not yet (its ranges go through
``log_batches``).
"""

from __future__ import annotations

from array import array
from itertools import accumulate
from typing import Any, NamedTuple

import apsw
from eventsourcing.sqlite import SQLiteApplicationRecorder

from services.event_store.chain import chain_table

__all__ = ["BlobBatch", "BlobReader", "blob_reader"]

_LINK_AND_HEADER = 32 + 36
"""The previous link, then position, id, version and topic length (8 + 16 + 8 + 4)."""


class BlobBatch(NamedTuple):
    first: int
    end: int
    low: int
    """The first position of the rows (``first`` when the range is plain)."""
    rows: int
    data: bytes
    bounds: array[int]
    links: bytes
    plain: bool


class BlobReader:
    """Ranges of one SQLite store read as buffers (close it when done)."""

    def __init__(self, path: str, events_table: str) -> None:
        self._connection = apsw.Connection(
            path, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        )
        self._connection.setbusytimeout(5000)
        chain = chain_table(events_table)
        self._statement = (
            # one aggregate over the join, in position order (the plan is checked below)
            "SELECT CAST(group_concat("  # noqa: S608 - table names are the recorder's own
            "unhex(printf('%016x%s%016x%08x', e.rowid, e.originator_id, "
            "e.originator_version, length(CAST(e.topic AS BLOB)))) "
            "|| CAST(e.topic AS BLOB) || e.state || c.link, '') AS BLOB), "
            "group_concat(68 + length(CAST(e.topic AS BLOB)) + length(e.state)), "
            "CAST(group_concat(c.link, '') AS BLOB), "
            "count(*), min(e.rowid), max(e.rowid), "
            # each row linked to the one before, of the library's types and id spelling
            "sum(c.previous_position = e.rowid - 1 "
            "AND typeof(e.originator_id) = 'text' AND length(e.originator_id) = 32 "
            "AND lower(e.originator_id) = e.originator_id "
            "AND typeof(e.originator_version) = 'integer' AND typeof(e.topic) = 'text' "
            "AND typeof(e.state) = 'blob' AND typeof(c.link) = 'blob') "
            f"FROM {events_table} e JOIN {chain} c ON c.position = e.rowid "
            "WHERE e.rowid >= ?1 AND e.rowid < ?2"
        )
        self.ordered = self._scans_in_position_order()

    def _scans_in_position_order(self) -> bool:
        """The statement walks the events (or the links) by position and looks the other
        up: then the rows reach the aggregate in position order. A schema or statistics that
        made SQLite plan otherwise leave this reader unused."""
        plan = [
            str(row[3])
            for row in self._connection.execute(f"EXPLAIN QUERY PLAN {self._statement}", (1, 2))
        ]
        searches = [p for p in plan if p.startswith(("SEARCH", "SCAN"))]
        walks = [
            [
                f"SEARCH {outer} USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
                f"SEARCH {inner} USING INTEGER PRIMARY KEY (rowid=?)",
            ]
            for outer, inner in (("e", "c"), ("c", "e"))
        ]  # either table walked by position, the other looked up by it
        return searches[:2] in walks and not any("TEMP B-TREE" in p for p in plan)

    def read(self, first: int, end: int) -> BlobBatch:
        with self._connection:  # one snapshot (a transaction) for the rows and the counts
            row = next(self._connection.execute(self._statement, (first, end)))
        data, sizes, links, count, low, high, fitting = row
        if count != end - first or low != first or high != end - 1 or fitting != count:
            # not every position of the range holds an event linked to the one before
            return BlobBatch(first, end, first, 0, b"", array("q", [0]), b"", False)
        bounds = array("q", accumulate(map(int, str(sizes).split(",")), initial=0))
        plain = (
            data is not None
            and links is not None
            and len(links) == 32 * count
            and len(bounds) == count + 1
            # every piece is in the buffer (an id that is not hex made its piece NULL,
            # and group_concat leaves NULLs out)
            and bounds[-1] == len(data)
        )
        return BlobBatch(
            first, end, int(low), int(count), bytes(data or b""), bounds, bytes(links or b""), plain
        )

    def close(self) -> None:
        self._connection.close()


def blob_reader(recorder: Any) -> BlobReader | None:
    """A reader of ``recorder``'s log as buffers, or None where there is none (an in-memory
    SQLite store, a store not in UTF-8, PostgreSQL for now, a plan not in position order)."""
    if not isinstance(recorder, SQLiteApplicationRecorder):
        return None
    pool = recorder.datastore.pool
    if pool.is_sqlite_memory_mode:
        return None
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA encoding")
        if str(c.fetchone()[0]).upper() != "UTF-8":
            return None
    try:
        reader = BlobReader(pool.db_name, recorder.events_table_name)
    except apsw.Error:  # no bulk reader: verify reads tuples as before
        return None
    if not reader.ordered:
        reader.close()
        return None
    return reader
