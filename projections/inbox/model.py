"""The focal-point inbox: per agency and focal point, the open cases they hold, each with its
next required action and when it is due under the network's policy.

Rows hold the milestones of each case (from ``case.*`` messages); the pending actions are
computed from them and the policy's deadlines (``network.established`` /
``network.policy_set``; the defaults of DOMAIN.md until one arrives) whenever a case changes
or the policy does, and stored, so the inbox is one indexed query.

Action rules, for an open case (a closed case has none and leaves the inbox; a reopened one
comes back). "Received" is the complaint's ``received_at``; other times are when the fact
was recorded (the message ``time``):

``assess``
    not yet assessed: due ``received_at + assess_within``. A reopened case that was never
    referred for investigation must be assessed again: due ``reopened + assess_within``
    until an assessment after the reopening.
``offer_assistance``
    SEA allegation whose survivor can be reached (the survivor complained, or survivor details
    were recorded): due ``assessed + offer_assistance_within`` until any consent decision
    (a consent given or withdrawn, of any kind) or an assistance referral is recorded.
``refer_for_investigation``
    SEA allegation not yet referred: due ``assessed + refer_for_investigation_within`` (also
    when the implicated agency is still unknown: establishing it is part of the step).
``chase_acknowledgement``
    referred, neither acknowledged nor concluded: due ``referred + acknowledge_within``.
``give_feedback``
    every open case not yet assessed, and every open SEA case until it can be closed: due
    ``feedback_every`` after the latest of the last feedback, receipt and reopening.
``close``
    a case linked as a duplicate; a case assessed as other sensitive or non-sensitive (it
    goes to the agency's procedure or its CFM); an SEA case whose outcome is recorded and
    whose complainant got feedback after the outcome (and after any reopening). When
    closing is due, it is the only action. The policy sets no deadline for it: its
    ``due_at`` is ``None``.

The case's ``action`` is its most urgent pending action: earliest due first, ties in the
order above (offer assistance before referral, as DOMAIN.md asks); ``close`` only when it
is alone. The inbox lists overdue cases first, then the rest by due time, then cases whose
only action has no deadline (oldest first).

Custody: a case is in the inbox of the agency holding it; a transfer moves it to the new
agency's inbox and clears its focal points (as the domain does). ``focal_point=`` lists the
cases assigned to that focal point; the agency view also shows unassigned cases. A focal
point withdrawn from the network keeps the cases assigned to them until they are reassigned
(the domain does not unassign them either); the agency view shows who holds each case.
"""

# The SQL text built here is the module's own (columns, conditions, ``?`` markers); every
# value, a cursor's included, is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias
from uuid import UUID

from contracts.case import (
    CaseAssessedV1,
    CaseFocalPointsAssignedV1,
    CaseReceivedV1,
    CaseTransferredV1,
)
from projections.base import (
    ReadModelDb,
    Row,
    later,
    load_deadlines,
    parse_ts,
    parse_ts_or_none,
    replace_row,
    ts,
)
from projections.case_rows import CaseRows, Handler, fact_handlers, set_columns

Action: TypeAlias = Literal[
    "assess",
    "offer_assistance",
    "refer_for_investigation",
    "chase_acknowledgement",
    "give_feedback",
    "close",
]
ACTIONS: tuple[Action, ...] = (
    "assess",
    "offer_assistance",
    "refer_for_investigation",
    "chase_acknowledgement",
    "give_feedback",
    "close",
)
_RANK = {action: rank for rank, action in enumerate(ACTIONS)}

POLICY_TABLE = "inbox_policy"

_CASE_COLUMNS = (
    "case_id TEXT PRIMARY KEY",
    "agency TEXT NOT NULL",
    "received_at TEXT NOT NULL",
    "recorded_at TEXT NOT NULL",
    "channel TEXT NOT NULL",
    "immediate_safety_risk INTEGER NOT NULL",
    "survivor_reachable INTEGER NOT NULL",
    "category TEXT",
    "assessed_at TEXT",
    "child_involved INTEGER NOT NULL DEFAULT 0",
    "implicated_agency TEXT",
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
    "reassess_from TEXT",
    "version INTEGER NOT NULL",
    "next_action TEXT",
    "next_due_at TEXT",
    "next_since TEXT",
)

NO_DEADLINE = "~"
"""Where a case whose action has no deadline sorts in the inbox's order: after every due time
(``~`` follows every character of a time's text; the read models compare text byte by byte,
``COLLATE "C"`` on PostgreSQL)."""
_DUE_KEY = f"COALESCE(next_due_at, '{NO_DEADLINE}')"
_OPEN = "closed_at IS NULL AND next_action IS NOT NULL"

PAGE_MAX = 200
"""The most cases one inbox page holds (as the case register's pages)."""

_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS inbox_cases ({', '.join(_CASE_COLUMNS)})",
    "CREATE INDEX IF NOT EXISTS inbox_cases_agency ON inbox_cases (agency, closed_at, next_due_at)",
    # the inbox's order within an agency's open cases: the paging key (``inbox_page``)
    f"CREATE INDEX IF NOT EXISTS inbox_open_by_due ON inbox_cases (agency, {_DUE_KEY},"
    f" next_since, case_id) WHERE {_OPEN}",
    "CREATE TABLE IF NOT EXISTS inbox_focal_points ("
    ' case_id TEXT NOT NULL, "user" TEXT NOT NULL, PRIMARY KEY (case_id, "user"))',
    'CREATE INDEX IF NOT EXISTS inbox_focal_points_user ON inbox_focal_points ("user")',
    # a focal point's cases, without a visit to the table for each
    'CREATE INDEX IF NOT EXISTS inbox_focal_points_by_user ON inbox_focal_points ("user", case_id)',
    "CREATE TABLE IF NOT EXISTS inbox_actions ("
    " case_id TEXT NOT NULL, action TEXT NOT NULL, due_at TEXT, since TEXT NOT NULL,"
    " PRIMARY KEY (case_id, action))",
)
_TABLES = ("inbox_actions", "inbox_focal_points", "inbox_cases", POLICY_TABLE)


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PendingAction:
    """One thing a focal point must do on a case, and by when (``None``: no deadline)."""

    action: Action
    due_at: datetime | None
    since: datetime
    """When the action became required."""

    def is_overdue(self, now: datetime) -> bool:
        return self.due_at is not None and self.due_at < now


@dataclass(frozen=True)
class InboxItem:
    """An open case as its holder sees it in the inbox (no personal data)."""

    case_id: UUID
    agency: str
    focal_points: tuple[str, ...]
    action: Action
    due_at: datetime | None
    overdue: bool
    since: datetime
    actions: tuple[PendingAction, ...]
    """Every pending action, most urgent first (``action`` is the first)."""
    category: str | None
    received_at: datetime
    immediate_safety_risk: bool
    child_involved: bool
    reopened: bool


@dataclass(frozen=True)
class CaseRow:
    """One case's milestones in the inbox read model, open or closed."""

    case_id: UUID
    agency: str
    focal_points: tuple[str, ...]
    is_open: bool
    category: str | None
    received_at: datetime
    assessed_at: datetime | None
    investigation_referred_at: datetime | None
    acknowledged_at: datetime | None
    outcome: str | None
    outcome_at: datetime | None
    last_feedback_at: datetime | None
    closed_at: datetime | None
    closure_reason: str | None
    reopened_at: datetime | None
    version: int
    action: Action | None
    due_at: datetime | None
    actions: tuple[PendingAction, ...]


# ------------------------------------------------------------------------------- rules


def _t(row: Row, column: str) -> datetime | None:
    return parse_ts_or_none(row[column])


def pending_actions(row: Row, deadlines: dict[str, timedelta]) -> list[PendingAction]:
    """The pending actions of a case row under the policy's deadlines, most urgent first."""
    if row["closed_at"] is not None:
        return []
    received = parse_ts(row["received_at"])
    assessed = _t(row, "assessed_at")
    reopened = _t(row, "reopened_at")
    reassess_from = _t(row, "reassess_from")
    last_feedback = _t(row, "last_feedback_at")

    def feedback() -> PendingAction:
        baseline = max(t for t in (received, last_feedback, reopened) if t is not None)
        return PendingAction(
            "give_feedback", later(baseline, deadlines["feedback_every"]), baseline
        )

    if row["duplicate_of"] is not None:
        return [PendingAction("close", None, parse_ts(row["duplicate_at"]))]
    if assessed is None or reassess_from is not None:
        since = reassess_from or received
        return _ordered(
            [PendingAction("assess", later(since, deadlines["assess_within"]), since), feedback()]
        )
    if row["category"] != "sea_allegation":
        return [PendingAction("close", None, assessed)]

    outcome_at = _t(row, "outcome_at")
    if outcome_at is not None and last_feedback is not None:
        told_after = max(t for t in (outcome_at, reopened) if t is not None)
        if last_feedback >= told_after:
            return [PendingAction("close", None, last_feedback)]

    actions = [feedback()]
    if (
        row["survivor_reachable"]
        and row["consent_decided_at"] is None
        and row["assistance_referred_at"] is None
    ):
        actions.append(
            PendingAction(
                "offer_assistance", later(assessed, deadlines["offer_assistance_within"]), assessed
            )
        )
    referred = _t(row, "investigation_referred_at")
    if referred is None:
        actions.append(
            PendingAction(
                "refer_for_investigation",
                later(assessed, deadlines["refer_for_investigation_within"]),
                assessed,
            )
        )
    elif row["acknowledged_at"] is None and outcome_at is None:
        actions.append(
            PendingAction(
                "chase_acknowledgement", later(referred, deadlines["acknowledge_within"]), referred
            )
        )
    return _ordered(actions)


def _ordered(actions: list[PendingAction]) -> list[PendingAction]:
    return sorted(
        actions,
        key=lambda a: (a.due_at is None, a.due_at or a.since, _RANK[a.action]),
    )


# ------------------------------------------------------------------------------- projection


class InboxProjection(CaseRows):
    """Contract messages -> the focal-point inbox tables."""

    name = "inbox"
    schema_version = 2
    """2: 64-bit integers on PostgreSQL (``pg_sql``); a read model made before is replayed."""
    table = "inbox_cases"
    policy_table = POLICY_TABLE
    schema = _SCHEMA
    tables = _TABLES

    def __init__(self) -> None:
        super().__init__(_HANDLERS)

    def policy_changed(self, db: ReadModelDb) -> None:
        """The open cases' actions follow the new deadlines at once."""
        deadlines = load_deadlines(db, POLICY_TABLE)
        rows = db.execute("SELECT * FROM inbox_cases WHERE closed_at IS NULL").fetchall()
        self.recompute_rows(db, rows, deadlines)

    def recompute_rows(
        self, db: ReadModelDb, rows: Sequence[Row], deadlines: dict[str, timedelta]
    ) -> None:
        """Each case's pending actions in place of its old ones, the most urgent on its row."""
        if not rows:
            return
        cases: list[tuple[str]] = []
        actions_rows: list[tuple[str, str, str | None, str]] = []
        heads: list[tuple[str | None, str | None, str | None, str]] = []
        for row in rows:
            case_id = row["case_id"]
            actions = pending_actions(row, deadlines)
            cases.append((case_id,))
            actions_rows.extend(
                (case_id, a.action, None if a.due_at is None else ts(a.due_at), ts(a.since))
                for a in actions
            )
            head = actions[0] if actions else None
            heads.append(
                (
                    None if head is None else head.action,
                    None if head is None or head.due_at is None else ts(head.due_at),
                    None if head is None else ts(head.since),
                    case_id,
                )
            )
        db.executemany("DELETE FROM inbox_actions WHERE case_id = ?", cases)
        if actions_rows:
            db.executemany(
                "INSERT INTO inbox_actions (case_id, action, due_at, since) VALUES (?, ?, ?, ?)",
                actions_rows,
            )
        db.executemany(
            "UPDATE inbox_cases SET next_action = ?, next_due_at = ?, next_since = ? "
            "WHERE case_id = ?",
            heads,
        )


def _set(db: ReadModelDb, case_id: object, **values: object) -> None:
    set_columns(db, "inbox_cases", case_id, **values)


def _received(db: ReadModelDb, data: CaseReceivedV1, when: str) -> None:
    replace_row(
        db,
        "inbox_cases",
        ("case_id",),
        {
            "case_id": str(data.case_id),
            "agency": data.actor.agency,
            "received_at": ts(data.received_at),
            "recorded_at": when,
            "channel": data.channel,
            "immediate_safety_risk": int(data.immediate_safety_risk),
            "survivor_reachable": int(
                data.complainant_role == "survivor" or data.has_survivor_details
            ),
            "version": data.version,
        },
    )


def _assessed(db: ReadModelDb, data: CaseAssessedV1, when: str) -> None:
    allegation = data.allegation
    _set(
        db,
        data.case_id,
        category=data.category,
        assessed_at=when,
        child_involved=int(allegation is not None and allegation.child_involved),
        implicated_agency=None if allegation is None else allegation.implicated_agency,
        reassess_from=None,
    )


def _focal_points(db: ReadModelDb, data: CaseFocalPointsAssignedV1, when: str) -> None:
    case_id = str(data.case_id)
    db.execute("DELETE FROM inbox_focal_points WHERE case_id = ?", (case_id,))
    db.executemany(
        'INSERT INTO inbox_focal_points (case_id, "user") VALUES (?, ?) ON CONFLICT DO NOTHING',
        [(case_id, user) for user in data.focal_points],
    )


_FACTS = fact_handlers("inbox_cases")


def _transferred(db: ReadModelDb, data: CaseTransferredV1, when: str) -> None:
    db.execute("DELETE FROM inbox_focal_points WHERE case_id = ?", (str(data.case_id),))
    _FACTS[CaseTransferredV1](db, data, when)


_HANDLERS: dict[type[Any], Handler] = {
    **_FACTS,
    CaseReceivedV1: _received,
    CaseAssessedV1: _assessed,
    CaseFocalPointsAssignedV1: _focal_points,
    CaseTransferredV1: _transferred,
}


# ------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class InboxCursor:
    """Where a page of the inbox ended (or begins, going back): its row's place in the
    inbox's order. Times and a case id, no personal data."""

    due_at: str | None
    """the case's next due time as stored (``None``: no deadline)"""
    since: str
    case_id: str


@dataclass(frozen=True)
class InboxFilter:
    """What narrows an agency's inbox (the console's filters); ``None`` / empty: any."""

    overdue: bool = False
    """only cases whose next action is past due"""
    urgent: bool = False
    """only cases with an immediate safety risk or a child involved"""
    action: str | None = None
    """only cases whose next action is this one"""
    category: str | None = None
    """only cases of this category (``none``: not assessed yet)"""


@dataclass(frozen=True)
class InboxPage:
    items: tuple[InboxItem, ...]
    next_cursor: InboxCursor | None
    """``None``: this is the last page."""
    previous_cursor: InboxCursor | None
    """The cursor of the page before (``before=``); ``None``: this is the first page."""


@dataclass(frozen=True)
class InboxCounts:
    open: int
    overdue: int


def _where(
    agency: str, focal_point: str | None, flt: InboxFilter, now: datetime
) -> tuple[str, list[object]]:
    """The WHERE of an agency's inbox (a focal point's when given), filtered."""
    where = [f"agency = ? AND {_OPEN}"]
    params: list[object] = [agency]
    if focal_point is not None:
        where.append('case_id IN (SELECT case_id FROM inbox_focal_points WHERE "user" = ?)')
        params.append(focal_point)
    if flt.overdue:
        where.append("next_due_at < ?")
        params.append(ts(now))
    if flt.urgent:
        where.append("(immediate_safety_risk <> 0 OR child_involved <> 0)")
    if flt.action is not None:
        where.append("next_action = ?")
        params.append(flt.action)
    if flt.category == "none":
        where.append("category IS NULL")
    elif flt.category is not None:
        where.append("category = ?")
        params.append(flt.category)
    return " AND ".join(where), params


def _key(cursor: InboxCursor) -> list[object]:
    return [cursor.due_at or NO_DEADLINE, cursor.since, cursor.case_id]


def inbox_page(
    db: ReadModelDb,
    agency: str,
    *,
    focal_point: str | None = None,
    now: datetime,
    after: InboxCursor | None = None,
    before: InboxCursor | None = None,
    limit: int = 50,
    filter: InboxFilter = InboxFilter(),
) -> InboxPage:
    """One page of the open cases ``agency`` holds (assigned to ``focal_point`` when given),
    in the inbox's order (overdue first, then by due time, then those whose action has no
    deadline, oldest first, then by case id), ``limit`` at most: the first, or the one after
    ``after``, or the one before ``before``. Three queries, whatever the page's size: its
    rows, their actions, their focal points."""
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    if not 1 <= limit <= PAGE_MAX:
        raise ValueError(f"limit must be 1 to {PAGE_MAX}")
    if after is not None and before is not None:
        raise ValueError("a page is after a cursor or before one, not both")
    where, params = _where(agency, focal_point, filter, now)
    key = f"({_DUE_KEY}, next_since, case_id)"
    if after is not None:
        where += f" AND {key} > (?, ?, ?)"
        params += _key(after)
    elif before is not None:
        where += f" AND {key} < (?, ?, ?)"
        params += _key(before)
    order = "DESC" if before is not None else "ASC"
    found = db.execute(
        f"SELECT * FROM inbox_cases WHERE {where}"
        f" ORDER BY {_DUE_KEY} {order}, next_since {order}, case_id {order} LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
    more = len(found) > limit
    rows = found[:limit]
    if before is not None:
        if len(rows) < limit:  # back at the start (cases before it left): the first page
            return inbox_page(
                db, agency, focal_point=focal_point, now=now, limit=limit, filter=filter
            )
        rows.reverse()
    items = _items(db, rows, now)
    first = _cursor(rows[0]) if rows else None
    last = _cursor(rows[-1]) if rows else None
    if before is not None:  # there is a page after this one: the one we came from
        return InboxPage(items, last, first if more else None)
    return InboxPage(items, last if more else None, first if after is not None else None)


def inbox_counts(
    db: ReadModelDb,
    agency: str,
    *,
    focal_point: str | None = None,
    now: datetime,
    filter: InboxFilter = InboxFilter(),
) -> InboxCounts:
    """How many open cases the filtered inbox holds, and how many are overdue (one query)."""
    where, params = _where(agency, focal_point, filter, now)
    row = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN next_due_at < ? THEN 1 ELSE 0 END), 0)"
        f" FROM inbox_cases WHERE {where}",
        [ts(now), *params],
    ).fetchone()
    return InboxCounts(int(row[0]), int(row[1]))


def _cursor(row: Row) -> InboxCursor:
    return InboxCursor(row["next_due_at"], row["next_since"], row["case_id"])


def _in(values: list[str]) -> str:
    return ", ".join("?" for _ in values)


def _items(db: ReadModelDb, rows: list[Row], now: datetime) -> tuple[InboxItem, ...]:
    """The inbox items of ``rows``: their actions and focal points in one query each."""
    if not rows:
        return ()
    ids = [str(r["case_id"]) for r in rows]
    actions = _actions_of_cases(db, ids)
    focal_points = _focal_points_of_cases(db, ids)
    items = []
    for row in rows:
        case_id = str(row["case_id"])
        pending = actions.get(case_id, ())
        if not pending:  # written with the row in one transaction: never seen
            raise RuntimeError(f"inbox: open case {case_id} has no pending action")
        head = pending[0]
        items.append(
            InboxItem(
                case_id=UUID(case_id),
                agency=row["agency"],
                focal_points=focal_points.get(case_id, ()),
                action=head.action,
                due_at=head.due_at,
                overdue=head.is_overdue(now),
                since=head.since,
                actions=pending,
                category=row["category"],
                received_at=parse_ts(row["received_at"]),
                immediate_safety_risk=bool(row["immediate_safety_risk"]),
                child_involved=bool(row["child_involved"]),
                reopened=row["reopened_at"] is not None,
            )
        )
    return tuple(items)


def _actions_of_cases(db: ReadModelDb, ids: list[str]) -> dict[str, tuple[PendingAction, ...]]:
    found: dict[str, list[PendingAction]] = {}
    for r in db.execute(
        f"SELECT case_id, action, due_at, since FROM inbox_actions WHERE case_id IN ({_in(ids)})",
        ids,
    ):
        found.setdefault(str(r["case_id"]), []).append(
            PendingAction(r["action"], parse_ts_or_none(r["due_at"]), parse_ts(r["since"]))
        )
    return {case_id: tuple(_ordered(actions)) for case_id, actions in found.items()}


def _focal_points_of_cases(db: ReadModelDb, ids: list[str]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for r in db.execute(
        'SELECT case_id, "user" FROM inbox_focal_points'
        f' WHERE case_id IN ({_in(ids)}) ORDER BY case_id, "user"',
        ids,
    ):
        found.setdefault(str(r["case_id"]), []).append(str(r["user"]))
    return {case_id: tuple(users) for case_id, users in found.items()}


def inbox(
    db: ReadModelDb, agency: str, *, focal_point: str | None = None, now: datetime
) -> list[InboxItem]:
    """The whole inbox, every page of ``inbox_page`` walked (for tools and tests: the API and
    the console answer a page at a time)."""
    items: list[InboxItem] = []
    after = None
    while True:
        page = inbox_page(db, agency, focal_point=focal_point, now=now, after=after, limit=PAGE_MAX)
        items += page.items
        if page.next_cursor is None:
            return items
        after = page.next_cursor


def case_row(db: ReadModelDb, case_id: UUID | str) -> CaseRow | None:
    """One case as the inbox knows it (``None`` if it has never been seen)."""
    key = str(case_id)
    row = db.execute("SELECT * FROM inbox_cases WHERE case_id = ?", (key,)).fetchone()
    if row is None:
        return None
    actions = _actions_of_cases(db, [key]).get(key, ())
    return CaseRow(
        case_id=UUID(key),
        agency=row["agency"],
        focal_points=_focal_points_of_cases(db, [key]).get(key, ()),
        is_open=row["closed_at"] is None,
        category=row["category"],
        received_at=parse_ts(row["received_at"]),
        assessed_at=_t(row, "assessed_at"),
        investigation_referred_at=_t(row, "investigation_referred_at"),
        acknowledged_at=_t(row, "acknowledged_at"),
        outcome=row["outcome"],
        outcome_at=_t(row, "outcome_at"),
        last_feedback_at=_t(row, "last_feedback_at"),
        closed_at=_t(row, "closed_at"),
        closure_reason=row["closure_reason"],
        reopened_at=_t(row, "reopened_at"),
        version=row["version"],
        action=actions[0].action if actions else None,
        due_at=actions[0].due_at if actions else None,
        actions=actions,
    )
