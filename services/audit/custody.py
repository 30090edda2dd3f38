"""Custody checks beyond the hash chain (issue 15, ADR 14), for ``cbcm audit verify``, the
case replay and the checkpoint publisher.

- **Writer marks.** Every position from the one the writer key's record names must lie in a
  commit whose mark verifies under the writer key (``services.event_store.custody``). A
  position that does not was not written by a process holding the key: an event appended
  by someone with the INSERT grant, with a correct link, is *forged* at its position.
  Positions before the record (written before marks existed) are covered by the chain and
  the checkpoints only; ``coverage`` says from where marks count.
- **The key table against the log.** A data key the log erased (``erasure_log``) that still
  holds key material (a row put back from an old copy), a key destroyed or missing without
  an erasure event: each is an *erasure* finding naming the record, the subject and the
  generation, never a value.
- **The checkpoint publisher** signs no further than the last position before the first
  unmarked one (``signable_head``).
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import Cipher
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from domain.custody import WriterKeyRotation, writer_key_rotation_id
from services.audit.verify import Damage, Finding
from services.event_store.chain import ChainRow, head, link_before, writer_problem
from services.event_store.custody import (
    CUT,
    NOT_STARTED,
    Mark,
    WriterKey,
    WriterRecord,
    highest_mark,
    unmarked,
    writer_records,
    writer_started,
)
from services.event_store.high_water import behind_high_water
from services.event_store.personal_data.data_keys import DataKeys, KeyRef
from services.event_store.personal_data.erasure_ledger import ErasureLedger
from services.event_store.personal_data.erasure_log import (
    ErasureLog,
    decoded,
    erasures,
    sealed_keys,
    select_events,
)
from services.event_store.store_id import store_id_of
from services.event_store.tiles import TileStore

log = structlog.get_logger()

ROTATED = get_topic(WriterKeyRotation.Rotated)

MAX_FINDINGS = 100
"""Positions named one by one before the rest are counted in one finding."""

SCAN_BATCH = 5000

SEALED_MARK = b'"_pd"'
"""In the stored state (without the whole-event cipher) of every event with sealed fields."""


@dataclass(frozen=True)
class Custody:
    """What the custody checks need of an application: its recorder, the writer key its
    processes mark commits with, its data keys and the whole-event cipher."""

    recorder: Any
    writer: WriterKey | None
    keys: DataKeys | None
    cipher: Cipher | None
    scopes: frozenset[UUID] | None = None
    """Hold only these records' keys to the log (a case's, for its replay)."""
    retired: Mapping[str, WriterKey] = field(default_factory=dict)
    """Retired writer keys held beside the key: they check the marks before their rotation
    (ADR 26). Without one, the marks of its range are not checked one by one; the next
    key's mark on the rotation commit still covers the chain before it."""

    @classmethod
    def of(cls, app: Any) -> Custody:
        recorder = app.recorder
        return cls(
            recorder,
            getattr(recorder, "writer", None),
            app.data_keys,
            app.mapper.cipher,
            retired=dict(getattr(recorder, "retired_writers", {})),
        )

    def only(self, scopes: Iterable[UUID]) -> Custody:
        return replace(self, scopes=frozenset(scopes))

    def findings(self, start: int = 1, stop: int | None = None) -> list[Finding]:
        return [
            *self.high_water_findings(),
            *self.writer_findings(start, stop),
            *self.key_findings(),
        ]

    def high_water_findings(self) -> list[Finding]:
        """The store behind the high-water mark the checkpoint publisher keeps beside the
        keys (rolled back, its tail cut or rewritten), ADR 23."""
        if self.scopes is not None:
            return []  # a replay: the whole store's verify names it
        behind = behind_high_water(self.recorder)
        if behind is None:
            return []
        kind = Damage.TRUNCATED if behind.truncated else Damage.CHANGED
        return [Finding(kind, behind.position, behind.detail)]

    # ------------------------------------------------------------------ writer marks

    def coverage(self) -> str:
        """From which position the writer's marks vouch for every commit, in words."""
        if self.writer is None:
            return "writer marks: not checked (no writer key)"
        started = writer_started(self.recorder, self.writer)
        if started is None:
            return (
                "writer marks: not started on this store (run `cbcm audit start-marks`); "
                "every position is covered by the chain and the checkpoints only"
            )
        earlier = [r for r in writer_records(self.recorder) if r.start < started]
        if earlier:
            held = [
                f"{r.key_id} from {r.start}"
                + ("" if r.key_id in self.retired else " (not held here: not checked one by one)")
                for r in earlier
            ]
            return (
                f"writer marks: every commit from position {started} (writer key "
                f"{self.writer.key_id}), before it retired writer keys {', '.join(held)}; "
                "each rotation is an event of the log"
            )
        if started <= 1:
            return f"writer marks: every commit (writer key {self.writer.key_id})"
        return (
            f"writer marks: every commit from position {started} (writer key "
            f"{self.writer.key_id}); positions before it were written before marks existed "
            "and are covered by the chain and the checkpoints only"
        )

    def writer_findings(self, start: int = 1, stop: int | None = None) -> list[Finding]:
        if self.writer is None:
            return []
        problem = writer_problem(self.recorder)
        if problem == NOT_STARTED:
            return []  # a store written before marks: the coverage line says so
        started = writer_started(self.recorder, self.writer)
        if started is None:
            return [
                Finding(
                    Damage.FORGED,
                    start,
                    f"the store has no record of writer key {self.writer.key_id}: no commit "
                    "can be vouched for (the custody record was removed?)",
                )
            ]
        findings: list[Finding] = []
        records = writer_records(self.recorder)
        mine = next(i for i, r in enumerate(records) if r.key_id == self.writer.key_id)
        # each key from its start to the next key's: (first, last or None, key or None)
        ranges: list[tuple[int, int | None, WriterKey | None, str]] = []
        for i, record in enumerate(records[: mine + 1]):
            end = records[i + 1].start - 1 if i + 1 < len(records) else None
            key = self.writer if i == mine else self.retired.get(record.key_id)
            ranges.append((record.start, end, key, record.key_id))
        later = records[mine + 1 :]
        if later:
            handed = self._rotation_problem(records[mine], later[0], store_id_of(self.recorder))
            why = (
                "this key was retired by that rotation (a copy of the old key file put back?)"
                if handed is None
                else f"a rotation this key did not make ({handed})"
            )
            findings.append(
                Finding(
                    Damage.FORGED,
                    later[0].start,
                    f"writer key {later[0].key_id} marks the log from here, not writer key "
                    f"{self.writer.key_id} that this check holds: {why}; nothing from here on "
                    "can be vouched for with it",
                )
            )
            problem = None  # said above; the marks up to the rotation are still checked
        findings.extend(self._rotation_findings(records[: mine + 1]))
        if problem is not None:
            # a record moved past events (keeping their marks) would have them pass for
            # events written before marks: hold every position from 1 to the marks
            findings.append(Finding(Damage.FORGED, 1, f"custody record: {problem}"))
            ranges = [(1, None, self.writer, self.writer.key_id)]
        cut: list[tuple[int, Mark]] = []
        for first, last, key, key_id in ranges:
            if key is None:
                continue  # a retired key this check does not hold: ``coverage`` says so
            begin = max(start, first)
            end = last if stop is None else stop if last is None else min(last, stop)
            if end is not None and begin > end:
                continue
            for position, why, mark in unmarked(self.recorder, key, begin, end):
                if why == CUT and mark is not None and last is None:
                    cut.append((position, mark))
                else:
                    findings.append(
                        Finding(Damage.FORGED, position, f"{why} (writer key {key_id})")
                    )
        top = head(self.recorder)
        end = 0 if top is None else top.position
        highest = highest_mark(self.recorder)
        if highest > end and not cut and (stop is None or stop >= end):
            # the tail cut at a commit boundary, its marks left: they show the store ran on
            findings.append(
                Finding(
                    Damage.TRUNCATED,
                    end + 1,
                    f"the writer marked a commit ending at position {highest}, but the store "
                    f"ends at {end}",
                )
            )
        if cut and all(mark.last > end for _, mark in cut):
            # a tail cut off in the middle of a commit: what is left of it cannot be checked
            findings.append(
                Finding(
                    Damage.TRUNCATED,
                    end + 1,
                    f"the writer marked a commit running to position {cut[-1][1].last}, but "
                    f"the store ends at {end}",
                )
            )
        else:
            findings.extend(
                Finding(Damage.FORGED, position, f"{CUT} (writer key {self.writer.key_id})")
                for position, _ in cut
            )
        return _capped(iter(sorted(findings, key=lambda f: f.position)))

    def _rotation_findings(self, records: list[WriterRecord]) -> list[Finding]:
        """Each key after the first took over by a rotation event at its start, naming it
        and the key before it, with the key before it's handover (checked when that key is
        held)."""
        found: list[Finding] = []
        store = store_id_of(self.recorder)
        for before, record in itertools.pairwise(records):
            why = self._rotation_problem(before, record, store)
            if why is not None:
                found.append(
                    Finding(
                        Damage.FORGED,
                        record.start,
                        f"writer key {record.key_id} starts here, but {why}: no rotation the "
                        f"network made (writer key {before.key_id} before it)",
                    )
                )
        return found

    def _rotation_problem(
        self, before: WriterRecord, record: WriterRecord, store: str | None
    ) -> str | None:
        stored = TileStore(self.recorder).event_at(record.start)
        if stored is None:
            return "no event stands at that position"
        originator, version, topic, state = stored
        fields = decoded(state, self.cipher)
        if (
            topic != ROTATED
            or version != 1
            or originator != writer_key_rotation_id(record.key_id)
            or fields is None
        ):
            return "the event there is not a rotation of the writer key"
        if fields.get("active") != record.key_id or fields.get("retired") != before.key_id:
            return "the rotation event there names other keys"
        previous = self.writer if before.key_id == self.writer.key_id else None  # type: ignore[union-attr]
        previous = previous or self.retired.get(before.key_id)
        if previous is not None and (
            store is None
            or not hmac.compare_digest(
                str(fields.get("handover", "")), previous.handover(record.key_id, store)
            )
        ):
            return f"writer key {before.key_id} did not hand over to it"
        return None

    # ------------------------------------------------------------------ keys and the log

    def key_findings(self) -> list[Finding]:
        if self.keys is None:
            return []
        scopes = None if self.scopes is None else tuple(sorted(self.scopes))
        erased: dict[tuple[UUID, str], int] = {}
        held: set[tuple[int, UUID, str]] = set()
        forged: list[tuple[int, str]] = []
        for position, scope, subject in erasures(self.recorder, self.cipher, forged=forged):
            erased[(scope, subject)] = position
            held.add((position, scope, subject))
        first_use = self._first_uses(scopes)
        rows = dict(self.keys.table.all_rows(scopes))
        findings = [
            Finding(
                Damage.FORGED,
                position,
                f"an erasure event the application did not write ({why}): it erases nothing",
            )
            for position, why in forged
        ]
        ledger = self._ledger()
        if ledger is not None:
            findings.extend(self._ledger_findings(ledger, held, scopes))
        for ref, live in rows.items():
            at = erased.get((ref.scope, ref.subject))
            used = first_use.get(ref)
            by_log = at is not None and (used is None or used < at)
            key = f"record {ref.scope}: the {ref.subject} data key (generation {ref.generation})"
            by_ledger = ledger is not None and ledger.erases(ref.scope, ref.subject, ref.generation)
            if live and by_ledger and not by_log:
                findings.append(
                    Finding(
                        Damage.ERASURE,
                        _ledger_position(ledger, ref) if ledger is not None else 1,
                        f"{key} holds key material, but the erasure ledger beside the keys "
                        "erased it (an erasure the log no longer holds): its row was put "
                        "back; the application does not use it",
                    )
                )
                continue
            if not live and by_ledger:
                continue
            if live and by_log:
                assert at is not None
                findings.append(
                    Finding(
                        Damage.ERASURE,
                        at,
                        f"{key} holds key material, but the log erased it at position {at}: "
                        "its row was put back (from a copy taken before the erasure?); the "
                        "application does not use it",
                    )
                )
            elif not live and not by_log:
                findings.append(
                    Finding(
                        Damage.ERASURE,
                        used or 1,
                        f"{key} was destroyed without an erasure event in the log: its data "
                        "reads as erased, but nobody recorded erasing it",
                    )
                )
        for ref, used in first_use.items():
            if ref in rows:
                continue
            at = erased.get((ref.scope, ref.subject))
            if at is None or used >= at:
                findings.append(
                    Finding(
                        Damage.ERASURE,
                        used,
                        f"record {ref.scope}: the {ref.subject} data key (generation "
                        f"{ref.generation}) that the event at {used} is sealed under is missing "
                        "from the key table, without an erasure event in the log",
                    )
                )
        return _capped(iter(sorted(findings, key=lambda f: (f.position, f.detail))))

    def _ledger(self) -> ErasureLedger | None:
        log_ = None if self.keys is None else self.keys.log
        if not isinstance(log_, ErasureLog):
            return None
        found = log_.ledger_now()  # opened once the store has an id
        return None if found is None else found.load()

    def _ledger_findings(
        self,
        ledger: ErasureLedger,
        held: set[tuple[int, UUID, str]],
        scopes: tuple[UUID, ...] | None,
    ) -> list[Finding]:
        """Each erasure the ledger beside the keys holds that the log does not: the log
        was cut, rolled back (restored from an older copy) or the erasure deleted."""
        top = head(self.recorder)
        end = 0 if top is None else top.position
        findings = [
            Finding(
                Damage.FORGED,
                1,
                f"the erasure ledger {ledger.path.name}: {why}",
            )
            for why in ledger.damaged
        ]
        for entry in ledger.entries:
            if entry.seen in held or (scopes is not None and entry.scope not in scopes):
                continue
            if ledger.acknowledged(entry):
                continue  # the operator restored an older copy, and said so: in force
            what = (
                f"record {entry.scope}: the {entry.subject} erasure the erasure ledger beside "
                f"the keys holds at position {entry.position}"
            )
            if entry.position > end:
                findings.append(
                    Finding(
                        Damage.TRUNCATED,
                        entry.position,
                        f"{what}, but the store ends at {end}: it was rolled back (restored "
                        "from an older copy) or its tail cut; the erasure stays in force",
                    )
                )
            else:
                findings.append(
                    Finding(
                        Damage.ERASURE,
                        entry.position,
                        f"{what} is not in the log: deleted, rewritten, or the store rolled "
                        "back and written on since; the erasure stays in force",
                    )
                )
        return findings

    def _first_uses(self, scopes: tuple[UUID, ...] | None) -> dict[KeyRef, int]:
        """The first position each data key is used at (in these records' events)."""
        first: dict[KeyRef, int] = {}
        plain = self.cipher is None
        for position, originator, _version, _topic, state in self._events(scopes):
            if plain and SEALED_MARK not in state:
                continue
            fields = decoded(state, self.cipher)
            if fields is None:
                continue  # damage: the chain's check names it
            for subject, generation in sealed_keys(fields):
                first.setdefault(KeyRef(originator, subject, generation), position)
        return first

    def _events(
        self, scopes: tuple[UUID, ...] | None
    ) -> Iterator[tuple[int, UUID, int, str, bytes]]:
        sqlite = isinstance(self.recorder, SQLiteApplicationRecorder)
        if scopes is not None:
            if not scopes:
                return
            if sqlite:
                yield from select_events(
                    self.recorder,
                    "originator_id IN (SELECT value FROM json_each(%s)) ORDER BY {pos}",
                    (json.dumps([s.hex for s in scopes]),),
                )
            else:
                yield from select_events(
                    self.recorder, "originator_id = ANY(%s) ORDER BY {pos}", (list(scopes),)
                )
            return
        after = 0
        while True:
            if self.cipher is not None:
                rows = select_events(
                    self.recorder, "{pos} > %s ORDER BY {pos} LIMIT %s", (after, SCAN_BATCH)
                )
            elif sqlite:  # only the events with sealed fields leave the database
                rows = select_events(
                    self.recorder,
                    "{pos} > %s AND instr(state, %s) > 0 ORDER BY {pos} LIMIT %s",
                    (after, SEALED_MARK, SCAN_BATCH),
                )
            else:
                rows = select_events(
                    self.recorder,
                    "{pos} > %s AND position(%s::bytea in state) > 0 ORDER BY {pos} LIMIT %s",
                    (after, SEALED_MARK, SCAN_BATCH),
                )
            if not rows:
                return
            yield from rows
            after = rows[-1][0]


def _ledger_position(ledger: ErasureLedger, ref: KeyRef) -> int:
    """The position of the ledger's first erasure that destroyed ``ref``."""
    return min(
        (
            e.position
            for e in ledger.entries
            if (e.scope, e.subject) == (ref.scope, ref.subject) and ref.generation <= e.through
        ),
        default=1,
    )


def _capped(findings: Iterator[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    more = 0
    for finding in findings:
        if len(kept) < MAX_FINDINGS:
            kept.append(finding)
        else:
            more += 1
    if more:
        last = kept[-1]
        kept.append(
            Finding(last.kind, last.position, f"and {more} more {last.kind} finding(s) after it")
        )
    return kept


# ---------------------------------------------------------------------- the publisher

_checked: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_alarmed: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_checked_lock = threading.Lock()


def signable_head(app: Any) -> ChainRow | None:
    """The chain's head, or, if an entry up to it carries no valid writer mark, the last
    chain row before the first such entry (logged at error level as
    ``audit.unmarked_entry``, once per entry): a checkpoint is never signed over an entry
    the writer did not mark. Positions found marked are not checked again."""
    recorder = app.recorder
    top = head(recorder)
    writer: WriterKey | None = getattr(recorder, "writer", None)
    if top is None or writer is None:
        return top
    problem = writer_problem(recorder)
    if problem is not None:
        with _checked_lock:
            told = _alarmed.get(recorder) == 0
            _alarmed[recorder] = 0
        if not told:  # once, not at every look at the head
            log.error("audit.custody_untrusted", detail=problem)
        return None  # nothing is signed over a store whose custody record is not trusted
    started = writer_started(recorder, writer)
    with _checked_lock:
        since = max(started or 1, _checked.get(recorder, 0) + 1)
    for position, why, _mark in unmarked(recorder, writer, since, top.position):
        with _checked_lock:
            told = _alarmed.get(recorder) == position
            _alarmed[recorder] = position
        if not told:  # once per entry, not at every look at the head
            log.error("audit.unmarked_entry", position=position, detail=why)
        return link_before(recorder, position)
    with _checked_lock:
        _checked[recorder] = top.position
    return top
