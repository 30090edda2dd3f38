"""A rebuild into PostgreSQL made in a local SQLite file first, then copied in at once (ADR 28,
section 7).

Applying a country's stream statement by statement into PostgreSQL costs the rebuilding
process two to three times what SQLite costs it (psycopg's work per statement, even
pipelined), so a rebuild of 3 million events took 4 to 6 minutes. The projections' SQL gives
the same rows on both databases (``projections.base``; tested with generated command
sequences), so a rebuild applies the stream into a scratch SQLite file under the data dir,
which it alone writes, then replaces the PostgreSQL read model's rows by that file's in one
transaction: each table's rows deleted, every row sent with ``COPY``, the position set,
committed together. No table is dropped or made there, so readers are never blocked: a
snapshot taken before the commit sees the old read model, one taken after the new one.

An interrupted rebuild leaves the PostgreSQL read model as it was before the rebuild (the
live projector can continue it). Its scratch directory is deleted when the rebuild ends,
or, if the process was killed, by the next rebuild of that schema. The live projector still
applies into PostgreSQL statement by statement (pipelined)."""

# Table and column names in SQL text come from the read model's own tables, never input.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.errors
import structlog
from psycopg import sql

from projections.base import (
    POSITION_TABLE,
    SCHEMA_TABLE,
    Projection,
    get_position,
    set_position,
    table_names,
)
from services.projector.storage import PostgresReadModelDb, rollback

log = structlog.get_logger(__name__)

STAGE_PREFIX = ".rebuild-"
"""Scratch directories of rebuilds in progress: ``<data dir>/.rebuild-<schema>``."""


class StagingError(RuntimeError):
    """No scratch file can be made in the data dir, or the scratch read model does not match
    the PostgreSQL one it should replace."""


@contextlib.contextmanager
def stage(data_dir: Path, label: str) -> Iterator[sqlite3.Connection]:
    """A scratch SQLite read model in ``<data_dir>/.rebuild-<label>/`` (``label``: the
    PostgreSQL schema rebuilt into), deleted when the block ends, however it ends.

    The caller holds the read model's lease, so no other rebuild of that schema runs: a
    directory of that name already there is what a killed rebuild left (SIGKILL runs no
    clean-up), and is deleted first. Nothing else reads the file and a crash loses nothing of
    value (the rebuild starts again), so it is written with no sync and its rollback journal
    in memory; a rolled-back batch (a message the projection cannot take) still rolls back."""
    where = data_dir / f"{STAGE_PREFIX}{label}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if where.exists():
            log.warning("projector.rebuild_scratch_left", where=str(where))
            shutil.rmtree(where)
        where.mkdir(mode=0o700)
    except OSError as e:
        raise StagingError(
            f"a rebuild into PostgreSQL makes its read model in a scratch file of the data dir "
            f"first, and cannot make one in {data_dir}: {e.strerror or type(e).__name__}"
        ) from None
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(
            where / "read-model.sqlite", isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=MEMORY")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-131072")  # 128 MiB of pages
        yield db
    finally:
        if db is not None:
            db.close()
        shutil.rmtree(where, ignore_errors=True)


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]


def _pg_columns(target: PostgresReadModelDb) -> dict[str, list[str]]:
    rows = target.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t "
        "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
        "ORDER BY c.table_name, c.ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(str(row[0]), []).append(str(row[1]))
    return found


def check_alike(
    projection: Projection, source: sqlite3.Connection, target: PostgresReadModelDb
) -> dict[str, list[str]]:
    """Each table of the scratch read model and its columns, which PostgreSQL must have
    too (other relations of the schema, an operator's view, are left alone). Raises
    ``StagingError`` otherwise."""
    made = _pg_columns(target)
    staged = {table: _columns(source, table) for table in sorted(table_names(source))}
    for table, columns in staged.items():
        if table not in made:
            raise StagingError(
                f"read model {projection.name}: table {table} of the scratch file is not in "
                "PostgreSQL"
            )
        if sorted(columns) != sorted(made[table]):
            raise StagingError(
                f"read model {projection.name}: table {table} has columns {columns} in "
                f"the scratch file and {made[table]} in PostgreSQL"
            )
    return staged


def copy_stage(
    projection: Projection, source: sqlite3.Connection, target: PostgresReadModelDb
) -> int:
    """Replace the rows and the position of the read model in ``target`` (its tables made
    already, at this schema version: ``prepare``) by those of ``source``, in one transaction;
    returns the position.

    No table is dropped nor made: rows are deleted and copied, so a reader is never blocked
    and never blocks the copy; a reader's snapshot taken before the commit sees the old rows,
    one taken after sees the new ones. Raises ``StagingError`` (nothing changed) when the
    tables differ, or when PostgreSQL refuses a value SQLite took."""
    position = get_position(source)
    reading = source.cursor()
    reading.row_factory = None  # plain tuples, as COPY takes them
    target.execute("BEGIN")
    try:
        # an operator's lock on a table (the live projector cannot write: the lease is ours)
        target.execute("SET LOCAL lock_timeout = '60s'")
        staged = check_alike(projection, source, target)
        for table, columns in staged.items():
            if table in (POSITION_TABLE, SCHEMA_TABLE):
                continue
            target.execute(f"DELETE FROM {table}")
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            try:
                with target.conn.cursor() as cursor, cursor.copy(statement) as copy:
                    for row in reading.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                        copy.write_row(row)
            except psycopg.errors.DataError as e:
                # the error's type and code only: its text may quote the value
                raise StagingError(
                    f"read model {projection.name}: PostgreSQL refuses a value of table "
                    f"{table} ({type(e).__name__}, SQLSTATE {e.sqlstate}); the rebuild "
                    "changed nothing. The live projector stops at the message that carries "
                    "it too"
                ) from None
        set_position(target, position)
        target.execute("COMMIT")
    except BaseException:
        rollback(target)
        raise
    return position
