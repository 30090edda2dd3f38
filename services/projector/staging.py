"""A rebuild into PostgreSQL made in a local SQLite file first, then copied in at once (ADR 28,
section 7).

Applying a country's stream statement by statement into PostgreSQL costs the rebuilding
process two to three times what SQLite costs it (psycopg's work per statement, even
pipelined), so a rebuild of 3 million events took 4 to 6 minutes. The projections' SQL gives
the same rows on both databases (``projections.base``; tested with generated command
sequences), so a rebuild applies the stream into a scratch SQLite file under the data dir,
which it alone writes, then replaces the PostgreSQL read model by that file's rows in one
transaction: the tables dropped and made again, every row sent with ``COPY``, the position
set, committed together. Readers see the old read model until that commit, then the new one.

An interrupted rebuild leaves the PostgreSQL read model as it was before the rebuild (the
live projector can continue it), and no scratch file: it is deleted however the rebuild ends.
The live projector still applies into PostgreSQL statement by statement (pipelined)."""

# Table and column names in SQL text come from the read model's own tables, never input.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from psycopg import sql

from projections.base import (
    POSITION_TABLE,
    SCHEMA_TABLE,
    Projection,
    create_position_table,
    drop_position_table,
    get_position,
    set_position,
    set_schema_version,
)
from services.projector.storage import PostgresReadModelDb, rollback

STAGE_PREFIX = ".rebuild-"
"""Scratch directories of rebuilds in progress: ``<data dir>/.rebuild-<name>-<random>``."""


class StagingError(RuntimeError):
    """No scratch file can be made in the data dir, or the scratch read model does not match
    the PostgreSQL one it should replace."""


@contextlib.contextmanager
def stage(data_dir: Path, name: str) -> Iterator[sqlite3.Connection]:
    """A scratch SQLite read model in a directory of its own under ``data_dir``, deleted
    (with the directory) when the block ends, however it ends.

    Nothing else reads it and a crash loses nothing of value (the rebuild starts again), so
    it is written with no sync and its rollback journal in memory; a rolled-back batch (a
    message the projection cannot take) still rolls back."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{name}-", dir=data_dir))
    except OSError as e:
        raise StagingError(
            f"a rebuild into PostgreSQL makes its read model in a scratch file of the data dir "
            f"first, and cannot make one in {data_dir}: {e.strerror or type(e).__name__}"
        ) from None
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(
            where / f"{name}.sqlite", isolation_level=None, check_same_thread=False
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


def _tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in rows]


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]


def _pg_columns(target: PostgresReadModelDb) -> dict[str, list[str]]:
    rows = target.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(str(row[0]), []).append(str(row[1]))
    return found


def copy_stage(
    projection: Projection, source: sqlite3.Connection, target: PostgresReadModelDb
) -> int:
    """Replace the read model in ``target`` by the rows and position of ``source``, in one
    transaction; returns the position. Raises ``StagingError`` (nothing changed) when a table
    or its columns differ between the two."""
    position = get_position(source)
    reading = source.cursor()
    reading.row_factory = None  # plain tuples, as COPY takes them
    target.execute("BEGIN")
    try:
        projection.drop_tables(target)
        drop_position_table(target)
        projection.create_tables(target)
        create_position_table(target)
        set_schema_version(target, projection.schema_version)
        made = _pg_columns(target)
        staged = _tables(source)
        if set(staged) != set(made):
            raise StagingError(
                f"read model {projection.name}: the scratch tables {sorted(staged)} are not "
                f"the PostgreSQL tables {sorted(made)}"
            )
        for table in staged:
            if table in (POSITION_TABLE, SCHEMA_TABLE):
                continue
            columns = _columns(source, table)
            if sorted(columns) != sorted(made[table]):
                raise StagingError(
                    f"read model {projection.name}: table {table} has columns {columns} in "
                    f"the scratch file and {made[table]} in PostgreSQL"
                )
            target.execute(f"DELETE FROM {table}")  # rows create_tables put (defaults)
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with target.conn.cursor() as cursor, cursor.copy(statement) as copy:
                for row in reading.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                    copy.write_row(row)
        set_position(target, position)
        target.execute("COMMIT")
    except BaseException:
        rollback(target)
        raise
    return position
