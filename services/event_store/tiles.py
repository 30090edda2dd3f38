"""The stored tiles of the Merkle tree over the hash chain (issue #15): the table and its rows.

The tree's leaves are the chain's links in position order (leaf ``i`` is the ``i``-th chain
row), its hashing RFC 6962's (``services.audit.merkle``). It is kept as C2SP tlog-tiles keeps
it: tiles of height 8, a tile at level ``L`` holding 256 consecutive node hashes of height
``8 * L`` (level 0: leaf hashes), 8,192 bytes, byte for byte the file ``tile/<L>/<N>`` of that
layout. Only full tiles are stored; a row also names the first and last store position its
leaves cover (so a position finds its leaf index in one look-up) and the tile's own root (the
node of height ``8 * (L + 1)``, so the right edge is summed without reading whole tiles).

Rows are written by the checkpoint publisher (``services.audit.tree.extend``) before it signs,
never by the write path, and refuse UPDATE and DELETE by trigger like the log. A stored tile
is a cache that ``cbcm audit verify`` holds to the links; it is never trusted alone.
"""

# Table names in SQL text come from the recorder's configuration, never from input.
# ruff: noqa: S608

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

TILE_WIDTH = 256
MAX_LEVELS = 8
"""Levels a tree can have tiles at: 256**8 leaves, more than any log will hold."""
HASH_SIZE = 32
REFUSAL = "the tiles of the tree are append-only: a tile is never updated or deleted"


class Tile(NamedTuple):
    level: int
    number: int
    hashes: bytes
    root: bytes
    first_position: int
    last_position: int


def tiles_table(events_table: str) -> str:
    return f"{events_table}_tiles"


def sqlite_statements(events_table: str) -> list[str]:
    table = tiles_table(events_table)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
        "hashes BLOB NOT NULL, root BLOB NOT NULL, first_position INTEGER NOT NULL, "
        "last_position INTEGER NOT NULL, PRIMARY KEY (level, idx))",
        f"CREATE INDEX IF NOT EXISTS {table}_by_position ON {table} (level, last_position)",
    ]
    for action in ("UPDATE", "DELETE"):
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON "
            f"{table} BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        )
    return statements


def postgres_statements(schema: str, events_table: str) -> list[Composed]:
    table = Identifier(tiles_table(events_table))
    s = Identifier(schema)
    refuse = Identifier(f"{tiles_table(events_table)}_append_only")
    statements = [
        SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (level integer NOT NULL, idx bigint NOT NULL, "
            "hashes bytea NOT NULL, root bytea NOT NULL, first_position bigint NOT NULL, "
            "last_position bigint NOT NULL, PRIMARY KEY (level, idx))"
        ).format(s, table),
        SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (level, last_position)").format(
            Identifier(f"{tiles_table(events_table)}_by_position"), s, table
        ),
        SQL(
            "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '{}'; END $$"
        ).format(s, refuse, SQL(REFUSAL)),
    ]
    for kind, when, each in (
        ("row", "UPDATE OR DELETE", "ROW"),
        ("truncate", "TRUNCATE", "STATEMENT"),
    ):
        statements.append(
            SQL(
                "DO $$ BEGIN CREATE TRIGGER {} BEFORE {} ON {}.{} FOR EACH {} "
                "EXECUTE FUNCTION {}.{}(); EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ).format(
                Identifier(f"{tiles_table(events_table)}_no_{kind}"),
                SQL(when),
                s,
                table,
                SQL(each),
                s,
                refuse,
            )
        )
    return statements


# ------------------------------------------------------------------------------ access


_pinned = threading.local()


@contextmanager
def reading(recorder: Any) -> Iterator[None]:
    """Every read of the tiles and links of ``recorder`` by this thread, inside, in one read
    transaction: one connection and no BEGIN and COMMIT per query (the inclusion proofs of
    one case ask a dozen questions; on PostgreSQL the round trips were most of their time)."""
    held = getattr(_pinned, "held", None)
    if held is not None and held[0] is recorder:
        yield
        return
    with recorder.datastore.transaction(commit=False) as c:
        _pinned.held = (recorder, c)
        try:
            yield
        finally:
            _pinned.held = None


class TileStore:
    """Reads and appends the tiles of one recorder's log (SQLite or PostgreSQL)."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.sqlite = isinstance(recorder, SQLiteApplicationRecorder)
        events = recorder.events_table_name
        if self.sqlite:
            self._tiles = tiles_table(events)
            self._chain = f"{events}_chain"
            self._mark = "?"
        else:
            schema = recorder.datastore.schema
            self._tiles = f'"{schema}"."{tiles_table(events)}"'
            self._chain = f'"{schema}"."{events}_chain"'
            self._mark = "%s"

    @property
    def _in_list(self) -> str:
        """``IN`` over one parameter holding a list of integers (``_listed``): one query
        text whatever the list's length, so the driver parses it once."""
        if self.sqlite:
            return "(SELECT value FROM json_each(?))"
        return "(SELECT unnest(?::bigint[]))"

    def _listed(self, values: Iterable[int]) -> Any:
        listed = [int(v) for v in values]
        return json.dumps(listed) if self.sqlite else listed

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("{tiles}", self._tiles).replace("{chain}", self._chain)
        # a chain row's link as bytes whatever type a DBA stored it as (SQLite keeps any)
        sql = sql.replace("{link}", "CAST(link AS BLOB) AS link" if self.sqlite else "link")
        sql = sql.replace("?", self._mark)
        held = getattr(_pinned, "held", None)
        if held is not None and held[0] is self.recorder:
            return self._run(held[1], sql, parameters)
        with self.recorder.datastore.transaction(commit=False) as c:
            return self._run(c, sql, parameters)

    def _run(self, c: Any, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.sqlite:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples, not the library's sqlite3.Row
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())
        cursor = c.connection.cursor(row_factory=tuple_row)
        cursor.execute(sql, parameters)
        return list(cursor.fetchall())

    def counts(self) -> dict[int, int]:
        """Full tiles stored, per level (tiles are stored in order, from index 0)."""
        rows = self._query("SELECT level, count(*) FROM {tiles} GROUP BY level")
        return {int(level): int(n) for level, n in rows}

    def tiles(self, level: int, first: int, end: int) -> list[Tile]:
        """The stored tiles ``first <= index < end`` of ``level``, in order."""
        rows = self._query(
            "SELECT level, idx, hashes, root, first_position, last_position FROM {tiles} "
            "WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, first, end),
        )
        return [
            Tile(int(a), int(b), bytes(c), bytes(d), int(e), int(f)) for a, b, c, d, e, f in rows
        ]

    def roots(self, level: int, first: int, end: int) -> list[bytes]:
        rows = self._query(
            "SELECT root FROM {tiles} WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, first, end),
        )
        return [bytes(r[0]) for r in rows]

    def fetch(self, whole: list[tuple[int, int]], roots: list[tuple[int, int, int]]) -> list[Tile]:
        """In one query: the tiles ``whole`` names (level, index), and the tiles of the
        ranges ``roots`` names (level, first, end) without their hashes (``hashes`` empty):
        what the proofs of one case need, in one round trip."""
        parts: list[str] = []
        parameters: list[Any] = []
        levels: dict[int, list[int]] = {}
        for level, index in whole:
            levels.setdefault(level, []).append(index)
        for level, indexes in sorted(levels.items()):
            parts.append(
                "SELECT level, idx, hashes, root, first_position, last_position FROM {tiles} "
                f"WHERE level = ? AND idx IN {self._in_list}"
            )
            parameters += [level, self._listed(indexes)]
        for level, first, end in roots:
            parts.append(
                "SELECT level, idx, NULL, root, first_position, last_position FROM {tiles} "
                "WHERE level = ? AND idx >= ? AND idx < ?"
            )
            parameters += [level, first, end]
        if not parts:
            return []
        rows = self._query(" UNION ALL ".join(parts), tuple(parameters))
        return [
            Tile(int(a), int(b), b"" if c is None else bytes(c), bytes(d), int(e), int(f))
            for a, b, c, d, e, f in rows
        ]

    def summary(self) -> tuple[dict[int, int], int]:
        """Full tiles stored per level, and the last position the level-0 tiles cover
        (0: none), in one query."""
        rows = self._query("SELECT level, count(*), max(last_position) FROM {tiles} GROUP BY level")
        counts = {int(level): int(n) for level, n, _ in rows}
        last = next((int(p) for level, _, p in rows if int(level) == 0), 0)
        return counts, last

    def summary_and_edge(self, limit: int) -> tuple[dict[int, int], int, list[tuple[int, bytes]]]:
        """``summary`` and the first ``limit`` chain rows after the last level-0 tile, in
        one query (one round trip where a proof's whole cost is a few)."""
        # per level by the primary key's index (tiles are stored in order from index 0):
        # a count would read every tile row, 11,700 of them at 3 million events
        levels = " UNION ALL ".join(f"SELECT {level} AS level" for level in range(MAX_LEVELS))
        rows = self._query(
            "SELECT l.level, (SELECT max(t.idx) + 1 FROM {tiles} t WHERE t.level = l.level), "
            "(SELECT max(t.last_position) FROM {tiles} t WHERE t.level = l.level), NULL "
            f"FROM ({levels}) l "
            "UNION ALL SELECT -1, e.position, NULL, e.link FROM (SELECT position, {link} FROM "
            "{chain} WHERE position > (SELECT coalesce(max(last_position), 0) FROM {tiles} "
            "WHERE level = 0) ORDER BY position LIMIT ?) e",
            (limit,),
        )
        counts = {int(a): int(b) for a, b, _, _ in rows if int(a) >= 0 and b is not None}
        last = next((int(c) for a, _, c, _ in rows if int(a) == 0 and c is not None), 0)
        edge = sorted((int(b), bytes(d)) for a, b, _, d in rows if int(a) < 0)
        return counts, last, edge

    def leaf_offsets(self, positions: list[int]) -> dict[int, tuple[int, int]]:
        """For each of ``positions`` that a chain row and a stored level-0 tile cover: the
        tile's index and the position's offset among the tile's leaves (the chain rows
        from the tile's first position before it), in one query."""
        if not positions:
            return {}
        rows = self._query(
            "SELECT c.position, t.idx, (SELECT count(*) FROM {chain} b "
            "WHERE b.position >= t.first_position AND b.position < c.position) "
            "FROM {chain} c JOIN {tiles} t ON t.level = 0 AND t.idx = ("
            "SELECT u.idx FROM {tiles} u WHERE u.level = 0 AND u.last_position >= c.position "
            "ORDER BY u.last_position LIMIT 1) "
            f"WHERE c.position IN {self._in_list} AND t.first_position <= c.position",
            (self._listed(positions),),
        )
        return {int(p): (int(i), int(k)) for p, i, k in rows}

    def record_leaf_offsets(self, positions: list[int]) -> dict[int, tuple[int, int] | None]:
        """``leaf_offsets`` of every stored event of the records whose events stand at
        ``positions`` (``record_positions``), in one query; None for a position no stored
        level-0 tile covers (or no chain row holds)."""
        if not positions:
            return {}
        if self.sqlite:
            table, position = self.recorder.events_table_name, "rowid"
        else:
            schema = self.recorder.datastore.schema
            table = f'"{schema}"."{self.recorder.events_table_name}"'
            position = "notification_id"
        # a tile whose 256 leaves span 256 positions has no hole: the offset is a subtraction
        # (PostgreSQL's positions have holes only where a write was refused)
        rows = self._query(
            "SELECT r.p, t.idx, CASE WHEN t.last_position - t.first_position = 255 "
            "THEN r.p - t.first_position ELSE (SELECT count(*) FROM {chain} b "
            "WHERE b.position >= t.first_position AND b.position < r.p) END "
            f"FROM (SELECT {position} AS p FROM {table} WHERE originator_id IN (SELECT "
            f"originator_id FROM {table} WHERE {position} IN {self._in_list})) r "
            "LEFT JOIN {chain} c ON c.position = r.p "
            "LEFT JOIN {tiles} t ON c.position IS NOT NULL AND t.level = 0 AND t.idx = ("
            "SELECT u.idx FROM {tiles} u WHERE u.level = 0 AND u.last_position >= r.p "
            "ORDER BY u.last_position LIMIT 1) AND t.first_position <= r.p",
            (self._listed(positions),),
        )
        return {int(p): None if i is None else (int(i), int(k)) for p, i, k in rows}

    def tile_at_position(self, position: int) -> Tile | None:
        """The level-0 tile whose leaves cover ``position``, if one is stored."""
        rows = self._query(
            "SELECT level, idx, hashes, root, first_position, last_position FROM {tiles} "
            "WHERE level = 0 AND last_position >= ? ORDER BY last_position LIMIT 1",
            (position,),
        )
        if not rows or int(rows[0][4]) > position:
            return None
        a, b, c, d, e, f = rows[0]
        return Tile(int(a), int(b), bytes(c), bytes(d), int(e), int(f))

    def first_tile_from(self, position: int) -> int:
        """The index of the first level-0 tile whose leaves end at or after ``position``
        (the number of tiles if none does)."""
        rows = self._query(
            "SELECT idx FROM {tiles} WHERE level = 0 AND last_position >= ? "
            "ORDER BY last_position LIMIT 1",
            (position,),
        )
        return int(rows[0][0]) if rows else self.counts().get(0, 0)

    def links_after(self, position: int, limit: int) -> list[tuple[int, bytes]]:
        """Chain rows (position, link) after ``position``, in order."""
        rows = self._query(
            "SELECT position, {link} FROM {chain} WHERE position > ? ORDER BY position LIMIT ?",
            (position, limit),
        )
        return rows if self.sqlite else [(int(p), bytes(k)) for p, k in rows]

    def links_between(self, first: int, last: int) -> list[tuple[int, bytes]]:
        rows = self._query(
            "SELECT position, {link} FROM {chain} WHERE position >= ? AND position <= ? "
            "ORDER BY position",
            (first, last),
        )
        return [(int(p), bytes(k)) for p, k in rows]

    def event_at(self, position: int) -> tuple[UUID, int, str, bytes] | None:
        """The stored event at ``position`` (originator id, version, topic, state)."""
        if self.sqlite:
            table = self.recorder.events_table_name
            sql = (
                "SELECT originator_id, originator_version, topic, state FROM "
                f"{table} WHERE rowid = ?"
            )
        else:
            schema = self.recorder.datastore.schema
            table = f'"{schema}"."{self.recorder.events_table_name}"'
            sql = (
                "SELECT originator_id, originator_version, topic, state FROM "
                f"{table} WHERE notification_id = ?"
            )
        rows = self._query(sql, (position,))
        if not rows:
            return None
        oid, version, topic, state = rows[0]
        return (
            (oid if isinstance(oid, UUID) else UUID(str(oid))),
            int(version),
            str(topic),
            bytes(state),
        )

    def positions_of(self, originator: UUID) -> list[int]:
        """The positions of every stored event of one record, in order."""
        if self.sqlite:
            table = self.recorder.events_table_name
            rows = self._query(
                f"SELECT rowid FROM {table} WHERE originator_id = ? ORDER BY rowid",
                (originator.hex,),
            )
        else:
            schema = self.recorder.datastore.schema
            table = f'"{schema}"."{self.recorder.events_table_name}"'
            rows = self._query(
                f"SELECT notification_id FROM {table} WHERE originator_id = ? "
                "ORDER BY notification_id",
                (originator,),
            )
        return [int(r[0]) for r in rows]

    def count_links(self, after: int, upto: int | None = None) -> int:
        if upto is None:
            rows = self._query("SELECT count(*) FROM {chain} WHERE position > ?", (after,))
        else:
            rows = self._query(
                "SELECT count(*) FROM {chain} WHERE position > ? AND position <= ?",
                (after, upto),
            )
        return int(rows[0][0])

    def append(self, tiles: list[Tile]) -> None:
        """Store new full tiles (one already stored at that level and index stays as it is:
        verify holds every stored tile to the links)."""
        if not tiles:
            return
        conflict = "ON CONFLICT (level, idx) DO NOTHING"
        sql = f"INSERT INTO {self._tiles} VALUES (?, ?, ?, ?, ?, ?) {conflict}".replace(
            "?", self._mark
        )
        with self.recorder.datastore.transaction(commit=True) as c:
            if self.sqlite:
                c.executemany(sql, [tuple(t) for t in tiles])
            else:
                cursor = c.connection.cursor(row_factory=tuple_row)
                cursor.executemany(sql, [tuple(t) for t in tiles])
