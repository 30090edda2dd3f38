"""Where a test's read models live: SQLite files in its temp dir, or schemas of their own on
the test PostgreSQL server (ADR 16). ``dump`` reads every table of either, in one form, so a
read model can be compared with a rebuild, or across the two databases."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from projections.base import open_read_model
from services.projector.storage import PostgresReadModel, ReadModelStore, SqliteReadModel


class Places:
    """Read-model places of one kind (``kind``: ``sqlite`` or ``postgres``) for one test;
    ``close`` drops the schemas made."""

    def __init__(self, kind: str, tmp_path: Path, server_url: str | None = None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server_url = server_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.made: list[PostgresReadModel] = []

    def __call__(self, label: str, name: str | None = None) -> Path | ReadModelStore:
        """The place called ``label`` (a file name's stem, or a schema's suffix) of read
        model ``name`` (default: ``label``)."""
        if self.kind == "sqlite":
            return self.tmp_path / f"{label}.sqlite3"
        assert self.server_url is not None
        store = PostgresReadModel(
            self.server_url, f"{self.prefix}{label}", name or label, self.tmp_path / "data"
        )
        self.made.append(store)
        return store

    @property
    def schema_url(self) -> str:
        """A ``CBCM_READ_MODEL_STORE`` whose read models are ``<prefix>inbox``, ..."""
        assert self.server_url is not None
        sep = "&" if "?" in self.server_url else "?"
        return f"{self.server_url}{sep}schema={self.prefix.rstrip('_')}"

    def close(self) -> None:
        for store in self.made:
            store.close()
        if self.server_url is not None:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                schemas = [
                    r[0]
                    for r in conn.execute(
                        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                        (f"{self.prefix}%",),
                    )
                ]
                for schema in schemas:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )


def dump(where: Path | ReadModelStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a read model, each as its sorted rows."""
    if isinstance(where, Path | SqliteReadModel):
        path = where if isinstance(where, Path) else where.path
        db = open_read_model(path, readonly=True)
        try:
            tables = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {
                t: sorted((tuple(r) for r in db.execute(f"SELECT * FROM {t}")), key=repr)
                for t in tables
            }
        finally:
            db.close()
    assert isinstance(where, PostgresReadModel)
    with where.connect("dump") as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " ORDER BY table_name",
                (where.schema,),
            )
        ]
        return {
            t: sorted(
                (
                    tuple(r)
                    for r in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t)))
                ),
                key=repr,
            )
            for t in tables
        }
