"""Custody of the event log beyond the hash chain (issue 15, ADR 14).

- **Writer marks.** Every commit of events carries a mark: an HMAC-SHA256, under a *writer
  key* that the application's processes hold (``CBCM_WRITER_KEY_FILE``) and the database
  does not, over the commit's first and last positions and the chain link of its last
  event. The link covers every event before it, so a mark vouches for the whole commit and
  its history. Someone holding the INSERT and SELECT grants can append an event with a
  correct link, but not its mark. Marks are kept in ``<events table>_writer`` (position =
  the commit's last, first position, mac), written in the events' own transaction.
- **The custody record** ``<events table>_custody`` (name, value, position), written once
  per name and never changed: ``writer:<key id>`` at the position from which that writer
  key marks every commit (entries before it, written before signing existed, are covered by
  the chain and the checkpoints only), and ``store``, a random nonce drawn with a new
  store's first event, which makes its id unique (``services.event_store.store_id``).

Both tables refuse UPDATE and DELETE by trigger, like the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Composed, Identifier

from services.event_store import reads
from services.event_store.key_files import create_random_key, fsync_dir

WRITER_DOMAIN = b"cbcm/writer/v1\0"
WRITER_DOMAIN_V2 = b"cbcm/writer/v2\0"
MARK_V2 = b"\x02"
"""The first byte of a version-2 mark (33 bytes; a version-1 mark is 32)."""
STORE_NONCE = "store"
"""The custody record's name of a store's random nonce."""
WRITER_PREFIX = "writer:"

START_DOMAIN = b"cbcm/writer-start/v1\0"
HANDOVER_DOMAIN = b"cbcm/writer-handover/v1\0"
RETIRED_DIR = "writer-retired"
"""Beside the writer key: the keys it replaced, one file each (``<key id>.key``), kept so
that marks made before a rotation can still be checked (ADR 26)."""

_SPAN = struct.Struct(">qq")
_POSITION = struct.Struct(">q")


class WriterKeyError(RuntimeError):
    """The writer key is missing, malformed, or not the one this store's entries are marked
    with."""


def writer_table(events_table: str) -> str:
    return f"{events_table}_writer"


def custody_table(events_table: str) -> str:
    return f"{events_table}_custody"


@dataclass(frozen=True)
class WriterKey:
    """The secret the application marks each commit with (an HMAC-SHA256 key)."""

    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """A name for the key that tells nothing of it (16 hex characters)."""
        return hashlib.sha256(b"cbcm/writer-key-id/v1\0" + self.secret).hexdigest()[:16]

    def mark(self, first: int, last: int, link: bytes, store: str | None = None) -> bytes:
        """The mark of a commit of positions ``first`` to ``last`` whose last link is
        ``link``, in the store ``store`` (version 2: a mark of one store does not verify in
        another sharing the key); without ``store``, a version-1 mark (as written before)."""
        if store is None:
            return hmac.digest(
                self.secret, WRITER_DOMAIN + _SPAN.pack(first, last) + link, "sha256"
            )
        message = WRITER_DOMAIN_V2 + store.encode() + b"\0" + _SPAN.pack(first, last) + link
        return MARK_V2 + hmac.digest(self.secret, message, "sha256")

    def holds(
        self, first: int, last: int, link: bytes, mac: bytes, store: str | None, *, v1: bool
    ) -> bool:
        """Whether ``mac`` marks this commit of ``store``: a version-2 mark, or, where ``v1``
        (no version-2 mark before it), one written before marks named their store."""
        if len(mac) == len(MARK_V2) + 32 and mac.startswith(MARK_V2):
            return store is not None and hmac.compare_digest(
                self.mark(first, last, link, store), mac
            )
        return v1 and hmac.compare_digest(self.mark(first, last, link), mac)

    def seal_start(self, start: int, store: str) -> str:
        """The seal of this key's custody record: from ``start`` it marks every commit of
        the store ``store`` (hex). The owner of the tables cannot move the record without
        the key."""
        message = (
            START_DOMAIN + self.key_id.encode() + b"\0" + _POSITION.pack(start) + store.encode()
        )
        return hmac.digest(self.secret, message, "sha256").hex()

    def handover(self, successor: str, store: str) -> str:
        """This key's word that the key ``successor`` (a key id) takes over marking the
        store ``store`` from it (hex): carried by the rotation event, checked by verify."""
        message = (
            HANDOVER_DOMAIN
            + store.encode()
            + b"\0"
            + self.key_id.encode()
            + b"\0"
            + successor.encode()
        )
        return hmac.digest(self.secret, message, "sha256").hex()

    def start_value(self, start: int, store: str) -> str:
        """The custody record's value for this key starting at ``start`` in ``store``."""
        return f"{self.key_id}:{self.seal_start(start, store)}"


def load_writer_key(path: Path, *, create: bool) -> WriterKey:
    """The writer key in ``path`` (32 random bytes, base64); made (0600) when ``create`` and
    missing."""
    if create and not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            create_random_key(path)  # whole or not at all: no process reads it half made
        except OSError as e:
            raise WriterKeyError(f"cannot create the writer key {path}: {e.strerror}") from None
    try:
        raw = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as e:
        raise WriterKeyError(
            f"the writer key {path} is unreadable ({type(e).__name__}): set "
            "CBCM_WRITER_KEY_FILE to the network's writer key"
        ) from None
    if len(raw) != 32:
        raise WriterKeyError(f"the writer key {path} is not 32 bytes (base64)")
    return WriterKey(raw)


def _write_key(path: Path, key: WriterKey, mode: int) -> None:
    """Write ``key`` to ``path`` whole or not at all (a staged file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key.secret).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(staged, mode)
    os.replace(staged, path)
    fsync_dir(path.parent)


def staged_key_path(path: Path) -> Path:
    """Where a rotation stages the new writer key before the store records it."""
    return path.with_name(path.name + ".next")


def stage_key(path: Path, key: WriterKey) -> None:
    """Keep the new key on disk before the store names it (a crash then loses nothing)."""
    _write_key(staged_key_path(path), key, 0o600)


def install_key(path: Path, new: WriterKey, old: WriterKey) -> None:
    """Put ``new`` in the writer key file and ``old`` among the retired keys beside it
    (read-only), the retired one first: at no moment is a key in neither place."""
    _write_key(path.parent / RETIRED_DIR / f"{old.key_id}.key", old, 0o400)
    _write_key(path, new, 0o600)
    staged_key_path(path).unlink(missing_ok=True)


def retired_keys(path: Path) -> dict[str, WriterKey]:
    """The retired writer keys kept beside the writer key ``path`` (key id -> key); a file
    that does not hold a key, or whose name is not its key's id, is left out."""
    found: dict[str, WriterKey] = {}
    directory = path.parent / RETIRED_DIR
    if not directory.is_dir():
        return found
    for file in sorted(directory.glob("*.key")):
        try:
            key = load_writer_key(file, create=False)
        except WriterKeyError:
            continue
        if file.stem == key.key_id:
            found[key.key_id] = key
    return found


# --------------------------------------------------------------------------------- tables


def sqlite_statements(events_table: str, refusal: str) -> list[str]:
    w, k = writer_table(events_table), custody_table(events_table)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {w} (position INTEGER PRIMARY KEY, "
        "first_position INTEGER NOT NULL, mac BLOB NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {k} (name TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "position INTEGER NOT NULL)",
    ]
    for table, taken in ((w, "position = NEW.position"), (k, "name = NEW.name")):
        for action in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                f"BEFORE {action} ON {table} BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
            )
        statements.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "  # noqa: S608
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {taken}) "
            f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        )
    return statements


def postgres_statements(schema: str, events_table: str) -> list[Composed]:
    s = Identifier(schema)
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (position bigint PRIMARY KEY, "
            "first_position bigint NOT NULL, mac bytea NOT NULL)"
        ).format(s, Identifier(writer_table(events_table))),
        SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (name text PRIMARY KEY, value text NOT NULL, "
            "position bigint NOT NULL)"
        ).format(s, Identifier(custody_table(events_table))),
    ]


# --------------------------------------------------------------------------------- reading


def _sqlite(recorder: Any) -> bool:
    return isinstance(recorder, SQLiteApplicationRecorder)


def _select(
    recorder: Any, statement: LiteralString, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """Rows of ``statement`` as tuples, on either database. ``{writer}``, ``{custody}`` and
    ``{chain}`` name this store's tables; ``%s`` marks a parameter."""
    events = recorder.events_table_name
    names = {
        "writer": writer_table(events),
        "custody": custody_table(events),
        "chain": f"{events}_chain",
    }
    if _sqlite(recorder):
        # a mark's MAC and a chain row's link as bytes, whatever type a DBA stored them as
        blobs = {"mac": "CAST(m.mac AS BLOB)", "link": "CAST(c.link AS BLOB)"}
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(statement.format(**names, **blobs).replace("%s", "?"), params)
            return [tuple(r) for r in c.fetchall()]
    schema = Identifier(recorder.datastore.schema)
    query = SQL(statement).format(
        **{k: SQL("{}.{}").format(schema, Identifier(v)) for k, v in names.items()},
        mac=SQL("m.mac"),
        link=SQL("c.link"),
    )
    with reads.one_statement(recorder.datastore) as curs:
        curs.execute(query, params)
        return [tuple(r.values()) for r in curs.fetchall()]


def custody_rows(recorder: Any) -> dict[str, tuple[str, int]]:
    """The custody record: name -> (value, position)."""
    rows = _select(recorder, "SELECT name, value, position FROM {custody}", ())
    return {str(n): (str(v), int(p)) for n, v, p in rows}


def store_nonce(recorder: Any) -> str | None:
    """The random part of the store's id (None: a store made before stores had one)."""
    found = custody_rows(recorder).get(STORE_NONCE)
    return None if found is None else found[0]


@dataclass(frozen=True)
class WriterRecord:
    """One writer key's custody record: from ``start`` it marks every commit (until the
    next record's start, when the network rotated to another key)."""

    start: int
    key_id: str
    value: str

    @property
    def sealed(self) -> bool:
        return ":" in self.value


def writer_records(recorder: Any) -> list[WriterRecord]:
    """Every writer key's record, in the order the keys took over (by start)."""
    return sorted(
        (
            WriterRecord(position, name.removeprefix(WRITER_PREFIX), value)
            for name, (value, position) in custody_rows(recorder).items()
            if name.startswith(WRITER_PREFIX)
        ),
        key=lambda r: (r.start, r.key_id),
    )


def writer_started(recorder: Any, key: WriterKey) -> int | None:
    """From which position ``key`` marks every commit (None: it never has)."""
    found = custody_rows(recorder).get(WRITER_PREFIX + key.key_id)
    return None if found is None else found[1]


NOT_STARTED = (
    "this store was written before writer marks existed and marks were never started on it: "
    "run `cbcm audit start-marks` once, as the operator, to have every commit from its head "
    "on marked (nothing is written until then)"
)


def start_problem(recorder: Any, key: WriterKey, store: str | None) -> str | None:
    """Why the custody record of ``key`` cannot be trusted (None: it can), for the store
    whose id is ``store``.

    - A store created with marks (it has a nonce) marks from position 1: a record naming
      a later start was moved (to pass events before it as written before marks).
    - A sealed record must verify under the key, for its start and this store.
    - No mark may lie before the start: a record moved past marks it kept."""
    rows = custody_rows(recorder)
    found = rows.get(WRITER_PREFIX + key.key_id)
    if found is None:
        return None
    value, start = found
    records = writer_records(recorder)
    if any(r.start < start for r in records):
        # a key the network rotated to (ADR 26): its record must be sealed for its start
        # (the rotation event's commit, which this key marks); the marks before it are the
        # earlier keys', which verify holds to them
        if ":" not in value or store is None:
            return (
                f"the record of writer key {key.key_id} (start {start}) follows another "
                "key's but carries no seal: it was not written by a rotation"
            )
        if not hmac.compare_digest(value.partition(":")[2], key.seal_start(start, store)):
            return (
                f"the custody record of writer key {key.key_id} (start {start}) does not "
                "verify under the key: it was changed or copied from another store"
            )
        return None
    if STORE_NONCE in rows and start != 1:
        return (
            f"the store was created with writer marks, but the record of writer key "
            f"{key.key_id} says they start at position {start}: the custody record was moved"
        )
    if ":" in value:
        seal = value.partition(":")[2]
        if store is None or not hmac.compare_digest(seal, key.seal_start(start, store)):
            return (
                f"the custody record of writer key {key.key_id} (start {start}) does not "
                "verify under the key: it was changed or copied from another store"
            )
    below = _select(recorder, "SELECT min(position) FROM {writer} WHERE position < %s", (start,))
    if below and below[0][0] is not None:
        return (
            f"a writer mark ends at position {int(below[0][0])}, before the start ({start}) "
            f"that the record of writer key {key.key_id} names: the custody record was moved"
        )
    return None


@dataclass(frozen=True)
class Mark:
    first: int
    last: int
    mac: bytes
    link: bytes | None
    """The chain's link at ``last`` (None: no link there)."""


def marks(recorder: Any, start: int, batch: int = 20_000) -> Iterator[Mark]:
    """The writer marks of commits ending at or after ``start``, in position order, each with
    the chain's link at its last position."""
    after = start - 1
    while True:
        rows = _select(
            recorder,
            "SELECT m.position, m.first_position, {mac}, {link} FROM {writer} m "
            "LEFT JOIN {chain} c ON c.position = m.position "
            "WHERE m.position > %s ORDER BY m.position LIMIT %s",
            (after, batch),
        )
        if not rows:
            return
        for last, first, mac, link in rows:
            yield Mark(int(first), int(last), bytes(mac), None if link is None else bytes(link))
        after = int(rows[-1][0])


def highest_mark(recorder: Any) -> int:
    """The last position a writer mark names (0: none)."""
    found = _select(recorder, "SELECT coalesce(max(position), 0) FROM {writer}", ())
    return int(found[0][0])


def mark_covering(recorder: Any, position: int) -> Mark | None:
    """The mark of the commit holding ``position`` (None: no mark covers it)."""
    rows = _select(
        recorder,
        "SELECT m.position, m.first_position, {mac}, {link} FROM {writer} m "
        "LEFT JOIN {chain} c ON c.position = m.position "
        "WHERE m.position >= %s ORDER BY m.position LIMIT 1",
        (position,),
    )
    if not rows:
        return None
    last, first, mac, link = rows[0]
    if int(first) > position:
        return None
    return Mark(int(first), int(last), bytes(mac), None if link is None else bytes(link))


def chained_positions(
    recorder: Any, start: int, stop: int | None = None, batch: int = 50_000
) -> Iterator[int]:
    """The positions the chain holds from ``start`` (to ``stop``), in order."""
    after = start - 1
    top = stop if stop is not None else 2**62
    while True:
        rows = _select(
            recorder,
            "SELECT position FROM {chain} WHERE position > %s AND position <= %s "
            "ORDER BY position LIMIT %s",
            (after, top, batch),
        )
        if not rows:
            return
        for (position,) in rows:
            yield int(position)
        after = int(rows[-1][0])


UNMARKED = "no writer mark: not written by a process holding the writer key"
BAD_MARK = "its commit's writer mark does not verify"
CUT = "its commit's writer mark names a last position the chain no longer holds"


def unmarked(
    recorder: Any, key: WriterKey, start: int, stop: int | None = None
) -> Iterator[tuple[int, str, Mark | None]]:
    """Each chained position from ``start`` (to ``stop``) that no valid mark of ``key``
    covers, with why (``UNMARKED``, ``BAD_MARK``, or ``CUT``: its commit's mark names a
    last position with no link, as when the log's tail was cut off) and the mark.

    The marks alone are read while they verify and follow one another (a gap between two
    is checked to hold no position); at the first that does not, every position from there
    is read and held to the marks."""
    store = _store_of(recorder)
    irregular = _first_irregular(recorder, key, store, start, stop)
    if irregular is not None:
        yield from _unmarked_exactly(recorder, key, store, irregular, stop)


def _store_of(recorder: Any) -> str | None:
    from services.event_store.store_id import store_id_of  # noqa: PLC0415 (it imports us)

    return store_id_of(recorder)


def _v2_before(recorder: Any, position: int) -> bool:
    """Whether a version-2 mark ends before ``position`` (then no version-1 mark may follow:
    a mark taken from before the change, or from another store, is not accepted after)."""
    found = _select(
        recorder,
        "SELECT 1 FROM {writer} WHERE position < %s AND length(mac) = %s LIMIT 1",
        (position, len(MARK_V2) + 32),
    )
    return bool(found)


def mark_valid(recorder: Any, key: WriterKey, mark: Mark, link: bytes) -> bool:
    """Whether ``mark`` verifies over ``link`` at its last position, in this store."""
    v1 = not _v2_before(recorder, mark.last)
    return key.holds(mark.first, mark.last, link, mark.mac, _store_of(recorder), v1=v1)


def _first_irregular(
    recorder: Any, key: WriterKey, store: str | None, start: int, stop: int | None
) -> int | None:
    """None if valid marks, one after another, cover every chained position from ``start``
    (to ``stop``); otherwise the position from which to look closely."""
    found = _select(
        recorder,
        "SELECT coalesce(max(position), 0) FROM {chain} WHERE position <= %s",
        (stop if stop is not None else 2**62,),
    )
    top = int(found[0][0])
    covered = start - 1
    v1 = not _v2_before(recorder, start)
    # every chained position from ``start`` up to ``covered`` lies in a valid mark
    for mark in marks(recorder, start):
        if covered >= top:
            return None
        if not _valid(key, mark, store, v1):
            return covered + 1
        v1 = v1 and len(mark.mac) == 32
        if mark.first <= covered and covered >= start:
            return covered + 1  # marks never overlap: look closely
        if mark.first > covered + 1 and _chained_between(recorder, covered + 1, mark.first - 1):
            return covered + 1
        covered = mark.last
    return None if covered >= top else covered + 1


def _chained_between(recorder: Any, first: int, last: int) -> bool:
    found = _select(
        recorder,
        "SELECT 1 FROM {chain} WHERE position >= %s AND position <= %s LIMIT 1",
        (first, last),
    )
    return bool(found)


def _unmarked_exactly(
    recorder: Any, key: WriterKey, store: str | None, start: int, stop: int | None
) -> Iterator[tuple[int, str, Mark | None]]:
    mark_iter = marks(recorder, start)
    v1 = not _v2_before(recorder, start)
    current: Mark | None = next(mark_iter, None)
    valid = current is not None and _valid(key, current, store, v1)
    for position in chained_positions(recorder, start, stop):
        while current is not None and current.last < position:
            v1 = v1 and len(current.mac) == 32
            current = next(mark_iter, None)
            valid = current is not None and _valid(key, current, store, v1)
        if current is not None and current.first <= position:
            if not valid:
                yield position, (BAD_MARK if current.link is not None else CUT), current
            continue
        yield position, UNMARKED, None


def _valid(key: WriterKey, mark: Mark, store: str | None, v1: bool) -> bool:
    return (
        mark.link is not None
        and mark.first <= mark.last
        and key.holds(mark.first, mark.last, mark.link, mark.mac, store, v1=v1)
    )
