"""Read transactions on a PostgreSQL event store that keep the connection's prepared
statements.

The library's ``PostgresDatastore.transaction(commit=False)`` ends every read transaction with
``ROLLBACK``. psycopg takes a ``ROLLBACK`` for a possible undo of DDL and drops every statement
it had prepared on that connection (``DEALLOCATE ALL``, then five more executions of each
before it is prepared again). The stores' readers (data keys, custody records, the chain, the
tiles, the relay's routing) run such a transaction beside almost every command, so the write
path's statements were planned afresh most of the time: in a relay test over 2,900 events,
512 ``DEALLOCATE ALL`` for 2,636 commits.

Here a read transaction is ``BEGIN READ ONLY`` ... ``COMMIT`` instead: the database refuses any
write inside it (a stronger promise than a rollback at the end, which would let a write be
seen by the transaction's own reads), and committing a transaction that wrote nothing
changes nothing. Writing transactions (``commit=True``) are the library's, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Cursor
from psycopg.rows import DictRow

_INSTALLED = "_cbcm_read_only_reads"


def install(datastore: Any) -> None:
    """Make ``datastore.transaction(commit=False)`` a read-only transaction that commits
    (once per datastore; ``datastore.get_connection`` is looked up at each call, so a guard
    installed on it later, ``OutageGuard``, still sees every connection)."""
    if getattr(datastore, _INSTALLED, False):
        return
    library_transaction = datastore.transaction

    @contextmanager
    def transaction(*, commit: bool = False) -> Iterator[Cursor[DictRow]]:
        if commit:
            with library_transaction(commit=True) as curs:
                yield curs
            return
        with datastore.get_connection() as conn:
            conn.read_only = True
            try:
                with conn.transaction():
                    yield conn.cursor()
            finally:
                _writable_again(conn)

    datastore.transaction = transaction
    setattr(datastore, _INSTALLED, True)


def _writable_again(conn: Any) -> None:
    """The connection goes back to the pool as it came (its next transaction may write); one
    that cannot be reset is closed, and the pool replaces it."""
    if conn.closed:
        return
    try:
        conn.read_only = None
    except Exception:
        conn.close()
        raise


@contextmanager
def one_statement(datastore: Any) -> Iterator[Cursor[DictRow]]:
    """A cursor for one SELECT on its own (autocommit): a statement alone reads one snapshot,
    as a transaction around it would, in one round trip instead of three (``BEGIN``, the
    statement, ``COMMIT``). Only for a single statement that writes nothing; several that must
    agree go in ``transaction(commit=False)``."""
    with datastore.get_connection() as conn, conn.cursor() as curs:
        yield curs
