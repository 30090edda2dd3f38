"""The data-key table on SQLite and on PostgreSQL, beside the event log it protects.

Rows are never deleted (a trigger refuses it): an erased key stays as a tombstone whose key
material is gone (``wrapped`` NULL, and a trigger refuses to set it again), so a stored event
naming it reads as erased, not as damaged. On SQLite the connection overwrites freed content
(``secure_delete``) and the write-ahead log is truncated after an erasure; on PostgreSQL the
table is vacuumed after an erasure (best effort: a role that does not own it cannot).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from psycopg.sql import SQL, Composed, Identifier, Literal

from services.event_store import reads
from services.event_store.personal_data.data_keys import KeyRef, KeyRow

log = structlog.get_logger()

ERASED_STAYS = "an erased data key stays erased"
IDENTITY_STAYS = "the identity of a data key never changes"
RING_STAYS = "the key ring of the store is recorded once"
TOMBSTONES_STAY = "data keys are never deleted: an erasure leaves a tombstone"
MANY = 500
"""Refs per query of ``get_many``."""


def key_table(events_table: str) -> str:
    return f"{events_table}_data_keys"


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------------- SQLite


def ring_table(events_table: str) -> str:
    return f"{events_table}_key_ring"


def sqlite_statements(events_table: str) -> list[str]:
    t = key_table(events_table)
    r = ring_table(events_table)
    return [
        f"CREATE TABLE IF NOT EXISTS {r} (name TEXT PRIMARY KEY, ring_id TEXT NOT NULL, "
        "cipher TEXT NOT NULL)",
        f"CREATE TRIGGER IF NOT EXISTS {r}_stays BEFORE UPDATE ON {r} "
        f"BEGIN SELECT RAISE(ABORT, '{RING_STAYS}'); END",
        f"CREATE TABLE IF NOT EXISTS {t} (scope TEXT NOT NULL, subject TEXT NOT NULL, "
        "generation INTEGER NOT NULL, kek_id TEXT, wrapped BLOB, created_at TEXT NOT NULL, "
        "erased_at TEXT, PRIMARY KEY (scope, subject, generation))",
        f"CREATE TRIGGER IF NOT EXISTS {t}_erased_stays BEFORE UPDATE ON {t} "
        "WHEN OLD.wrapped IS NULL AND NEW.wrapped IS NOT NULL "
        f"BEGIN SELECT RAISE(ABORT, '{ERASED_STAYS}'); END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_identity_stays BEFORE UPDATE ON {t} "
        "WHEN NEW.scope IS NOT OLD.scope OR NEW.subject IS NOT OLD.subject "
        "OR NEW.generation IS NOT OLD.generation OR NEW.created_at IS NOT OLD.created_at "
        f"BEGIN SELECT RAISE(ABORT, '{IDENTITY_STAYS}'); END",
        # A row from an old backup must not come back behind its tombstone.
        f"CREATE TRIGGER IF NOT EXISTS {t}_no_resurrection BEFORE INSERT ON {t} "  # noqa: S608
        f"WHEN EXISTS (SELECT 1 FROM {t} WHERE scope = NEW.scope AND subject = NEW.subject "
        "AND generation >= NEW.generation AND wrapped IS NULL) "
        f"BEGIN SELECT RAISE(ABORT, '{ERASED_STAYS}'); END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t} "
        f"BEGIN SELECT RAISE(ABORT, '{TOMBSTONES_STAY}'); END",
    ]


class SQLiteKeyTable:
    """The data keys of a SQLite event store (same file, same transactions)."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.name = key_table(recorder.events_table_name)

    def _read(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return list(c.fetchall())

    def live(self, scope: UUID, subject: str) -> tuple[int, KeyRow | None]:
        rows = self._read(
            f"SELECT generation, kek_id, wrapped FROM {self.name} "  # noqa: S608
            "WHERE scope = ? AND subject = ? ORDER BY generation DESC LIMIT 1",
            (scope.hex, subject),
        )
        if not rows:
            return 0, None
        generation, kek_id, wrapped = rows[0]
        row = KeyRow(int(generation), kek_id, None if wrapped is None else bytes(wrapped))
        return int(generation), (row if wrapped is not None else None)

    def get(self, ref: KeyRef) -> KeyRow | None:
        rows = self._read(
            f"SELECT kek_id, wrapped FROM {self.name} "  # noqa: S608
            "WHERE scope = ? AND subject = ? AND generation = ?",
            (ref.scope.hex, ref.subject, ref.generation),
        )
        if not rows:
            return None
        kek_id, wrapped = rows[0]
        return KeyRow(ref.generation, kek_id, None if wrapped is None else bytes(wrapped))

    def get_many(self, refs: list[KeyRef]) -> dict[KeyRef, KeyRow]:
        """The rows of ``refs`` that exist, in one query per ``MANY`` refs (the relay reads
        a backlog's keys a batch at a time, not one query per key)."""
        found: dict[KeyRef, KeyRow] = {}
        for first in range(0, len(refs), MANY):
            chunk = refs[first : first + MANY]
            wanted = {(r.scope.hex, r.subject, r.generation): r for r in chunk}
            rows = self._read(
                f"SELECT scope, subject, generation, kek_id, wrapped FROM {self.name} "  # noqa: S608
                "WHERE scope IN (" + ", ".join("?" * len({r.scope for r in chunk})) + ")",
                tuple(sorted({r.scope.hex for r in chunk})),
            )
            for scope, subject, generation, kek_id, wrapped in rows:
                ref = wanted.get((scope, subject, int(generation)))
                if ref is not None:
                    found[ref] = KeyRow(
                        ref.generation, kek_id, None if wrapped is None else bytes(wrapped)
                    )
        return found

    def insert(self, cursor: Any, rows: list[tuple[KeyRef, str, bytes]]) -> None:
        now = _now()
        cursor.executemany(
            f"INSERT INTO {self.name} (scope, subject, generation, kek_id, wrapped, "  # noqa: S608
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.scope.hex, r.subject, r.generation, k, w, now) for r, k, w in rows],
        )

    def erased_among(self, cursor: Any, refs: list[KeyRef]) -> list[KeyRef]:
        stale = []
        for ref in refs:
            cursor.execute(
                f"SELECT wrapped IS NOT NULL FROM {self.name} "  # noqa: S608
                "WHERE scope = ? AND subject = ? AND generation = ?",
                (ref.scope.hex, ref.subject, ref.generation),
            )
            row = cursor.fetchone()
            if row is None or not row[0]:
                stale.append(ref)
        return stale

    def refuse(self, cursor: Any, message: str) -> None:
        # Raising out of the recorder's transaction rolls it back on SQLite.
        del cursor, message

    def erase(self, cursor: Any, targets: list[tuple[UUID, str]], at: str) -> None:
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.executemany(
            f"UPDATE {self.name} SET wrapped = NULL, kek_id = NULL, erased_at = ? "  # noqa: S608
            "WHERE scope = ? AND subject = ? AND wrapped IS NOT NULL",
            [(at, scope.hex, subject) for scope, subject in targets],
        )

    def wrapped_under_other_than(self, kek_id: str, limit: int) -> list[tuple[KeyRef, KeyRow]]:
        rows = self._read(
            f"SELECT scope, subject, generation, kek_id, wrapped FROM {self.name} "  # noqa: S608
            "WHERE wrapped IS NOT NULL AND kek_id != ? LIMIT ?",
            (kek_id, limit),
        )
        return [
            (KeyRef(UUID(s), subj, int(g)), KeyRow(int(g), k, bytes(w)))
            for s, subj, g, k, w in rows
        ]

    def rewrap(self, rows: list[tuple[KeyRef, str, str, bytes]]) -> int:
        with self.recorder.datastore.transaction(commit=True) as c:
            count = 0
            for ref, old, new, wrapped in rows:
                c.execute(
                    f"UPDATE {self.name} SET kek_id = ?, wrapped = ? "  # noqa: S608
                    "WHERE scope = ? AND subject = ? AND generation = ? AND kek_id = ? "
                    "AND wrapped IS NOT NULL",
                    (new, wrapped, ref.scope.hex, ref.subject, ref.generation, old),
                )
                c.execute("SELECT changes()")
                count += int(c.fetchone()[0])
        return count

    def destroy(self, refs: list[KeyRef]) -> int:
        with self.recorder.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete = ON")
            count = 0
            for ref in refs:
                c.execute(
                    f"UPDATE {self.name} SET wrapped = NULL, kek_id = NULL, erased_at = ? "  # noqa: S608
                    "WHERE scope = ? AND subject = ? AND generation = ? AND wrapped IS NOT NULL",
                    (_now(), ref.scope.hex, ref.subject, ref.generation),
                )
                c.execute("SELECT changes()")
                count += int(c.fetchone()[0])
        return count

    def counts(self) -> dict[str, int]:
        rows = self._read(
            f"SELECT COALESCE(kek_id, ''), COUNT(*) FROM {self.name} "  # noqa: S608
            "GROUP BY COALESCE(kek_id, '')",
            (),
        )
        return {str(k): int(n) for k, n in rows}

    def wrapped_under_any(self, kek_ids: tuple[str, ...]) -> tuple[bool, bool]:
        """Whether any live key exists, and whether one is wrapped under one of ``kek_ids``
        (each answered by the first matching row, not a count of the table)."""
        live = bool(self._read(f"SELECT 1 FROM {self.name} WHERE wrapped IS NOT NULL LIMIT 1", ()))  # noqa: S608
        marks = ",".join("?" * len(kek_ids))
        under = bool(
            kek_ids
            and self._read(
                f"SELECT 1 FROM {self.name} WHERE kek_id IN ({marks}) LIMIT 1",  # noqa: S608
                kek_ids,
            )
        )
        return live, under

    def all_rows(self, scopes: tuple[UUID, ...] | None = None) -> list[tuple[KeyRef, bool]]:
        statement = f"SELECT scope, subject, generation, wrapped IS NOT NULL FROM {self.name}"  # noqa: S608
        params: tuple[Any, ...] = ()
        if scopes is not None:
            if not scopes:
                return []
            statement += f" WHERE scope IN ({','.join('?' * len(scopes))})"
            params = tuple(s.hex for s in scopes)
        return [
            (KeyRef(UUID(s), str(subj), int(g)), bool(live))
            for s, subj, g, live in self._read(statement, params)
        ]

    def any_live(self, scopes: tuple[UUID, ...]) -> bool:
        if not scopes:
            return False
        marks = ",".join("?" * len(scopes))
        return bool(
            self._read(
                f"SELECT 1 FROM {self.name} WHERE scope IN ({marks}) "  # noqa: S608
                "AND wrapped IS NOT NULL LIMIT 1",
                tuple(s.hex for s in scopes),
            )
        )

    def register_ring(self, ring_id: str, cipher: str) -> tuple[str, str]:
        """Record which key ring (and whole-event cipher key) this store's data is under, if
        none is yet; the one recorded."""
        table = ring_table(self.recorder.events_table_name)
        with self.recorder.datastore.transaction(commit=True) as c:
            c.execute(
                f"INSERT OR IGNORE INTO {table} VALUES ('store', ?, ?)",  # noqa: S608
                (ring_id, cipher),
            )
            c.execute(f"SELECT ring_id, cipher FROM {table} WHERE name = 'store'")  # noqa: S608
            row = c.fetchone()
        return str(row[0]), str(row[1])

    def after_erasure(self) -> None:
        # The old page images of the erased rows may sit in the write-ahead log: move them
        # into the (securely overwritten) database and empty the log file.
        try:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy = c.fetchone()
        except Exception as e:
            log.warning("personal_data.wal_checkpoint_deferred", error=type(e).__name__)
            return
        if busy is not None and busy[0]:  # a reader holds old pages: the next checkpoint
            log.warning("personal_data.wal_checkpoint_deferred", error="busy")


# --------------------------------------------------------------------------------- PostgreSQL


def postgres_statements(schema: str, events_table: str) -> list[Composed]:
    s = Identifier(schema)
    t = Identifier(key_table(events_table))
    stays = Identifier(f"{key_table(events_table)}_erased_stays")
    keep = Identifier(f"{key_table(events_table)}_keep")
    r = Identifier(ring_table(events_table))
    ring_stays = Identifier(f"{ring_table(events_table)}_stays")
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (name text PRIMARY KEY, ring_id text NOT NULL, "
            "cipher text NOT NULL)"
        ).format(s, r),
        SQL(
            "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION '{}'; END $$"
        ).format(s, ring_stays, SQL(RING_STAYS)),
        SQL(
            "DO $$ BEGIN CREATE TRIGGER {} BEFORE UPDATE OR DELETE ON {}.{} FOR EACH ROW "
            "EXECUTE FUNCTION {}.{}(); EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(ring_stays, s, r, s, ring_stays),
        SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (scope uuid NOT NULL, subject text NOT NULL, "
            "generation integer NOT NULL, kek_id text, wrapped bytea, "
            "created_at timestamptz NOT NULL, erased_at timestamptz, "
            "PRIMARY KEY (scope, subject, generation))"
        ).format(s, t),
        SQL(
            "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'DELETE' THEN RAISE EXCEPTION '{}'; END IF; "
            "IF TG_OP = 'INSERT' THEN "
            "IF EXISTS (SELECT 1 FROM {}.{} WHERE scope = NEW.scope AND subject = NEW.subject "
            "AND generation >= NEW.generation AND wrapped IS NULL) THEN RAISE EXCEPTION '{}'; "
            "END IF; RETURN NEW; END IF; "
            "IF NEW.scope <> OLD.scope OR NEW.subject <> OLD.subject "
            "OR NEW.generation <> OLD.generation OR NEW.created_at <> OLD.created_at "
            "THEN RAISE EXCEPTION '{}'; END IF; "
            "IF OLD.wrapped IS NULL AND NEW.wrapped IS NOT NULL THEN RAISE EXCEPTION '{}'; "
            "END IF; RETURN NEW; END $$"
        ).format(
            s,
            stays,
            SQL(TOMBSTONES_STAY),
            s,
            t,
            SQL(ERASED_STAYS),
            SQL(IDENTITY_STAYS),
            SQL(ERASED_STAYS),
        ),
        SQL(
            "DO $$ BEGIN CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE ON {}.{} "
            "FOR EACH ROW EXECUTE FUNCTION {}.{}(); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(keep, s, t, s, stays),
    ]


class PostgresKeyTable:
    """The data keys of a PostgreSQL event store (same schema, same transactions)."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.table = SQL("{}.{}").format(
            Identifier(recorder.datastore.schema),
            Identifier(key_table(recorder.events_table_name)),
        )

    def _read(self, statement: Composed, params: tuple[Any, ...]) -> list[Any]:
        with reads.one_statement(self.recorder.datastore) as curs:
            curs.execute(statement, params)
            return list(curs.fetchall())

    def live(self, scope: UUID, subject: str) -> tuple[int, KeyRow | None]:
        rows = self._read(
            SQL(
                "SELECT generation, kek_id, wrapped FROM {} WHERE scope = %s AND subject = %s "
                "ORDER BY generation DESC LIMIT 1"
            ).format(self.table),
            (scope, subject),
        )
        if not rows:
            return 0, None
        r = rows[0]
        if r["wrapped"] is None:
            return int(r["generation"]), None
        return int(r["generation"]), KeyRow(int(r["generation"]), r["kek_id"], bytes(r["wrapped"]))

    def get(self, ref: KeyRef) -> KeyRow | None:
        rows = self._read(
            SQL(
                "SELECT kek_id, wrapped FROM {} WHERE scope = %s AND subject = %s "
                "AND generation = %s"
            ).format(self.table),
            (ref.scope, ref.subject, ref.generation),
        )
        if not rows:
            return None
        r = rows[0]
        return KeyRow(
            ref.generation, r["kek_id"], None if r["wrapped"] is None else bytes(r["wrapped"])
        )

    def get_many(self, refs: list[KeyRef]) -> dict[KeyRef, KeyRow]:
        """The rows of ``refs`` that exist, in one query per ``MANY`` refs."""
        found: dict[KeyRef, KeyRow] = {}
        for first in range(0, len(refs), MANY):
            chunk = refs[first : first + MANY]
            wanted = {(r.scope, r.subject, r.generation): r for r in chunk}
            rows = self._read(
                SQL(
                    "SELECT scope, subject, generation, kek_id, wrapped FROM {} "
                    "WHERE scope = ANY(%s)"
                ).format(self.table),
                (sorted({r.scope for r in chunk}),),
            )
            for r in rows:
                ref = wanted.get((r["scope"], r["subject"], int(r["generation"])))
                if ref is not None:
                    found[ref] = KeyRow(
                        ref.generation,
                        r["kek_id"],
                        None if r["wrapped"] is None else bytes(r["wrapped"]),
                    )
        return found

    def insert(self, cursor: Any, rows: list[tuple[KeyRef, str, bytes]]) -> None:
        cursor.executemany(
            SQL(
                "INSERT INTO {} (scope, subject, generation, kek_id, wrapped, created_at) "
                "VALUES (%s, %s, %s, %s, %s, now())"
            ).format(self.table),
            [(r.scope, r.subject, r.generation, k, w) for r, k, w in rows],
        )

    def erased_among(self, cursor: Any, refs: list[KeyRef]) -> list[KeyRef]:
        cursor.execute(
            SQL(
                "SELECT scope, subject, generation FROM {} WHERE wrapped IS NOT NULL AND "
                "(scope, subject, generation) IN (SELECT * FROM unnest(%s::uuid[], %s::text[], "
                "%s::integer[]))"
            ).format(self.table),
            (
                [r.scope for r in refs],
                [r.subject for r in refs],
                [r.generation for r in refs],
            ),
        )
        alive = {KeyRef(row["scope"], row["subject"], int(row["generation"])) for row in cursor}
        return [r for r in refs if r not in alive]

    def refuse(self, cursor: Any, message: str) -> None:
        # The library's PostgreSQL recorder catches what its insert raises and re-raises it
        # after leaving the transaction block, which would commit a healthy transaction:
        # make the database abort it first.
        cursor.execute(
            SQL("DO $$ BEGIN RAISE EXCEPTION {}; END $$").format(Literal(f"cbcm: {message}"))
        )

    def erase(self, cursor: Any, targets: list[tuple[UUID, str]], at: str) -> None:
        cursor.executemany(
            SQL(
                "UPDATE {} SET wrapped = NULL, kek_id = NULL, erased_at = now() "
                "WHERE scope = %s AND subject = %s AND wrapped IS NOT NULL"
            ).format(self.table),
            [(scope, subject) for scope, subject in targets],
        )

    def wrapped_under_other_than(self, kek_id: str, limit: int) -> list[tuple[KeyRef, KeyRow]]:
        rows = self._read(
            SQL(
                "SELECT scope, subject, generation, kek_id, wrapped FROM {} "
                "WHERE wrapped IS NOT NULL AND kek_id <> %s LIMIT %s"
            ).format(self.table),
            (kek_id, limit),
        )
        return [
            (
                KeyRef(r["scope"], r["subject"], int(r["generation"])),
                KeyRow(int(r["generation"]), r["kek_id"], bytes(r["wrapped"])),
            )
            for r in rows
        ]

    def rewrap(self, rows: list[tuple[KeyRef, str, str, bytes]]) -> int:
        count = 0
        with self.recorder.datastore.transaction(commit=True) as curs:
            for ref, old, new, wrapped in rows:
                curs.execute(
                    SQL(
                        "UPDATE {} SET kek_id = %s, wrapped = %s WHERE scope = %s AND "
                        "subject = %s AND generation = %s AND kek_id = %s AND wrapped IS NOT NULL"
                    ).format(self.table),
                    (new, wrapped, ref.scope, ref.subject, ref.generation, old),
                )
                count += curs.rowcount
        return count

    def destroy(self, refs: list[KeyRef]) -> int:
        count = 0
        with self.recorder.datastore.transaction(commit=True) as curs:
            for ref in refs:
                curs.execute(
                    SQL(
                        "UPDATE {} SET wrapped = NULL, kek_id = NULL, erased_at = now() "
                        "WHERE scope = %s AND subject = %s AND generation = %s "
                        "AND wrapped IS NOT NULL"
                    ).format(self.table),
                    (ref.scope, ref.subject, ref.generation),
                )
                count += curs.rowcount
        return count

    def counts(self) -> dict[str, int]:
        rows = self._read(
            SQL(
                "SELECT COALESCE(kek_id, '') AS k, COUNT(*) AS n FROM {} "
                "GROUP BY COALESCE(kek_id, '')"
            ).format(self.table),
            (),
        )
        return {str(r["k"]): int(r["n"]) for r in rows}

    def wrapped_under_any(self, kek_ids: tuple[str, ...]) -> tuple[bool, bool]:
        """Whether any live key exists, and whether one is wrapped under one of ``kek_ids``."""
        live = bool(
            self._read(
                SQL("SELECT 1 FROM {} WHERE wrapped IS NOT NULL LIMIT 1").format(self.table), ()
            )
        )
        under = bool(
            self._read(
                SQL("SELECT 1 FROM {} WHERE kek_id = ANY(%s) LIMIT 1").format(self.table),
                (list(kek_ids),),
            )
        )
        return live, under

    def all_rows(self, scopes: tuple[UUID, ...] | None = None) -> list[tuple[KeyRef, bool]]:
        if scopes is None:
            rows = self._read(
                SQL(
                    "SELECT scope, subject, generation, wrapped IS NOT NULL AS live FROM {}"
                ).format(self.table),
                (),
            )
        else:
            rows = self._read(
                SQL(
                    "SELECT scope, subject, generation, wrapped IS NOT NULL AS live FROM {} "
                    "WHERE scope = ANY(%s)"
                ).format(self.table),
                (list(scopes),),
            )
        return [
            (KeyRef(r["scope"], str(r["subject"]), int(r["generation"])), bool(r["live"]))
            for r in rows
        ]

    def any_live(self, scopes: tuple[UUID, ...]) -> bool:
        return bool(
            scopes
            and self._read(
                SQL(
                    "SELECT 1 FROM {} WHERE scope = ANY(%s) AND wrapped IS NOT NULL LIMIT 1"
                ).format(self.table),
                (list(scopes),),
            )
        )

    def register_ring(self, ring_id: str, cipher: str) -> tuple[str, str]:
        """Record which key ring (and whole-event cipher key) this store's data is under, if
        none is yet; the one recorded."""
        table = SQL("{}.{}").format(
            Identifier(self.recorder.datastore.schema),
            Identifier(ring_table(self.recorder.events_table_name)),
        )
        with self.recorder.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("INSERT INTO {} VALUES ('store', %s, %s) ON CONFLICT (name) DO NOTHING").format(
                    table
                ),
                (ring_id, cipher),
            )
            curs.execute(SQL("SELECT ring_id, cipher FROM {} WHERE name = 'store'").format(table))
            row = curs.fetchone()
        assert row is not None
        return str(row["ring_id"]), str(row["cipher"])

    def after_erasure(self) -> None:
        # Dead row versions keep the old key material until vacuumed.
        try:
            with self.recorder.datastore.get_connection() as conn:
                conn.autocommit = True
                conn.execute(SQL("VACUUM {}").format(self.table))
        except Exception as e:
            log.warning("personal_data.vacuum_deferred", error=type(e).__name__)
