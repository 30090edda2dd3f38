"""The case register: every case, open or closed, one row each, for search, lists and
exports (ADR 25).

A row holds what the contract messages say of a case, and nothing personal: the messages
carry no name, contact, narrative or place (those stay sealed in the event store), so
neither can this read model. Its columns: who holds the case (``agency``: the custodian
after the last transfer), who received it, when it was received (``received_at``, the
complainant's time, which never changes) and recorded, the channel, the triage
(``category``, the allegation's type, whether a child is involved, the implicated agency
and personnel category), the investigation's agency (who may see the case as its
investigating entity), the reporting ``status`` of DOMAIN.md, closure and reopening, and
the most urgent pending action with its deadline (the inbox's rules,
``projections.inbox.pending_actions``, under the network's policy), so "overdue" is one
comparison in the query.

Who may list what is decided IN the query (``register_page``'s WHERE clause), from a
``RegisterReader``: the agency's held cases (focal points), cases referred for
investigation to the agency (investigating entities), every case (coordinator, auditor).
A page never holds a row its reader may not see, and counts and cursors are computed over
visible rows only. The mapping of roles to a ``RegisterReader`` is the service layer's
(``services.api.register``), next to the domain's need-to-know rules it mirrors.

Paging is by key (``received_at`` descending, then ``case_id`` descending), both of which
never change for a case: a cursor names the last row given, the next page starts strictly
after it, so a case is never given twice, and a case visible and matching the filters from
the first page to the last is never skipped, whatever is written meanwhile.
"""

# Table and column names in SQL text are constants of this module, never input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from contracts.case import (
    CaseAssessedV1,
    CaseReceivedV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
)
from projections.base import (
    ReadModelDb,
    Row,
    parse_ts,
    parse_ts_or_none,
    replace_row,
    ts,
)
from projections.case_rows import CaseRows, Handler, fact_handlers, set_columns
from projections.inbox.model import pending_actions

POLICY_TABLE = "register_policy"
TABLE = "register_cases"

STATUSES = (
    "under_preliminary_assessment",
    "referred_pending_investigation",
    "under_investigation",
    "substantiated",
    "not_substantiated",
    "closed_other_reasons",
)
"""The reporting statuses of DOMAIN.md (``domain.vocabulary.CaseStatus``)."""

CATEGORIES = ("sea_allegation", "other_sensitive", "non_sensitive_feedback", "unassessed")
"""The triage categories (of the last assessment, as the case shows it), and ``unassessed``
for a case never assessed."""

_CASE_COLUMNS = (
    "case_id TEXT PRIMARY KEY",
    "agency TEXT NOT NULL",
    "receiving_agency TEXT NOT NULL",
    "received_at TEXT NOT NULL",
    "recorded_at TEXT NOT NULL",
    "channel TEXT NOT NULL",
    "complainant_role TEXT NOT NULL",
    "immediate_safety_risk INTEGER NOT NULL",
    "survivor_reachable INTEGER NOT NULL",
    "category TEXT",
    "assessed_at TEXT",
    "allegation_type TEXT",
    "child_involved INTEGER NOT NULL DEFAULT 0",
    "implicated_agency TEXT",
    "personnel_category TEXT",
    "investigation_agency TEXT",
    "consent_decided_at TEXT",
    "assistance_referred_at TEXT",
    "investigation_referred_at TEXT",
    "acknowledged_at TEXT",
    "outcome TEXT",
    "outcome_at TEXT",
    "last_feedback_at TEXT",
    "duplicate_of TEXT",
    "duplicate_at TEXT",
    "closed_at TEXT",
    "closure_reason TEXT",
    "reopened_at TEXT",
    "reopened_count INTEGER NOT NULL DEFAULT 0",
    "reassess_from TEXT",
    "status TEXT NOT NULL",
    "next_action TEXT",
    "next_due_at TEXT",
    "version INTEGER NOT NULL",
)

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(_CASE_COLUMNS)})",
    # the paging key, and the key within each need-to-know grant
    f"CREATE INDEX IF NOT EXISTS register_by_received ON {TABLE} (received_at, case_id)",
    f"CREATE INDEX IF NOT EXISTS register_by_agency ON {TABLE} (agency, received_at, case_id)",
    f"CREATE INDEX IF NOT EXISTS register_by_investigation ON {TABLE}"
    " (investigation_agency, received_at, case_id)",
)
_TABLES = (TABLE, POLICY_TABLE)

PAGE_MAX = 200
EXPORT_MAX = 10_000
"""The most cases one export holds (a larger register is exported in parts, by period)."""


# ------------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class RegisterReader:
    """What the reader's roles let them list (the need-to-know grants, ORed in the query).

    ``sees_deadlines``: whether the grant shows the case's pending action and its deadline
    (an investigating entity has no need to know the focal points' follow-up: their
    grant shows neither, and an ``overdue`` filter finds nothing through it)."""

    agency: str
    every_case: bool = False
    """coordinator, auditor"""
    held_by_agency: bool = False
    """focal point: the cases the agency holds"""
    investigated_by_agency: bool = False
    """investigating entity: the cases referred for investigation to the agency"""

    @property
    def lists_anything(self) -> bool:
        return self.every_case or self.held_by_agency or self.investigated_by_agency


@dataclass(frozen=True)
class RegisterFilter:
    """The searches the register answers; ``None``: any."""

    statuses: tuple[str, ...] = ()
    agency: str | None = None
    """the agency holding the case"""
    categories: tuple[str, ...] = ()
    received_from: datetime | None = None
    """inclusive"""
    received_before: datetime | None = None
    """exclusive"""
    overdue: bool | None = None
    open: bool | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's key."""

    received_at: str
    case_id: str


@dataclass(frozen=True)
class RegisterRow:
    """One case in the register, as its reader may see it (``next_action``, ``due_at`` and
    ``overdue`` are ``None`` when the grant that shows the case hides deadlines)."""

    case_id: UUID
    status: str
    agency: str
    receiving_agency: str
    received_at: datetime
    recorded_at: datetime
    channel: str
    complainant_role: str
    immediate_safety_risk: bool
    category: str | None
    allegation_type: str | None
    child_involved: bool
    implicated_agency: str | None
    personnel_category: str | None
    investigation_agency: str | None
    is_open: bool
    closed_at: datetime | None
    closure_reason: str | None
    duplicate_of: UUID | None
    reopened_count: int
    next_action: str | None
    due_at: datetime | None
    overdue: bool | None
    version: int


@dataclass(frozen=True)
class RegisterPage:
    rows: tuple[RegisterRow, ...]
    next_cursor: Cursor | None
    """``None``: this is the last page."""


# ------------------------------------------------------------------------------- rules


def status_of(row: Row) -> str:
    """The reporting status, as ``domain.case.Case.status`` computes it."""
    if row["outcome"] is not None:
        return str(row["outcome"])
    if row["closed_at"] is not None:
        return "closed_other_reasons"
    if row["investigation_referred_at"] is not None:
        if row["acknowledged_at"] is not None:
            return "under_investigation"
        return "referred_pending_investigation"
    return "under_preliminary_assessment"


# ------------------------------------------------------------------------------- projection


class RegisterProjection(CaseRows):
    """Contract messages -> the case register."""

    name = "register"
    schema_version = 2
    """2: 64-bit integers on PostgreSQL (``pg_sql``); a read model made before is replayed."""
    table = TABLE
    policy_table = POLICY_TABLE
    schema = _SCHEMA
    tables = _TABLES

    def __init__(self) -> None:
        super().__init__(_HANDLERS)

    def recompute_rows(
        self, db: ReadModelDb, rows: Sequence[Row], deadlines: dict[str, timedelta]
    ) -> None:
        """The reporting status and the most urgent pending action with its deadline."""
        if not rows:
            return
        updates = []
        for row in rows:
            actions = pending_actions(row, deadlines)
            head = actions[0] if actions else None
            updates.append(
                (
                    status_of(row),
                    None if head is None else head.action,
                    None if head is None or head.due_at is None else ts(head.due_at),
                    row["case_id"],
                )
            )
        db.executemany(
            f"UPDATE {TABLE} SET status = ?, next_action = ?, next_due_at = ? WHERE case_id = ?",
            updates,
        )


def _set(db: ReadModelDb, case_id: object, **values: object) -> None:
    set_columns(db, TABLE, case_id, **values)


def _received(db: ReadModelDb, data: CaseReceivedV1, when: str) -> None:
    replace_row(
        db,
        TABLE,
        ("case_id",),
        {
            "case_id": str(data.case_id),
            "agency": data.actor.agency,
            "receiving_agency": data.actor.agency,
            "received_at": ts(data.received_at),
            "recorded_at": when,
            "channel": str(data.channel),
            "complainant_role": str(data.complainant_role),
            "immediate_safety_risk": int(data.immediate_safety_risk),
            "survivor_reachable": int(
                data.complainant_role == "survivor" or data.has_survivor_details
            ),
            "status": "under_preliminary_assessment",
            "version": data.version,
        },
    )


def _assessed(db: ReadModelDb, data: CaseAssessedV1, when: str) -> None:
    a = data.allegation
    _set(
        db,
        data.case_id,
        category=str(data.category),
        assessed_at=when,
        allegation_type=None if a is None else str(a.allegation_type),
        child_involved=int(a is not None and a.child_involved),
        implicated_agency=None if a is None else a.implicated_agency,
        personnel_category=None if a is None else str(a.personnel_category),
        reassess_from=None,
    )


_FACTS = fact_handlers(TABLE)


def _referred(db: ReadModelDb, data: CaseReferredForInvestigationV1, when: str) -> None:
    _FACTS[CaseReferredForInvestigationV1](db, data, when)
    _set(db, data.case_id, investigation_agency=data.agency)


def _reopened(db: ReadModelDb, data: CaseReopenedV1, when: str) -> None:
    _FACTS[CaseReopenedV1](db, data, when)
    db.execute(
        f"UPDATE {TABLE} SET reopened_count = reopened_count + 1 WHERE case_id = ?",
        (str(data.case_id),),
    )


_HANDLERS: dict[type[Any], Handler] = {
    **_FACTS,
    CaseReceivedV1: _received,
    CaseAssessedV1: _assessed,
    CaseReferredForInvestigationV1: _referred,
    CaseReopenedV1: _reopened,
}


# ------------------------------------------------------------------------------- queries


def _grants(reader: RegisterReader, flt: RegisterFilter, now: str) -> tuple[str, list[object]]:
    """The need-to-know part of the WHERE clause: one term per grant the reader holds, each
    with the filters that grant allows; ``FALSE`` when the reader may list nothing."""
    terms: list[str] = []
    params: list[object] = []

    def deadline_terms(shows_deadlines: bool) -> tuple[str, list[object]]:
        if flt.overdue is None:
            return "", []
        if not shows_deadlines:
            return " AND 1 = 0", []  # the overdue filter cannot look through this grant
        if flt.overdue:
            return " AND next_due_at IS NOT NULL AND next_due_at < ?", [now]
        return " AND (next_due_at IS NULL OR next_due_at >= ?)", [now]

    if reader.every_case:
        extra, extra_params = deadline_terms(True)
        terms.append(f"(1 = 1{extra})")
        params += extra_params
    else:
        if reader.held_by_agency:
            extra, extra_params = deadline_terms(True)
            terms.append(f"(agency = ?{extra})")
            params += [reader.agency, *extra_params]
        if reader.investigated_by_agency:
            extra, extra_params = deadline_terms(False)
            terms.append(f"(investigation_agency = ?{extra})")
            params += [reader.agency, *extra_params]
    if not terms:
        return "1 = 0", []
    return "(" + " OR ".join(terms) + ")", params


def _filters(flt: RegisterFilter) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if flt.statuses:
        where.append(f"status IN ({', '.join('?' for _ in flt.statuses)})")
        params += list(flt.statuses)
    if flt.categories:
        named = [c for c in flt.categories if c != "unassessed"]
        parts = []
        if named:
            parts.append(f"category IN ({', '.join('?' for _ in named)})")
            params += named
        if "unassessed" in flt.categories:
            parts.append("category IS NULL")
        where.append("(" + " OR ".join(f"({p})" for p in parts) + ")")
    if flt.agency is not None:
        where.append("agency = ?")
        params.append(flt.agency)
    if flt.received_from is not None:
        where.append("received_at >= ?")
        params.append(ts(flt.received_from))
    if flt.received_before is not None:
        where.append("received_at < ?")
        params.append(ts(flt.received_before))
    if flt.open is not None:
        where.append("closed_at IS NULL" if flt.open else "closed_at IS NOT NULL")
    return where, params


def _where(
    reader: RegisterReader, flt: RegisterFilter, now: datetime, after: Cursor | None
) -> tuple[str, list[object]]:
    grants, params = _grants(reader, flt, ts(now))
    where = [grants]
    more, more_params = _filters(flt)
    where += more
    params += more_params
    if after is not None:
        where.append("(received_at < ? OR (received_at = ? AND case_id < ?))")
        params += [after.received_at, after.received_at, after.case_id]
    return " AND ".join(where), params


def _row(row: Row, reader: RegisterReader, now: datetime) -> RegisterRow:
    shows_deadlines = reader.every_case or (
        reader.held_by_agency and row["agency"] == reader.agency
    )
    due = parse_ts_or_none(row["next_due_at"]) if shows_deadlines else None
    duplicate_of = row["duplicate_of"]
    return RegisterRow(
        case_id=UUID(row["case_id"]),
        status=row["status"],
        agency=row["agency"],
        receiving_agency=row["receiving_agency"],
        received_at=parse_ts(row["received_at"]),
        recorded_at=parse_ts(row["recorded_at"]),
        channel=row["channel"],
        complainant_role=row["complainant_role"],
        immediate_safety_risk=bool(row["immediate_safety_risk"]),
        category=row["category"],
        allegation_type=row["allegation_type"],
        child_involved=bool(row["child_involved"]),
        implicated_agency=row["implicated_agency"],
        personnel_category=row["personnel_category"],
        investigation_agency=row["investigation_agency"],
        is_open=row["closed_at"] is None,
        closed_at=parse_ts_or_none(row["closed_at"]),
        closure_reason=row["closure_reason"],
        duplicate_of=None if duplicate_of is None else UUID(duplicate_of),
        reopened_count=int(row["reopened_count"]),
        next_action=row["next_action"] if shows_deadlines else None,
        due_at=due,
        overdue=(due is not None and due < now) if shows_deadlines else None,
        version=int(row["version"]),
    )


_SELECT = f"SELECT * FROM {TABLE}"
_ORDER = " ORDER BY received_at DESC, case_id DESC"


def register_page(
    db: ReadModelDb,
    reader: RegisterReader,
    flt: RegisterFilter = RegisterFilter(),
    *,
    now: datetime,
    after: Cursor | None = None,
    limit: int = 50,
) -> RegisterPage:
    """The cases ``reader`` may see that match ``flt``, newest received first, ``limit`` at
    most, starting after ``after``. Need-to-know is part of the WHERE clause."""
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1 to {PAGE_MAX}")
    where, params = _where(reader, flt, now, after)
    found = db.execute(f"{_SELECT} WHERE {where}{_ORDER} LIMIT ?", [*params, limit + 1]).fetchall()
    rows = tuple(_row(r, reader, now) for r in found[:limit])
    more = len(found) > limit
    last = found[limit - 1] if more else None
    return RegisterPage(
        rows, None if last is None else Cursor(last["received_at"], last["case_id"])
    )


def register_count(
    db: ReadModelDb,
    reader: RegisterReader,
    flt: RegisterFilter = RegisterFilter(),
    *,
    now: datetime,
) -> int:
    """How many cases ``reader`` may see match ``flt``."""
    where, params = _where(reader, flt, now, None)
    return int(db.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", params).fetchone()[0])


def register_rows(
    db: ReadModelDb,
    reader: RegisterReader,
    flt: RegisterFilter = RegisterFilter(),
    *,
    now: datetime,
    limit: int = EXPORT_MAX,
) -> tuple[RegisterRow, ...]:
    """Every case ``reader`` may see that matches ``flt`` (an export), newest first, at most
    ``limit`` (the caller asks for one more to tell that there are too many)."""
    where, params = _where(reader, flt, now, None)
    found = db.execute(f"{_SELECT} WHERE {where}{_ORDER} LIMIT ?", [*params, limit]).fetchall()
    return tuple(_row(r, reader, now) for r in found)


def all_rows(db: ReadModelDb) -> list[dict[str, Any]]:
    """Every stored row, as plain values, in key order (rebuild comparisons)."""
    rows = db.execute(f"{_SELECT} ORDER BY case_id").fetchall()
    return [{k: r[k] for k in r.keys()} for r in rows]  # noqa: SIM118 - rows of both kinds
