"""What the log says was erased: the application's word on erasure, whatever the key table
holds (issue 15, ADR 14).

The key table is in the database, where an administrator can put a wrapped key back from a
copy taken before an erasure. The erasure *events* are in the hash-chained log. So a data key
``(scope, subject, generation)`` counts as erased when the log holds an erasure of
``(scope, subject)`` at a position after the first event sealed under that key (an erasure
destroys every generation that exists when it is recorded; data recorded afterwards gets a
new generation, first used after the erasure). The application refuses to unwrap such a key,
whatever its row says, and ``cbcm audit verify`` holds the key table to the same rule.

Reading what the log says needs no data key: erasure events hold no personal data, and the
sealed fields name their key ``[subject, generation, ...]`` in clear inside the stored state
(under the whole-event cipher, when it is on).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, LiteralString
from uuid import UUID

import msgspec
import structlog
from eventsourcing.persistence import Cipher
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from domain.case import Case
from domain.feedback import Feedback
from domain.notification import StaffContact
from domain.personal_data import DataSubject
from domain.webhooks import WebhookSecret
from services.event_store import custody
from services.event_store.chain import GENESIS, head, link_at, link_before, read_log
from services.event_store.personal_data.data_keys import KeyRef, KeyTable
from services.event_store.personal_data.erasure_ledger import (
    ErasureLedger,
    LedgerEntry,
    ledger_path,
)

CASE_ERASED = get_topic(Case.PersonalDataErased)
FEEDBACK_ERASED = get_topic(Feedback.PersonalDataErased)
CONTACT_ERASED = get_topic(StaffContact.PersonalDataErased)
WEBHOOK_SECRET_ERASED = get_topic(WebhookSecret.Erased)
SEALED = "_pd"

_decode = msgspec.json.Decoder().decode
log = structlog.get_logger()


def decoded(state: bytes, cipher: Cipher | None) -> dict[str, Any] | None:
    """A stored state as its fields (None: it does not decrypt or decode: damage the chain
    names)."""
    try:
        plain = cipher.decrypt(state) if cipher is not None else state
        value = _decode(plain)
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def sealed_keys(fields: dict[str, Any]) -> set[tuple[str, int]]:
    """The (subject, generation) of every data key a stored state's sealed fields name."""
    sealed = fields.get(SEALED)
    if not isinstance(sealed, dict):
        return set()
    found = set()
    for entry in sealed.values():
        if isinstance(entry, list) and len(entry) == 3:
            found.add((str(entry[0]), int(entry[1])))
    return found


def erasure_targets(topic: str, originator: UUID, fields: dict[str, Any]) -> list[tuple[UUID, str]]:
    """The (scope, subject) pairs an erasure event's stored fields destroy (as
    ``sealing.erasures_of`` does for the decoded event)."""
    if topic in (FEEDBACK_ERASED, CONTACT_ERASED, WEBHOOK_SECRET_ERASED):
        return [(originator, subject.value) for subject in DataSubject]
    if topic != CASE_ERASED:
        return []
    scopes = [originator, *(UUID(str(r)) for r in fields.get("records", ()))]
    return [(scope, str(subject)) for scope in scopes for subject in fields.get("subjects", ())]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _writable(directory: Path) -> bool:
    """Whether this process may add files to ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def select_events(
    recorder: Any, where: LiteralString, params: tuple[Any, ...]
) -> list[tuple[int, UUID, int, str, bytes]]:
    """(position, originator id, version, topic, state) of the events matching ``where``,
    in which ``{pos}`` is the position column and ``%s`` marks a parameter."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (
            "SELECT rowid, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {recorder.events_table_name} WHERE " + where.format(pos="rowid")
        ).replace("%s", "?")
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            rows = c.fetchall()
        return [(int(r[0]), _uuid(r[1]), int(r[2]), str(r[3]), bytes(r[4])) for r in rows]
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "  # noqa: S608
        "WHERE " + where.format(pos="notification_id")
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as curs:
        curs.execute(query, params)
        found = curs.fetchall()
    return [
        (
            int(r["notification_id"]),
            _uuid(r["originator_id"]),
            int(r["originator_version"]),
            str(r["topic"]),
            bytes(r["state"]),
        )
        for r in found
    ]


NOT_LINKED = "not linked in the chain as stored (an event inserted beside it)"
NOT_MARKED = "no valid writer mark covers it: not written by a process holding the writer key"


def unvouched(recorder: Any, position: int) -> str | None:
    """Why the event at ``position`` may not count as written by the application (None: it
    may). From the position the writer key's record names on, the event must lie in a
    commit whose mark verifies over the links recomputed from the events themselves (so a
    made-up event, or another record's event copied with a correct link, does not); before
    it (a store written before marks existed), its chain link must match the event. A
    recorder without a chain (the library's in-memory one) vouches for everything."""
    writer: custody.WriterKey | None = getattr(recorder, "writer", None)
    if not hasattr(recorder, "writer"):
        return None
    started = None if writer is None else custody.writer_started(recorder, writer)
    if writer is None or started is None or position < started:
        return None if _links_hold(recorder, position, position) else NOT_LINKED
    mark = custody.mark_covering(recorder, position)
    if mark is None:
        return NOT_MARKED
    recomputed = _links_hold(recorder, mark.first, mark.last, through=position)
    if recomputed is None or not custody.mark_valid(recorder, writer, mark, recomputed):
        return NOT_MARKED
    return None


def _links_hold(
    recorder: Any, first: int, last: int, *, through: int | None = None
) -> bytes | None:
    """The link at ``last`` recomputed from the stored link before ``first`` and the events
    ``first`` to ``last`` (each of which, up to ``through``, must have its chain row and
    match it); None if one does not."""
    before = link_before(recorder, first)
    link = GENESIS if before is None else before.link
    must = last if through is None else through
    for row in read_log(recorder, first, batch=max(2, last - first + 1)):
        if row.position > last:
            break
        if not row.has_event or row.unreadable:
            return None
        link = row.link_from(link)
        if row.position <= must and (row.chain is None or row.chain.link != link):
            return None
    return link


def erasures(
    recorder: Any,
    cipher: Cipher | None,
    after: int = 0,
    through: int | None = None,
    forged: list[tuple[int, str]] | None = None,
) -> Iterator[tuple[int, UUID, str]]:
    """(position, scope, subject) of every erasure the log holds after ``after`` that the
    application wrote (``unvouched``); the (position, why) of any other erasure event is
    added to ``forged``: it erases nothing."""
    erasures = (CASE_ERASED, FEEDBACK_ERASED, CONTACT_ERASED, WEBHOOK_SECRET_ERASED)
    where: LiteralString = "{pos} > %s AND topic IN (%s, %s, %s, %s)"
    params: tuple[Any, ...] = (after, *erasures)
    if through is not None:
        where = "{pos} > %s AND {pos} <= %s AND topic IN (%s, %s, %s, %s)"
        params = (after, through, *erasures)
    for position, originator, _version, topic, state in select_events(
        recorder, where + " ORDER BY {pos}", params
    ):
        why = unvouched(recorder, position)
        if why is not None:
            if forged is not None:
                forged.append((position, why))
            continue
        fields = decoded(state, cipher)
        if fields is None:
            continue
        for scope, subject in erasure_targets(topic, originator, fields):
            yield position, scope, subject


class ErasureLog:
    """What the log has erased, read incrementally: the last erasure of each (scope,
    subject), and the first position each data key was used at.

    The log is read again at most every ``REFRESH_SECONDS`` (a process decoding many events
    would otherwise ask once per key), and at once after this process recorded an erasure
    (``invalidate``). An erasure by another process is therefore seen here within that time,
    well inside the time its cached keys may still open past events (ADR 8); a key row put
    back later than that is never used."""

    REFRESH_SECONDS = 0.25

    def __init__(
        self,
        recorder: Any,
        cipher: Cipher | None,
        *,
        table: KeyTable | None = None,
        keys_dir: Path | None = None,
    ) -> None:
        self.recorder = recorder
        self.cipher = cipher
        self.table = table
        """The data-key table: which generations an erasure destroyed (for the ledger)."""
        self.keys_dir = keys_dir
        """Where the erasure ledger is kept (beside the writer key); None: no ledger."""
        self.ledger: ErasureLedger | None = None
        self._lock = threading.RLock()
        self._refreshed_at = -float("inf")
        self._through = 0
        self._through_link: bytes | None = None
        self._erased: dict[tuple[UUID, str], int] = {}
        self._held: set[tuple[int, UUID, str]] = set()
        self._first_use: dict[KeyRef, int | None] = {}
        self._told_missing: set[tuple[int, UUID, str]] = set()

    def invalidate(self) -> None:
        """Read the log at the next look (this process just recorded an erasure)."""
        self._refreshed_at = -float("inf")

    def start(self) -> None:
        """At a process's start: read every erasure in the log (adding those the erasure
        ledger lacks to it), and hold the ledger to the log: an erasure the ledger holds
        and the log no longer does (the log's tail cut, an erasure deleted, the database
        restored from an older copy) is named, and stays in force."""
        if self.keys_dir is not None and not _writable(self.keys_dir):
            log.error(
                "personal_data.erasure_ledger_unwritable",
                ledger=str(self.keys_dir),
                detail="this process cannot add erasures to the ledger outside the database: "
                "set CBCM_ERASURE_LEDGER_DIR to a directory the services may write (ADR 23)",
            )
        self.invalidate()
        self.refresh()
        self.missing_from_log(alarm=True)

    def missing_from_log(self, *, alarm: bool = False) -> list[LedgerEntry]:
        """The ledger's erasures that the log does not hold (as last read)."""
        ledger = self.ledger_now()
        if ledger is None:
            return []
        ledger.load()
        missing = [
            e for e in ledger.entries if e.seen not in self._held and not ledger.acknowledged(e)
        ]
        if alarm and missing:
            top = head(self.recorder)
            end = 0 if top is None else top.position
            for entry in missing:
                if entry.seen in self._told_missing:
                    continue
                self._told_missing.add(entry.seen)
                log.error(
                    "personal_data.erasure_not_in_log",
                    position=entry.position,
                    record=str(entry.scope),
                    subject=entry.subject,
                    store_ends_at=end,
                    detail="the erasure ledger beside the keys holds this erasure, the log "
                    + (
                        "ends before it (rolled back, restored from an older copy, or its tail cut)"
                        if entry.position > end
                        else "no longer does (deleted or rewritten)"
                    )
                    + ": it stays in force; run `cbcm audit verify`",
                )
        return missing

    def refresh(self) -> None:
        """Read the erasures recorded since the last look (unless it was just now), and
        add them to the erasure ledger."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed_at < self.REFRESH_SECONDS:
                return
            self._refreshed_at = now
            through = self._top()
            if self._through and self._moved_back():
                # the store was rolled back under this process (and perhaps written on):
                # read it all again; what was read before stays in force
                self._through = 0
            if through <= self._through:
                return
            forged: list[tuple[int, str]] = []
            learnt: list[tuple[int, UUID, str]] = []
            for position, scope, subject in erasures(
                self.recorder, self.cipher, self._through, through, forged
            ):
                self._erased[(scope, subject)] = position
                self._held.add((position, scope, subject))
                learnt.append((position, scope, subject))
            for position, why in forged:
                log.error(
                    "personal_data.forged_erasure",
                    position=position,
                    detail=f"an erasure event the application did not write: {why}; it "
                    "erases nothing (run `cbcm audit verify`)",
                )
            self._through = through
            found = link_at(self.recorder, through)
            self._through_link = None if found is None else found.link
            self._write_ledger(learnt)

    def _moved_back(self) -> bool:
        """Whether the log no longer holds, where this process last read to, what it read."""
        found = link_at(self.recorder, self._through)
        return (None if found is None else found.link) != self._through_link

    def ledger_now(self) -> ErasureLedger | None:
        """The erasure ledger of this store (opened once the store has an id)."""
        if self.ledger is None and self.keys_dir is not None:
            writer = getattr(self.recorder, "writer", None)
            store = getattr(self.recorder, "store", None)
            if writer is not None and store is not None:
                self.ledger = ErasureLedger(ledger_path(self.keys_dir, store), writer, store)
                self.ledger.load()
        return self.ledger

    def _write_ledger(self, learnt: list[tuple[int, UUID, str]]) -> None:
        ledger = self.ledger_now()
        if ledger is None or not learnt:
            return
        ledger.load()
        entries = []
        links: dict[int, bytes] = {}
        for position, scope, subject in learnt:
            if position not in links:
                found = link_at(self.recorder, position)
                links[position] = b"" if found is None else found.link
            if ledger.holds(position, scope, subject, links[position]):
                continue
            entries.append(
                LedgerEntry(
                    position,
                    scope,
                    subject,
                    self._generations_before(scope, subject, position),
                    links[position],
                )
            )
        try:
            ledger.append(entries)
        except OSError as e:  # a reader without write access to the keys directory
            log.error(
                "personal_data.erasure_ledger_unwritable",
                ledger=str(ledger.path),
                error=type(e).__name__,
                detail="erasures read in the log could not be added to the ledger beside "
                "the keys: a process that can write there adds them at its next look",
            )

    def _generations_before(self, scope: UUID, subject: str, position: int) -> int:
        """The highest generation of (scope, subject) an erasure at ``position`` destroyed:
        those first used before it (or never)."""
        if self.table is None:
            return 0
        highest = 0
        for ref, _live in self.table.all_rows((scope,)):
            if ref.subject != subject or ref.generation <= highest:
                continue
            first = self.first_use(ref)
            if first is None or first < position:
                highest = ref.generation
        return highest

    def _top(self) -> int:
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute(f"SELECT coalesce(max(rowid), 0) FROM {self.recorder.events_table_name}")  # noqa: S608
                return int(c.fetchone()[0])
        query = SQL("SELECT coalesce(max(notification_id), 0) AS top FROM {}.{}").format(
            Identifier(self.recorder.datastore.schema), Identifier(self.recorder.events_table_name)
        )
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(query)
            found = curs.fetchone()
        return 0 if found is None else int(found["top"])

    def erased_at(self, scope: UUID, subject: str) -> int | None:
        """The position of the last erasure of (scope, subject) (as last read)."""
        return self._erased.get((scope, subject))

    def erases(self, ref: KeyRef) -> bool:
        """Whether the log erased this key (read up to the log's head now), or an erasure
        the erasure ledger holds did (whatever the log holds now)."""
        self.refresh()
        ledger = self.ledger_now()
        if ledger is not None and ledger.erases(ref.scope, ref.subject, ref.generation):
            return True
        at = self.erased_at(ref.scope, ref.subject)
        if at is None:
            return False
        first = self.first_use(ref)
        return first is None or first < at

    def first_use(self, ref: KeyRef) -> int | None:
        """The position of the first event sealed under ``ref`` (None: no event is)."""
        if ref in self._first_use:
            return self._first_use[ref]
        scope_id: Any = (
            ref.scope.hex if isinstance(self.recorder, SQLiteApplicationRecorder) else ref.scope
        )
        first = None
        for position, _oid, _version, _topic, state in select_events(
            self.recorder, "originator_id = %s ORDER BY {pos}", (scope_id,)
        ):
            fields = decoded(state, self.cipher)
            if fields is not None and (ref.subject, ref.generation) in sealed_keys(fields):
                first = position
                break
        self._first_use[ref] = first
        return first
