"""Data keys: one per person (data subject) per record, wrapped by a key-encryption key.

A data key is identified by ``(scope, subject, generation)``: the scope is the record whose
events it protects (a case, one of its referrals...), the subject whose data it is, and the
generation counts erasures (a subject's data recorded after an erasure gets a new key). The
table ``<events table>_data_keys`` lives in the event store's database; it is the one table
there that changes: an erasure destroys a row's key material (``wrapped`` becomes NULL, a
trigger refuses ever to set it again) and rotation rewraps it under another KEK.

Writes are atomic with the events they protect: a new data key is inserted, and an erasure
applied, by the application recorder in the events' own transaction (``write_pending``), and a
key a write used is checked there to be still alive (another process may have erased it since
this one cached it): the write is then refused and nothing is recorded.

Unwrapped keys are cached for ``cache_seconds``: after an erasure by another process, reads
there may still open the erased values of *past* events for that long (the current state of an
erased record is blank at once everywhere: the erasure event itself blanks it).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.event_store.personal_data.kek import KeyEncryptionKeys

log = structlog.get_logger()


@dataclass(frozen=True, order=True)
class KeyRef:
    """Which data key: the record it protects, whose data, which generation."""

    scope: UUID
    subject: str
    generation: int

    def context(self) -> bytes:
        """What a wrapped key is bound to: unwrapping it under another row's name fails."""
        return (
            b"cbcm/data-key/v1\0"
            + self.scope.bytes
            + self.subject.encode()
            + b"\0"
            + self.generation.to_bytes(4, "big")
        )


class DataKeyErased(RuntimeError):
    """A write used a data key that was erased meanwhile (by another process): the record's
    personal data was erased since it was read. Nothing was recorded."""


class DataKeyMissing(RuntimeError):
    """A stored event names a data key the table does not have (the table was tampered
    with, or belongs to another store)."""


@dataclass
class KeyRow:
    generation: int
    kek_id: str | None
    wrapped: bytes | None


class ErasedByLog(Protocol):
    """What the log says was erased (``erasure_log.ErasureLog``)."""

    def erases(self, ref: KeyRef) -> bool: ...

    def invalidate(self) -> None: ...

    def refresh(self) -> None: ...

    def start(self) -> None: ...


class KeyTable(Protocol):
    """The data-key table of one database (SQLite, PostgreSQL or memory)."""

    def live(self, scope: UUID, subject: str) -> tuple[int, KeyRow | None]:
        """The highest generation of (scope, subject) (0: none) and its row if not erased."""
        ...

    def get(self, ref: KeyRef) -> KeyRow | None: ...

    def get_many(self, refs: list[KeyRef]) -> dict[KeyRef, KeyRow]:
        """The rows of those ``refs`` that exist (few queries, however many refs)."""
        ...

    def insert(self, cursor: Any, rows: list[tuple[KeyRef, str, bytes]]) -> None: ...

    def erased_among(self, cursor: Any, refs: list[KeyRef]) -> list[KeyRef]:
        """Which of ``refs`` are erased or missing, read in the writer's transaction."""
        ...

    def refuse(self, cursor: Any, message: str) -> None:
        """Abort the writer's transaction (raising)."""
        ...

    def erase(self, cursor: Any, targets: list[tuple[UUID, str]], at: str) -> None: ...

    def wrapped_under_other_than(self, kek_id: str, limit: int) -> list[tuple[KeyRef, KeyRow]]: ...

    def rewrap(self, rows: list[tuple[KeyRef, str, str, bytes]]) -> int:
        """Set (kek id, wrapped) of live rows still wrapped under the old id; how many."""
        ...

    def destroy(self, refs: list[KeyRef]) -> int:
        """Destroy the key material of these keys (outside any write); how many were live."""
        ...

    def counts(self) -> dict[str, int]:
        """Live keys per KEK id, and erased ones under ``""``."""
        ...

    def wrapped_under_any(self, kek_ids: tuple[str, ...]) -> tuple[bool, bool]:
        """Whether any live key exists, and whether one is wrapped under one of ``kek_ids``."""
        ...

    def any_live(self, scopes: tuple[UUID, ...]) -> bool:
        """Whether any of these records has a key that is not erased."""
        ...

    def all_rows(self, scopes: tuple[UUID, ...] | None = None) -> list[tuple[KeyRef, bool]]:
        """Every key (of these records), and whether it holds key material."""
        ...

    def register_ring(self, ring_id: str, cipher: str) -> tuple[str, str]:
        """Record the store's key ring and cipher (first caller wins); the recorded pair."""
        ...

    def after_erasure(self) -> None:
        """Best effort to leave no copy of destroyed key material in the database files."""
        ...


@dataclass
class _Pending:
    """What the mapper decided for the write under way in this thread."""

    created: dict[tuple[UUID, str], tuple[KeyRef, AESGCM, str, bytes]] = field(default_factory=dict)
    used: set[KeyRef] = field(default_factory=set)
    erasures: list[tuple[UUID, str]] = field(default_factory=list)
    refused: int = 0
    """Keys found erased in the writer's transaction (which was then aborted)."""

    def empty(self) -> bool:
        return not (self.created or self.used or self.erasures)


class DataKeys:
    """Data keys of one event store: created, found, cached, erased, rewrapped."""

    def __init__(
        self,
        table: KeyTable,
        kek: KeyEncryptionKeys,
        *,
        cache_seconds: float = 10.0,
        cache_size: int = 50_000,
        log: ErasedByLog | None = None,
    ) -> None:
        self.table = table
        self.kek = kek
        self.log = log
        """The log's word on erasure: a key it erased is never unwrapped, whatever the table
        holds (a row put back from an old copy)."""
        self.cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._live: OrderedDict[tuple[UUID, str], tuple[KeyRef, AESGCM, float]] = OrderedDict()
        self._opened: OrderedDict[KeyRef, tuple[AESGCM | None, float]] = OrderedDict()
        self._local = threading.local()
        self._told: set[KeyRef] = set()
        """Keys the log erased whose rows were found holding key material (alarmed once)."""

    def start(self) -> None:
        """At a process's start, once its writer key is attached: hold the erasure ledger
        to the log (``ErasureLog.start``)."""
        if self.log is not None:
            self.log.start()

    # ------------------------------------------------------------------ writing

    def _pending(self) -> _Pending:
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = _Pending()
        return pending

    def for_write(
        self, scope: UUID, subject: str, *, new_scope: bool = False
    ) -> tuple[KeyRef, AESGCM]:
        """The key new personal data of ``subject`` in ``scope`` is sealed with (a new one
        if there is none alive; it is stored with the write). ``new_scope``: the record is
        being created, so it has no key yet (keys are only ever stored with its events)."""
        pending = self._pending()
        made = pending.created.get((scope, subject))
        if made is not None:
            return made[0], made[1]
        now = time.monotonic()
        with self._lock:
            cached = self._live.get((scope, subject))
        if cached is not None and now - cached[2] < self.cache_seconds:
            pending.used.add(cached[0])
            return cached[0], cached[1]
        generation, row = (0, None) if new_scope else self.table.live(scope, subject)
        if row is not None and row.wrapped is not None and row.kek_id is not None:
            ref = KeyRef(scope, subject, generation)
            if not self._erased_by_log(ref):
                aes = AESGCM(self.kek.unwrap(row.kek_id, row.wrapped, ref.context()))
                self._remember_live(ref, aes, now)
                pending.used.add(ref)
                return ref, aes
        ref = KeyRef(scope, subject, generation + 1)
        raw = secrets.token_bytes(32)
        kek_id, wrapped = self.kek.wrap(raw, ref.context())
        aes = AESGCM(raw)
        pending.created[(scope, subject)] = (ref, aes, kek_id, wrapped)
        return ref, aes

    def erase_with_write(self, targets: Iterable[tuple[UUID, str]]) -> None:
        """Destroy the keys of these (scope, subject) in the write under way."""
        self._pending().erasures.extend(targets)

    def write_pending(self, cursor: Any, now: str) -> None:
        """In the events' transaction: store new keys, check used ones, apply erasures."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        if pending is None or pending.empty():
            return
        if pending.used:
            stale = self.table.erased_among(cursor, sorted(pending.used))
            if stale:
                self._forget(ref for ref in stale)
                pending.refused = len(stale)
                self.table.refuse(
                    cursor, "a data key this write used was erased meanwhile: nothing recorded"
                )
                raise DataKeyErased(f"{len(stale)} data key(s) erased since they were read")
        if pending.created:
            self.table.insert(
                cursor,
                [(ref, kek_id, wrapped) for ref, _aes, kek_id, wrapped in pending.created.values()],
            )
        if pending.erasures:
            self.table.erase(cursor, sorted(set(pending.erasures)), now)

    def committed(self) -> bool:
        """After the events' transaction committed: the new keys are usable, erased ones
        forgotten. Whether the write erased anything."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        self._local.pending = None
        if pending is None:
            return False
        now = time.monotonic()
        for ref, aes, _kek_id, _wrapped in pending.created.values():
            self._remember_live(ref, aes, now)
            self._remember_opened(ref, aes, now)
        if pending.erasures:
            if self.log is not None:
                self.log.invalidate()
                try:  # into the erasure ledger now, not at the next read (ADR 23)
                    self.log.refresh()
                except Exception:  # the next read or start adds it; the write stands
                    log.exception("personal_data.erasure_ledger_deferred")
            erased = set(pending.erasures)
            with self._lock:
                for key in [k for k in self._live if k in erased]:
                    del self._live[key]
                for ref in [r for r in self._opened if (r.scope, r.subject) in erased]:
                    del self._opened[ref]
            self.table.after_erasure()
            return True
        return False

    def discarded(self) -> int:
        """After the events' transaction failed: nothing it decided happened. How many keys
        it found erased (the failure's cause, if not zero)."""
        pending: _Pending | None = getattr(self._local, "pending", None)
        self._local.pending = None
        return 0 if pending is None else pending.refused

    # ------------------------------------------------------------------ reading

    def for_read(self, ref: KeyRef) -> AESGCM | None:
        """The key that opens what ``ref`` sealed; ``None``: it was erased."""
        now = time.monotonic()
        with self._lock:
            cached = self._opened.get(ref)
        if cached is not None and now - cached[1] < self.cache_seconds:
            return cached[0]
        made = getattr(self._local, "pending", None)
        if made is not None:
            created = made.created.get((ref.scope, ref.subject))
            if created is not None and created[0] == ref:
                opened: AESGCM = created[1]
                return opened
        row = self.table.get(ref)
        if row is None:
            raise DataKeyMissing(
                f"no data key {ref.subject} generation {ref.generation} of {ref.scope}"
            )
        aes = None
        if row.wrapped is not None and row.kek_id is not None and not self._erased_by_log(ref):
            aes = AESGCM(self.kek.unwrap(row.kek_id, row.wrapped, ref.context()))
        self._remember_opened(ref, aes, now)
        return aes

    def prefetch(self, refs: Iterable[KeyRef]) -> None:
        """Open the keys of ``refs`` not cached, reading their rows in a few queries rather
        than one each (a reader about to open many records' fields: the relay's backlog).
        What ``for_read`` then finds is exactly what it would have read itself: a missing
        row is left for it to report, an erased one (or one the log erased) cached as
        erased."""
        now = time.monotonic()
        with self._lock:
            wanted = sorted(
                {
                    ref
                    for ref in refs
                    if (cached := self._opened.get(ref)) is None
                    or now - cached[1] >= self.cache_seconds
                }
            )
        if not wanted:
            return
        rows = self.table.get_many(wanted)
        for ref in wanted:
            row = rows.get(ref)
            if row is None:
                continue
            aes = None
            if row.wrapped is not None and row.kek_id is not None and not self._erased_by_log(ref):
                aes = AESGCM(self.kek.unwrap(row.kek_id, row.wrapped, ref.context()))
            self._remember_opened(ref, aes, now)

    def _erased_by_log(self, ref: KeyRef) -> bool:
        """Whether the log erased ``ref`` although its row holds key material: the row came
        back (from a copy taken before the erasure). Never unwrapped; an alarm."""
        if self.log is None or not self.log.erases(ref):
            return False
        with self._lock:
            told = ref in self._told
            self._told.add(ref)
        if told:  # once per key, not at every expiry of the cache
            return True
        log.error(
            "personal_data.erased_key_present",
            record=str(ref.scope),
            subject=ref.subject,
            generation=ref.generation,
            detail="the log erased this data key but its row holds key material: not used",
        )
        return True

    # ------------------------------------------------------------------ rotation

    def rewrap_all(self, batch: int = 500) -> int:
        """Rewrap every live data key under the active KEK (events are not touched); how
        many were rewrapped. A key the log erased whose row holds key material (put back
        from a copy) is destroyed instead, with an alarm: a rotation never carries an erased
        key over to the new KEK."""
        active = self.kek.active_id
        done = 0
        while True:
            rows = self.table.wrapped_under_other_than(active, batch)
            if not rows:
                return done
            erased = [ref for ref, _row in rows if self.log is not None and self.log.erases(ref)]
            for ref in erased:
                log.error(
                    "personal_data.erased_key_destroyed",
                    record=str(ref.scope),
                    subject=ref.subject,
                    generation=ref.generation,
                    detail="the log erased this data key but its row held key material: "
                    "destroyed by the rotation, not rewrapped",
                )
            if erased:
                self.table.destroy(erased)
            changes = []
            for ref, row in rows:
                if ref in erased:
                    continue
                assert row.kek_id is not None and row.wrapped is not None
                raw = self.kek.unwrap(row.kek_id, row.wrapped, ref.context())
                kek_id, wrapped = self.kek.wrap(raw, ref.context())
                changes.append((ref, row.kek_id, kek_id, wrapped))
            done += self.table.rewrap(changes)

    # ------------------------------------------------------------------ cache

    def _remember_live(self, ref: KeyRef, aes: AESGCM, now: float) -> None:
        with self._lock:
            key = (ref.scope, ref.subject)
            self._live[key] = (ref, aes, now)
            self._live.move_to_end(key)
            if len(self._live) > self._cache_size:
                self._live.popitem(last=False)

    def _remember_opened(self, ref: KeyRef, aes: AESGCM | None, now: float) -> None:
        with self._lock:
            self._opened[ref] = (aes, now)
            self._opened.move_to_end(ref)
            if len(self._opened) > self._cache_size:
                self._opened.popitem(last=False)

    def forget_scope(self, scope: UUID) -> None:
        """Drop what is cached of ``scope``'s keys: the next read asks the table (for a read
        that must see an erasure made by another process at once)."""
        with self._lock:
            for ref in [r for r in self._opened if r.scope == scope]:
                del self._opened[ref]
            for key in [k for k in self._live if k[0] == scope]:
                del self._live[key]

    def _forget(self, refs: Iterable[KeyRef]) -> None:
        with self._lock:
            for ref in refs:
                self._live.pop((ref.scope, ref.subject), None)
                self._opened.pop(ref, None)
