"""The log read and hashed a range at a time, for the fast path of ``cbcm audit verify``
(issue #15, ADR 33).

``chain.log_batches`` hands verify a Python tuple per event: about 1.2 µs an event to make,
more than the hashing, and SQL functions putting the bytes together cost as much. Here the C
module ``services.event_store._log_reader`` reads a range with SQLite's C API and hashes, per
event in position order, what its link hashes (``chain.link_hash``: the stored link before
it, its position, originator id and version as big-endian integers, its topic's length, its
topic in UTF-8 and its state) straight from SQLite's values. It returns the ``digests`` and
the stored ``links``; verify compares the two in one comparison.

It does so only when the range is *plain*: every position of it holds an event of the
library's column types and id spelling (with a topic in UTF-8) and a link to the position
just before it, as the tuple path requires (``chain._sqlite_batch``). Any other range, and a
plain one whose digests differ from its links, verify reads as before (``log_batches``, then
``read_log``). So a range read here is never *trusted* more than one read as tuples: the C
code only spares Python objects, and a wrong digest can only fail the comparison.

The C module reads the file on a read-only connection of its own, through the same SQLite
library as Python's ``sqlite3`` module: two copies of SQLite in one process do not see each
other's POSIX locks, and one can reset the WAL index the other is reading (SQLite's "How To
Corrupt An SQLite Database File", 2.2). :func:`same_sqlite` checks it is the same library;
where it is not, or the module was not built, or the store is in memory, not in UTF-8, its
tables not as created (a view, a chain table rebuilt: ``chain.sqlite_tables_as_created``) or
on PostgreSQL, there is no reader and verify reads tuples as before.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, NamedTuple

from eventsourcing.sqlite import SQLiteApplicationRecorder

from services.event_store.chain import chain_table, sqlite_tables_as_created

try:
    from services.event_store import _log_reader
except ImportError:  # not built (no compiler or no SQLite headers where cbcm was installed)
    _log_reader = None  # type: ignore[assignment]

__all__ = ["BlobBatch", "BlobReader", "blob_reader", "same_sqlite"]


class BlobBatch(NamedTuple):
    plain: bool
    digests: bytes
    """What each event's link should be, recomputed from the stored values."""
    links: bytes
    """Each event's stored link."""

    @property
    def rows(self) -> int:
        return len(self.links) // 32


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
            plain, digests, links = self._read(first, end - 1, previous_position, previous)
        except (OSError, ValueError, OverflowError):  # not read so: read as tuples
            plain = False
        return BlobBatch(True, digests, links) if plain else BlobBatch(False, b"", b"")


def blob_reader(recorder: Any) -> BlobReader | None:
    """A reader of ``recorder``'s log as buffers, or None where there is none (see above)."""
    if not isinstance(recorder, SQLiteApplicationRecorder) or not same_sqlite():
        return None
    pool = recorder.datastore.pool
    if pool.is_sqlite_memory_mode or not sqlite_tables_as_created(recorder):
        return None
    return BlobReader(pool.db_name, recorder.events_table_name)
