"""The witness (issues #5 and #15): pins the network's log, keeps and cosigns every checkpoint
that extends it, and raises the alarm on any other.

Any agency can run one (``cbcm audit witness``). It reads the ``CBCM_AUDIT`` stream through a
durable pull consumer ``cbcm-witness-<name>`` and keeps what it accepts in its own SQLite file
(its *book*, default ``checkpoints.sqlite3`` in ``CBCM_WITNESS_DIR``, never the data dir):

- a checkpoint whose chain signature does not verify with the network's public key is refused
  and logged (``audit.checkpoint_forged``, error); a message that is no checkpoint at all is
  refused too (``audit.checkpoint_malformed``); one that is not a signed note of the pinned
  log (no note, another origin, another key) is refused (``audit.checkpoint_unprovable``);
- the log's tree (issue #15): a checkpoint is kept only when its tree extends the tree held,
  by a valid RFC 6962 consistency proof from the size held (the first one is trusted on first
  use). Then the witness cosigns it (C2SP tlog-cosignature v1), keeps the cosigned note in
  ``tree_heads`` and publishes the cosignature on ``cbcm.v1.audit.cosignature``. Otherwise it
  is an alarm, recorded in ``alarms``, logged at error level, never kept or cosigned: another
  root for a size held (``audit.checkpoint_contradiction``), a smaller tree signed anew
  (``audit.checkpoint_head_moved_back``), a larger tree no proof links to the one held, as a
  fork or a replacement store makes (``audit.checkpoint_inconsistent``);
- the same checkpoint delivered again is a repeat: nothing changes; the chain part of a kept
  checkpoint (store, position, link) is kept too, and a chain checkpoint contradicting one held
  is recorded in ``contradictions``. No table can be updated or deleted (triggers).

Messages are acked only after the SQLite commit, which also records the last stream sequence
handled; on start the consumer is re-created right after that sequence if it does not stand
there (a book restored or copied, a stream re-created), so no checkpoint is skipped.
:class:`WitnessBook` is also the library ``cbcm audit verify`` reads checkpoints from.
"""

# Table names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SUBJECT,
    COSIGNATURE_SUBJECT,
    AuditCheckpointV1,
    AuditCosignatureV1,
    agency_cosignature_subject,
    decode_checkpoint,
    encode_cosignature,
    rfc3339_utc,
)
from services.audit.checkpoints import verify_checkpoint
from services.audit.keys import (
    LogIdentity,
    configured_origin,
    key_id,
    load_log_origin,
    load_public_key,
    load_witness_key,
    witness_dir,
    witness_vkey,
)
from services.audit.merkle import ProofError, verify_consistency
from services.audit.metrics import witness_metrics
from services.audit.note import (
    NoteError,
    cosign,
    format_note,
    open_checkpoint,
    parse_note,
)
from services.nats.client import (
    jetstream_options,
    nats_connect_options,
    nats_servers,
    quiet_errors,
    unless_stopped,
)
from services.nats.config import NETWORK_WITNESS, valid_witness_name, witness_consumer
from services.runtime.backoff import Backoff
from services.settings import Settings

__all__ = [
    "Contradiction",
    "Outcome",
    "Witness",
    "WitnessBook",
    "durable_name",
    "run_witness",
    "valid_witness_name",
    "witness_book_path",
]

log = structlog.get_logger()

DEFAULT_NAME: Final = NETWORK_WITNESS
ACK_WAIT: Final = 30.0
FETCH_TIMEOUT: Final = 1.0
MAX_BACKOFF: Final = 5.0

durable_name = witness_consumer


def witness_book_path(settings: Settings, origin: str | None = None) -> Path:
    """The witness's book: ``<witness dir>/checkpoints.sqlite3``, outside the data dir
    (``services.audit.keys.witness_dir``; ``origin``: the log's, default the settings')."""
    return witness_dir(settings, origin) / "checkpoints.sqlite3"


# ------------------------------------------------------------------------------ the book


class Outcome(StrEnum):
    """What recording one checkpoint did."""

    RECORDED = "recorded"
    """New: now held."""
    REPEATED = "repeated"
    """The same store, position and link was already held: nothing changed."""
    CONTRADICTION = "contradiction"
    """Another link was held for that store and position: the alarm."""
    MOVED_BACK = "moved_back"
    """A smaller tree than the one held (or, for a checkpoint without a tree, a checkpoint
    signed earlier at a later position): the log's head moved back, its tail was cut off.
    The alarm too."""
    INCONSISTENT = "inconsistent"
    """A larger tree that no valid consistency proof links to the tree held: a fork, another
    store, or a rewritten history. The alarm; refused, never cosigned."""
    UNPROVABLE = "unprovable"
    """A checkpoint that is not a signed note of the pinned log (no note, another origin, a
    signature of another key). Refused and logged."""


ALARMS: Final = frozenset({Outcome.CONTRADICTION, Outcome.MOVED_BACK, Outcome.INCONSISTENT})


@dataclass(frozen=True)
class Contradiction:
    """Two validly signed checkpoints of one store and position with different links."""

    store: str
    position: int
    held: AuditCheckpointV1
    """The checkpoint the witness held first (and keeps)."""
    seen: AuditCheckpointV1
    """The one that contradicts it."""
    received_at: datetime


@dataclass(frozen=True)
class TreeHeadHeld:
    """A tree head of the log the witness accepted: its checkpoint note with the witness's
    cosignature, and the store and position the checkpoint named (for people, not proof)."""

    origin: str
    size: int
    root: bytes
    note: str
    store: str
    position: int


def _tree_head(row: Sequence[Any]) -> TreeHeadHeld:
    import base64  # noqa: PLC0415

    origin, size, root, note, store, position = row
    return TreeHeadHeld(
        str(origin), int(size), base64.b64decode(str(root)), str(note), str(store), int(position)
    )


@dataclass(frozen=True)
class Cosigner:
    """The witness's own identity: its name (a key name) and its Ed25519 cosigning key."""

    name: str
    key: Ed25519PrivateKey

    @property
    def vkey(self) -> str:
        return witness_vkey(self.name, self.key)


_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS checkpoints ("
    " store TEXT NOT NULL, position INTEGER NOT NULL, link TEXT NOT NULL,"
    " signed_at TEXT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL,"
    " received_at TEXT NOT NULL, PRIMARY KEY (store, position))",
    "CREATE TABLE IF NOT EXISTS contradictions ("
    " id INTEGER PRIMARY KEY, store TEXT NOT NULL, position INTEGER NOT NULL,"
    " held_link TEXT NOT NULL, link TEXT NOT NULL, signed_at TEXT NOT NULL,"
    " key_id TEXT NOT NULL, signature TEXT NOT NULL, received_at TEXT NOT NULL,"
    " UNIQUE (store, position, link))",
    "CREATE TABLE IF NOT EXISTS consumed (stream TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
    # issue #15: the log's tree heads, each with the witness's cosignature; and every alarm
    "CREATE TABLE IF NOT EXISTS tree_heads ("
    " origin TEXT NOT NULL, size INTEGER NOT NULL, root TEXT NOT NULL, note TEXT NOT NULL,"
    " store TEXT NOT NULL, position INTEGER NOT NULL, received_at TEXT NOT NULL,"
    " PRIMARY KEY (origin, size))",
    "CREATE TABLE IF NOT EXISTS alarms ("
    " id INTEGER PRIMARY KEY, kind TEXT NOT NULL, origin TEXT NOT NULL, size INTEGER,"
    " held_size INTEGER, store TEXT NOT NULL, position INTEGER NOT NULL,"
    " detail TEXT NOT NULL, received_at TEXT NOT NULL,"
    " UNIQUE (kind, origin, size, held_size, store, position))",
    *(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'a witness never changes or forgets a checkpoint'); END"
        for table in ("checkpoints", "contradictions", "tree_heads", "alarms")
        for action in ("UPDATE", "DELETE")
    ),
)

_COLUMNS: Final = "store, position, link, signed_at, key_id, signature"


def _checkpoint(row: Sequence[Any]) -> AuditCheckpointV1:
    store, position, link, signed_at, kid, signature = row[:6]
    return AuditCheckpointV1(
        store=str(store),
        position=int(position),
        link=str(link),
        signed_at=datetime.fromisoformat(str(signed_at)),
        key_id=str(kid),
        signature=str(signature),
    )


def _apply_schema(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _create(path: Path) -> None:
    """Make a new book at ``path`` with its tables: built under another name beside it, then
    linked into place, so no reader ever opens a book without tables. Another witness that
    made it first wins; nothing is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        db = sqlite3.connect(staged, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            _apply_schema(db)
        finally:
            db.close()  # the last connection: its WAL is checkpointed into the file
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
    finally:
        for leftover in (staged, *(Path(f"{staged}{s}") for s in ("-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


class WitnessBook:
    """The witness's SQLite file: every checkpoint held, and every contradiction seen.

    Open it with :meth:`open`; readers (``cbcm audit verify``) may open it while the witness
    writes (WAL). One connection, used by one thread at a time.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> WitnessBook:
        """Open (creating it and its tables unless ``readonly``) the book at ``path``.

        ``readonly`` on a missing file raises ``sqlite3.OperationalError``; on a book whose
        tables do not exist yet, it reads as empty. A new book appears at ``path`` with its
        tables already in it (made beside it, then linked into place).
        """
        path = Path(path)
        if not readonly and not path.exists():
            _create(path)
        if readonly:
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        if not readonly:
            try:
                _apply_schema(db)  # a book made by an older witness may miss a table
            except BaseException:
                db.close()
                raise
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> WitnessBook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------- reading

    def _select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """The rows of a query; none while the witness has not made its tables yet (a reader
        opened the file between its creation and its schema: "no checkpoints yet")."""
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as e:
            if str(e).startswith("no such table"):
                return []
            raise

    def checkpoints(self, store: str | None = None) -> list[AuditCheckpointV1]:
        """Every checkpoint held (of ``store``, or of every store), in position order."""
        if store is None:
            rows = self._select(f"SELECT {_COLUMNS} FROM checkpoints ORDER BY store, position")
        else:
            rows = self._select(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE store = ? ORDER BY position", (store,)
            )
        return [_checkpoint(row) for row in rows]

    def checkpoint(self, store: str, position: int) -> AuditCheckpointV1 | None:
        """The checkpoint held for ``store`` at ``position``, if any."""
        rows = self._select(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE store = ? AND position = ?",
            (store, position),
        )
        return _checkpoint(rows[0]) if rows else None

    def stores(self) -> list[str]:
        """The stores the book holds checkpoints of."""
        rows = self._select("SELECT DISTINCT store FROM checkpoints ORDER BY store")
        return [str(row[0]) for row in rows]

    def count(self) -> tuple[int, int]:
        """How many checkpoints the book holds, and how many contradictions and alarms
        (a tree that does not extend the one held) it records."""
        held = self._select("SELECT count(*) FROM checkpoints")
        contradicting = self._select(
            "SELECT (SELECT count(*) FROM contradictions) + (SELECT count(*) FROM alarms a"
            " WHERE a.kind IN ('moved_back', 'inconsistent') OR (a.kind = 'contradiction'"
            " AND NOT EXISTS (SELECT 1 FROM contradictions c WHERE c.store = a.store"
            " AND c.position = a.position)))"
        )
        return (
            int(held[0][0]) if held else 0,
            int(contradicting[0][0]) if contradicting else 0,
        )

    def contradictions(self, store: str | None = None) -> list[Contradiction]:
        """Every contradiction seen (of ``store``, or of every store), in the order seen."""
        where = "" if store is None else "WHERE x.store = ?"
        rows = self._select(
            "SELECT x.store, x.position, x.link, x.signed_at, x.key_id, x.signature,"
            f" x.received_at, {', '.join('c.' + c for c in _COLUMNS.split(', '))}"
            " FROM contradictions x JOIN checkpoints c"
            f" ON c.store = x.store AND c.position = x.position {where} ORDER BY x.id",
            () if store is None else (store,),
        )
        return [
            Contradiction(
                store=str(row[0]),
                position=int(row[1]),
                held=_checkpoint(row[7:]),
                seen=_checkpoint(row[:6]),
                received_at=datetime.fromisoformat(str(row[6])),
            )
            for row in rows
        ]

    def last_sequence(self, stream: str = AUDIT_STREAM) -> int:
        """The last stream sequence the witness handled (0: none)."""
        # a read-only book made before the table existed reads as none too
        rows = self._select("SELECT last_seq FROM consumed WHERE stream = ?", (stream,))
        return int(rows[0][0]) if rows else 0

    def tree_head(self, origin: str) -> TreeHeadHeld | None:
        """The largest tree head of the log ``origin`` the witness holds (and cosigned)."""
        rows = self._select(
            "SELECT origin, size, root, note, store, position FROM tree_heads WHERE origin = ?"
            " ORDER BY size DESC LIMIT 1",
            (origin,),
        )
        return _tree_head(rows[0]) if rows else None

    def tree_heads(self, origin: str | None = None) -> list[TreeHeadHeld]:
        """Every tree head held (of ``origin``), smallest first."""
        where, parameters = ("", ()) if origin is None else (" WHERE origin = ?", (origin,))
        rows = self._select(
            "SELECT origin, size, root, note, store, position FROM tree_heads"
            f"{where} ORDER BY origin, size",
            parameters,
        )
        return [_tree_head(row) for row in rows]

    def origins(self) -> list[str]:
        return [str(r[0]) for r in self._select("SELECT DISTINCT origin FROM tree_heads")]

    def alarms(self) -> list[dict[str, Any]]:
        """Every alarm raised, in order: kind, origin, sizes, store, position, detail."""
        rows = self._select(
            "SELECT kind, origin, size, held_size, store, position, detail, received_at"
            " FROM alarms ORDER BY id"
        )
        keys = ("kind", "origin", "size", "held_size", "store", "position", "detail", "at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -------------------------------------------------------------- writing

    def _signed_earlier_further(self, cp: AuditCheckpointV1) -> AuditCheckpointV1 | None:
        """A held checkpoint of the same store at a later position but signed before ``cp``:
        a head never moves back, unless the log lost its tail."""
        row = self._db.execute(
            "SELECT position FROM checkpoints WHERE store = ? AND position > ? AND signed_at < ?"
            " ORDER BY position DESC LIMIT 1",
            (cp.store, cp.position, rfc3339_utc(cp.signed_at)),
        ).fetchone()
        return None if row is None else self.checkpoint(cp.store, int(row[0]))

    def record(
        self,
        checkpoints: Iterable[AuditCheckpointV1],
        *,
        stream_seq: int | None = None,
        received_at: datetime | None = None,
        log: LogIdentity | None = None,
        cosigner: Cosigner | None = None,
    ) -> list[tuple[Outcome, AuditCheckpointV1 | None]]:
        """Keep ``checkpoints`` (their signatures already checked), in one transaction with
        the last stream sequence handled. For each: what happened, and the checkpoint held
        before it when it is a contradiction.

        With ``log`` (a witness), a checkpoint is first held to the log's tree
        (:meth:`_tree_rules`): only one whose tree extends the tree held, by a valid
        consistency proof, is kept and cosigned by ``cosigner``; any other is an alarm,
        recorded, and not kept."""
        at = rfc3339_utc(received_at or datetime.now(UTC))
        outcomes: list[tuple[Outcome, AuditCheckpointV1 | None]] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for cp in checkpoints:
                if log is not None:
                    verdict = self._tree_rules(cp, log, cosigner, at)
                    if verdict is not None:
                        held_cp = self.checkpoint(cp.store, cp.position)
                        if verdict is Outcome.CONTRADICTION and held_cp is not None:
                            self._contradiction(cp, held_cp, at)
                        outcomes.append((verdict, held_cp))
                        continue
                fields = (cp.store, cp.position, cp.link, rfc3339_utc(cp.signed_at))
                inserted = db.execute(
                    "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (store, position) DO NOTHING",
                    (*fields, cp.key_id, cp.signature, at),
                ).rowcount
                if inserted:
                    ahead = self._signed_earlier_further(cp)
                    if ahead is not None:
                        outcomes.append((Outcome.MOVED_BACK, ahead))
                    else:
                        outcomes.append((Outcome.RECORDED, None))
                    continue
                held = self.checkpoint(cp.store, cp.position)
                assert held is not None
                if held.link == cp.link:
                    outcomes.append((Outcome.REPEATED, None))
                    continue
                self._contradiction(cp, held, at)
                outcomes.append((Outcome.CONTRADICTION, held))
            if stream_seq is not None:
                db.execute(
                    "INSERT INTO consumed (stream, last_seq) VALUES (?, ?) ON CONFLICT (stream)"
                    " DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                    (AUDIT_STREAM, stream_seq),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcomes

    def _contradiction(self, cp: AuditCheckpointV1, held: AuditCheckpointV1, at: str) -> None:
        if held.link == cp.link:
            return
        self._db.execute(
            "INSERT INTO contradictions"
            " (store, position, held_link, link, signed_at, key_id, signature,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (store, position, link) DO NOTHING",
            (
                cp.store,
                cp.position,
                held.link,
                cp.link,
                rfc3339_utc(cp.signed_at),
                cp.key_id,
                cp.signature,
                at,
            ),
        )

    def _tree_rules(
        self, cp: AuditCheckpointV1, log: LogIdentity, cosigner: Cosigner | None, at: str
    ) -> Outcome | None:
        """None when ``cp`` extends the log's tree held (then its tree head is kept, with
        the cosignature); otherwise what it is (an alarm is recorded)."""
        import base64  # noqa: PLC0415

        def alarm(kind: Outcome, size: int | None, held: int | None, detail: str) -> Outcome:
            self._db.execute(
                "INSERT INTO alarms (kind, origin, size, held_size, store, position, detail,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (str(kind), log.origin, size, held, cp.store, cp.position, detail, at),
            )
            return kind

        if cp.note is None:
            return alarm(Outcome.UNPROVABLE, None, None, "no signed note of the log's tree")
        try:
            head, _ = open_checkpoint(cp.note, log.verifier)
        except NoteError as e:
            return alarm(Outcome.UNPROVABLE, None, None, str(e)[:200])
        held = self.tree_head(log.origin)
        if held is not None:
            held_size = held.size
            if head.size == held.size:
                if head.root == held.root:
                    return Outcome.REPEATED
                return alarm(
                    Outcome.CONTRADICTION,
                    head.size,
                    held_size,
                    "another root for a tree size the witness holds",
                )
            if head.size < held.size:
                same = self._select(
                    "SELECT root FROM tree_heads WHERE origin = ? AND size = ?",
                    (log.origin, head.size),
                )
                held_cp = self.checkpoint(cp.store, cp.position)
                if (
                    same
                    and base64.b64decode(str(same[0][0])) == head.root
                    and held_cp is not None
                    and held_cp.signed_at == cp.signed_at
                    and held_cp.link == cp.link
                ):
                    return Outcome.REPEATED  # the same checkpoint delivered again
                # a smaller tree signed anew, even one held before: the head moved back
                return alarm(
                    Outcome.MOVED_BACK,
                    head.size,
                    held_size,
                    f"a tree of {head.size} leaves after one of {held.size} was held",
                )
            proof = [base64.b64decode(h) for h in cp.consistency or []]
            try:
                if cp.proof_from != held.size:
                    raise ProofError(
                        f"the proof starts from {cp.proof_from}, the witness holds {held.size}"
                    )
                verify_consistency(held.size, head.size, held.root, head.root, proof)
            except ProofError as e:
                return alarm(Outcome.INCONSISTENT, head.size, held_size, str(e)[:200])
        note = cp.note
        if cosigner is not None:
            text, signatures = parse_note(cp.note)
            stamp = int(datetime.now(UTC).timestamp())
            note = format_note(
                text, [*signatures, cosign(text, cosigner.name, cosigner.key, stamp)]
            )
        self._db.execute(
            "INSERT INTO tree_heads VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                log.origin,
                head.size,
                base64.b64encode(head.root).decode(),
                note,
                cp.store,
                cp.position,
                at,
            ),
        )
        return None


# ------------------------------------------------------------------------------ consuming


class Witness:
    """Reads ``CBCM_AUDIT`` into a :class:`WitnessBook` through a durable consumer."""

    def __init__(
        self,
        book: WitnessBook,
        js: JetStreamContext,
        public_key: Ed25519PublicKey,
        *,
        name: str = DEFAULT_NAME,
        batch: int = 256,
        fetch_timeout: float = FETCH_TIMEOUT,
        log_identity: LogIdentity | None = None,
        cosigner: Cosigner | None = None,
        independent: bool = True,
        publish_core: Callable[[str, bytes], Awaitable[None]] | None = None,
        cosignature_subject: str = COSIGNATURE_SUBJECT,
    ) -> None:
        self._book = book
        self._publish_core = publish_core
        """An agency's witness publishes from its own account, where no JetStream answers:
        a plain publish on its own subject, which the services' account imports into
        ``CBCM_AUDIT``."""
        self._cosignature_subject = cosignature_subject
        self.log = log_identity or LogIdentity(configured_origin(public_key), public_key)
        """The log this witness pins: its origin and the network's key."""
        self.cosigner = cosigner
        self.independent = independent
        self._fetch_timeout = fetch_timeout
        self._js = js
        self._public_key = public_key
        self._key_id = key_id(public_key)
        self._durable = durable_name(name)
        self._batch = batch
        self.recorded = 0
        self.repeated = 0
        self.refused = 0
        self.contradictions = 0
        self._metrics = witness_metrics()

    @property
    def durable(self) -> str:
        return self._durable

    def check(self, raw: bytes, stream_seq: int | None = None) -> AuditCheckpointV1 | None:
        """The checkpoint in ``raw`` if it is one and its signature verifies; else None
        (refused, and logged at error level)."""
        try:
            checkpoint = decode_checkpoint(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.error("audit.checkpoint_malformed", stream_seq=stream_seq, error=str(e)[:200])
            return None
        if not verify_checkpoint(self._public_key, checkpoint):
            log.error(
                "audit.checkpoint_forged",
                store=checkpoint.store,
                position=checkpoint.position,
                link=checkpoint.link[:16],
                key_id=checkpoint.key_id,
                expected_key_id=self._key_id,
                stream_seq=stream_seq,
            )
            return None
        return checkpoint

    async def handle(self, msgs: Sequence[Msg]) -> list[Outcome | None]:
        """Check, record (one commit), then ack a batch. One entry per message: what
        recording did, or None for a refused message."""
        checked: list[AuditCheckpointV1 | None] = []
        last_seq: int | None = None
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            last_seq = seq if last_seq is None else max(last_seq, seq)
            checked.append(self.check(msg.data, seq))
        accepted = [cp for cp in checked if cp is not None]
        results = iter(
            await asyncio.to_thread(
                self._book.record,
                accepted,
                stream_seq=last_seq,
                log=self.log,
                cosigner=self.cosigner,
            )
        )
        outcomes: list[Outcome | None] = []
        metrics = self._metrics
        for cp in checked:
            if cp is None:
                self.refused += 1
                metrics.refused.inc()
                outcomes.append(None)
                continue
            outcome, held = next(results)
            outcomes.append(outcome)
            if outcome in (Outcome.RECORDED, Outcome.MOVED_BACK):
                metrics.held.inc()
            if outcome is Outcome.RECORDED:
                self.recorded += 1
                log.info(
                    "audit.checkpoint_witnessed",
                    store=cp.store,
                    position=cp.position,
                    link=cp.link[:16],
                    cosigned=self.cosigner is not None,
                )
                await self._publish_cosignature()
            elif outcome is Outcome.INCONSISTENT:
                self.contradictions += 1
                metrics.contradictions.labels(kind="inconsistent").inc()
                alarm = (await asyncio.to_thread(self._book.alarms))[-1]
                log.error(
                    "audit.checkpoint_inconsistent",
                    origin=self.log.origin,
                    store=cp.store,
                    position=cp.position,
                    size=alarm["size"],
                    held_size=alarm["held_size"],
                    why=alarm["detail"],
                )
            elif outcome is Outcome.UNPROVABLE:
                self.refused += 1
                metrics.refused.inc()
                alarm = (await asyncio.to_thread(self._book.alarms))[-1]
                log.error(
                    "audit.checkpoint_unprovable",
                    origin=self.log.origin,
                    store=cp.store,
                    position=cp.position,
                    why=alarm["detail"],
                )
            elif outcome is Outcome.REPEATED:
                self.repeated += 1
            elif outcome is Outcome.MOVED_BACK:
                self.contradictions += 1
                metrics.contradictions.labels(kind="head_moved_back").inc()
                tree = self._book.tree_head(self.log.origin)
                log.error(
                    "audit.checkpoint_head_moved_back",
                    store=cp.store,
                    position=cp.position,
                    held_position=None if held is None else held.position,
                    held_size=None if tree is None else tree.size,
                    seen_signed_at=rfc3339_utc(cp.signed_at),
                )
            else:
                self.contradictions += 1
                metrics.contradictions.labels(kind="link").inc()
                log.error(
                    "audit.checkpoint_contradiction",
                    store=cp.store,
                    position=cp.position,
                    held_link=None if held is None else held.link[:16],
                    seen_link=cp.link[:16],
                    seen_signed_at=rfc3339_utc(cp.signed_at),
                )
        if ALARMS.intersection(o for o in outcomes if o is not None):
            await self._count_book()
        for msg in msgs:
            await msg.ack()
        return outcomes

    async def _publish_cosignature(self) -> None:
        """Publish the cosigned checkpoint just kept (best effort: the book keeps it, and
        ``cbcm audit cosignatures`` prints them for anyone to fetch)."""
        if self.cosigner is None:
            return
        held = await asyncio.to_thread(self._book.tree_head, self.log.origin)
        if held is None:
            return
        message = AuditCosignatureV1(
            witness=self.cosigner.name, origin=held.origin, size=held.size, note=held.note
        )
        try:
            if self._publish_core is not None:
                await self._publish_core(self._cosignature_subject, encode_cosignature(message))
            else:
                await self._js.publish(
                    self._cosignature_subject,
                    encode_cosignature(message),
                    stream=AUDIT_STREAM,
                    timeout=2,
                )
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as e:
            log.warning("audit.cosignature_not_published", error=type(e).__name__)

    async def _count_book(self) -> None:
        held, contradicting = await asyncio.to_thread(self._book.count)
        self._metrics.held.set(held)
        self._metrics.contradictions_held.set(contradicting)

    async def _ensure_consumer(self) -> None:
        """Reuse the consumer if it stands where the book does; otherwise re-create it to
        deliver right after the book's last sequence. ``NotFoundError``: no stream yet."""
        js = self._js
        stream = await js.stream_info(AUDIT_STREAM)
        last_seq = await asyncio.to_thread(self._book.last_sequence)
        if last_seq > stream.state.last_seq:
            log.warning(
                "audit.witness_stream_reset", handled=last_seq, stream_last=stream.state.last_seq
            )
            last_seq = 0
        try:
            info = await js.consumer_info(AUDIT_STREAM, self._durable)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            if (
                info.num_ack_pending == 0
                and floor == last_seq
                and info.config.filter_subject == CHECKPOINT_SUBJECT
            ):
                return
            await js.delete_consumer(AUDIT_STREAM, self._durable)
            log.info("audit.witness_consumer_reset", consumer=self._durable, after_seq=last_seq)
        await js.add_consumer(
            AUDIT_STREAM,
            ConsumerConfig(
                durable_name=self._durable,
                description="cbcm audit witness",
                filter_subject=CHECKPOINT_SUBJECT,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if last_seq else DeliverPolicy.ALL,
                opt_start_seq=last_seq + 1 if last_seq else None,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_deliver=-1,
                max_ack_pending=self._batch * 4,
            ),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Witness until ``stop`` is set; NATS failures (or no stream yet) pause and retry."""
        backoff = Backoff(0.1, MAX_BACKOFF)
        await self._count_book()
        if not self.independent:
            # The network's own witness (cbcm serve) says so on every start, calmly; an
            # agency's witness that can read the log's key is misplaced: a warning.
            say = log.info if self._durable == durable_name(DEFAULT_NAME) else log.warning
            say(
                "audit.witness_not_independent",
                origin=self.log.origin,
                why="this witness runs beside the log it witnesses (cbcm serve): it catches "
                "mistakes, not an insider; other agencies must run witnesses of their own",
            )
        while not stop.is_set():
            try:
                await self._ensure_consumer()
                sub = await self._js.pull_subscribe_bind(durable=self._durable, stream=AUDIT_STREAM)
                log.info("audit.witness_consuming", consumer=self._durable)
                try:
                    while not stop.is_set():
                        try:
                            msgs = await sub.fetch(self._batch, timeout=self._fetch_timeout)
                        except (nats.errors.TimeoutError, TimeoutError):
                            # nothing to fetch: nats-py raises its own TimeoutError or, when
                            # the deadline passes between its two pull requests, asyncio's
                            continue
                        await self.handle(msgs)
                        backoff.reset()
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
            except nats.js.errors.NotFoundError:
                log.info("audit.witness_waiting_for_stream", stream=AUDIT_STREAM)
                await backoff.wait(stop)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as e:
                log.warning("audit.witness_paused", error=type(e).__name__, retry_in=backoff.delay)
                await backoff.wait(stop)
        log.info(
            "audit.witness_stopped",
            recorded=self.recorded,
            refused=self.refused,
            contradictions=self.contradictions,
        )


async def _connect(url: str, stop: asyncio.Event, options: dict[str, Any]) -> NatsClient | None:
    """Connect (the client retries on its own while NATS is down), or None once stopped."""
    return await unless_stopped(
        nats.connect(
            nats_servers(url),
            name="cbcm-audit-witness",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            error_cb=quiet_errors("audit.witness_nats_unreachable"),
            **options,
        ),
        stop,
    )


def cosigner_name(name: str) -> str:
    """The key name a witness cosigns under (c2sp.org/tlog-cosignature: a schema-less URL)."""
    return f"{name}.witness.cbcm.invalid"


def is_independent(settings: Settings, name: str) -> bool:
    """Whether this witness could vouch against the log's own operator: not the network's
    own witness, and unable to read the log's signing key (then it is beside the log)."""
    from services.audit.keys import audit_signing_key_path  # noqa: PLC0415

    key_file = settings.audit_signing_key_file or audit_signing_key_path(settings.data_dir)
    return name != DEFAULT_NAME and not os.access(key_file, os.R_OK)


async def run_witness(
    settings: Settings,
    stop: asyncio.Event,
    nats_url: str,
    *,
    db_path: Path | None = None,
    name: str = DEFAULT_NAME,
    identity: LogIdentity | None = None,
) -> None:
    """``cbcm audit witness``: keep every checkpoint of the pinned log until ``stop`` is set,
    cosigning each one whose tree extends the tree held.

    Raises ``AuditKeyError`` if a key cannot be used, ``ValueError`` for a bad name.
    """
    durable_name(name)  # checks the name before anything else
    if identity is None:
        identity = LogIdentity(
            load_log_origin(settings, create=name == DEFAULT_NAME), load_public_key(settings)
        )
    directory = witness_dir(settings, identity.origin)
    cosigner = Cosigner(cosigner_name(name), load_witness_key(directory))
    path = db_path or witness_book_path(settings, identity.origin)
    book = await asyncio.to_thread(WitnessBook.open, path)
    try:
        # an agency's witness: its credentials, its inbox prefix and JetStream API prefix
        nc = await _connect(nats_url, stop, nats_connect_options(settings, "audit-witness"))
        if nc is None:
            return
        try:
            log.info(
                "audit.witness_started",
                name=name,
                key_id=key_id(identity.public_key),
                log=identity.vkey,
                cosigner=cosigner.vkey,
                book=str(path),
            )
            js = nc.jetstream(**jetstream_options(settings))
            from_agency = settings.nats_js_api_prefix is not None

            async def publish_core(subject: str, data: bytes) -> None:
                await nc.publish(subject, data)
                await nc.flush(timeout=2)

            await Witness(
                book,
                js,
                identity.public_key,
                name=name,
                log_identity=identity,
                cosigner=cosigner,
                independent=is_independent(settings, name),
                publish_core=publish_core if from_agency else None,
                cosignature_subject=(
                    agency_cosignature_subject(name) if from_agency else COSIGNATURE_SUBJECT
                ),
            ).run(stop)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
    finally:
        await asyncio.to_thread(book.close)
