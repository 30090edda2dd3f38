"""The inbox's pages (issue #16): keyset paging over the inbox read model, on SQLite and on
PostgreSQL read models (ADR 16), attacked with commands between pages.

- A Hypothesis state machine opens, assesses, assigns, transfers, closes and reopens cases
  in a few agencies, changes the network's deadlines (every open case's due time moves),
  and walks inboxes page by page (an agency's, a focal point's) with those commands between
  the pages. Checked against the machine's own record of who holds what, and against the
  stored order keys read at each page:
  - a walk during which nothing changed lists exactly the inbox, in its order, each case
    once (also checked at any step: a whole walk at once);
  - a case that stays in the inbox with the same place in the order all through a walk is
    listed, once; a case is listed twice only if its place moved during the walk;
  - every case a page lists is open and held by the walked agency when the page is read
    (a focal point's: assigned to them), and the page is in the inbox's order.
- A page costs the same number of queries whatever its size (counted on SQLite by its trace
  callback, on PostgreSQL by the server's statement counter of the connection).
- The inbox's order and a focal point's filter are served by indexes (the query plans).
- A read model made before these indexes gets them when its projector starts, in place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from contracts.actors import ActorRef
from contracts.case import (
    CaseAssessedV1,
    CaseClosedV1,
    CaseFocalPointsAssignedV1,
    CaseReceivedV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.network import NetworkPolicyV1
from projections.base import DEFAULT_POLICY, ReadModelDb
from projections.inbox import InboxCursor, InboxProjection, case_row, inbox_page
from services.projector.runner import prepare
from services.projector.storage import ReadModelStore
from tests.read_model_places import Places
from tests.unit.projection_messages import Feed, allegation, fp, hours

AGENCIES = ("unhcr", "wfp", "ngo-a")
USERS = ("fp-1", "fp-2", "fp-3")


class StoreFeed(Feed):
    """``Feed`` over a read model in either database."""

    def __init__(self, where: Path | ReadModelStore) -> None:
        super().__init__(InboxProjection(), where)  # type: ignore[arg-type]


Key = tuple[bool, str, str, str]
"""A case's place in the inbox's order: no deadline (last), due time, since, case id."""


def place(due_at: str | None, since: str, case_id: str) -> Key:
    return (due_at is None, due_at or "", since, case_id)


def keys(db: ReadModelDb, agency: str, user: str | None) -> dict[str, Key]:
    """The inbox's cases with their place in its order, straight from the table (the test's
    own query: every open row of the agency, no paging, no index needed)."""
    rows = db.execute(
        "SELECT case_id, next_due_at, next_since FROM inbox_cases"
        " WHERE agency = ? AND closed_at IS NULL AND next_action IS NOT NULL",
        (agency,),
    ).fetchall()
    found = {r[0]: place(r[1], r[2], r[0]) for r in rows}
    if user is not None:
        mine = {
            r[0]
            for r in db.execute('SELECT case_id FROM inbox_focal_points WHERE "user" = ?', (user,))
        }
        found = {k: v for k, v in found.items() if k in mine}
    return found


@dataclass
class Case:
    agency: str
    open: bool = True
    assessed: bool = False
    focal_points: tuple[str, ...] = ()


@dataclass
class Walk:
    agency: str
    user: str | None
    limit: int
    cursor: InboxCursor | None = None
    listed: list[str] = field(default_factory=list)
    changed: bool = False
    """whether any command ran since the walk began"""
    seen: list[dict[str, Key]] = field(default_factory=list)
    """the inbox's keys at the walk's start and after each page"""
    done: bool = False


class InboxPaging(RuleBasedStateMachine):
    feed: StoreFeed
    prefix: str

    def __init__(self) -> None:
        super().__init__()
        InboxPaging.examples += 1
        # each example has agencies and users of its own in the test's one read model
        self.tag = f"x{InboxPaging.examples}"
        self.cases: dict[str, Case] = {}
        self.walk: Walk | None = None
        self.clock = 0.0
        # the deadlines as every example starts (the read model outlives an example)
        self.feed.policy(hours(0), policy())

    examples = 0
    walks = [0, 0]
    """walks ended, without and with commands between their pages"""
    cases_b = Bundle("cases")

    def agency(self, i: int) -> str:
        return f"{AGENCIES[i]}-{self.tag}"

    def user(self, i: int) -> str:
        return f"{USERS[i]}-{self.tag}"

    def tick(self) -> datetime:
        self.clock += 0.5
        return hours(self.clock)

    def touched(self) -> None:
        if self.walk is not None:
            self.walk.changed = True

    # ---- commands

    @rule(
        target=cases_b, agency=st.integers(0, 2), back=st.integers(0, 400), key=st.integers(0, 255)
    )
    def open_case(self, agency: int, back: int, key: int) -> str:
        at = self.tick()
        code = self.agency(agency)
        # ids whose order (the last tie-break) the search chooses; unique by the counter
        case_id = UUID(int=(InboxPaging.examples << 64) | (key << 16) | len(self.cases))
        # received up to 400 hours before it is recorded: some overdue at once, some not
        self.feed.send(
            CaseReceivedV1,
            at,
            case_id,
            actor=ActorRef(user=f"intake-{code}", agency=code, role="intake_operator"),
            received_at=at - timedelta(hours=back),
            channel="hotline",
            complainant_role="survivor",
            immediate_safety_risk=False,
            has_complainant_details=True,
            has_survivor_details=True,
        )
        self.cases[str(case_id)] = Case(code)
        self.touched()
        return str(case_id)

    @rule(case=cases_b, sea=st.booleans())
    def assess(self, case: str, sea: bool) -> None:
        c = self.cases[case]
        if not c.open:
            return
        self.feed.send(
            CaseAssessedV1,
            self.tick(),
            UUID(case),
            actor=fp(c.agency),
            category="sea_allegation" if sea else "other_sensitive",
            allegation=allegation() if sea else None,
        )
        c.assessed = True
        self.touched()

    @rule(case=cases_b, users=st.sets(st.integers(0, 2), max_size=2))
    def assign(self, case: str, users: set[int]) -> None:
        c = self.cases[case]
        if not c.open:
            return
        chosen = tuple(sorted(self.user(u) for u in users))
        self.feed.send(
            CaseFocalPointsAssignedV1,
            self.tick(),
            UUID(case),
            actor=fp("unhcr"),
            focal_points=chosen,
        )
        c.focal_points = chosen
        self.touched()

    @rule(case=cases_b, to=st.integers(0, 2))
    def transfer(self, case: str, to: int) -> None:
        c = self.cases[case]
        target = self.agency(to)
        if not c.open or target == c.agency:
            return
        self.feed.send(
            CaseTransferredV1,
            self.tick(),
            UUID(case),
            actor=fp("unhcr"),
            from_agency=c.agency,
            to_agency=target,
            reason="received_by_wrong_agency",
            shared=(),
            has_note=False,
        )
        c.agency, c.focal_points = target, ()
        self.touched()

    @rule(case=cases_b)
    def close_or_reopen(self, case: str) -> None:
        c = self.cases[case]
        if c.open:
            self.feed.send(
                CaseClosedV1,
                self.tick(),
                UUID(case),
                actor=fp("unhcr"),
                reason="insufficient_information",
                no_outcome_reason_given=True,
                no_feedback_reason_given=True,
            )
        else:
            self.feed.send(CaseReopenedV1, self.tick(), UUID(case), actor=fp("unhcr"))
        c.open = not c.open
        self.touched()

    @rule(days=st.integers(1, 40))
    def deadlines_change(self, days: int) -> None:
        """Every open case's due time moves (the network's policy)."""
        self.feed.policy(self.tick(), policy(assess_within=timedelta(days=days)))
        self.touched()

    # ---- walks

    @precondition(lambda self: self.walk is None)
    @rule(agency=st.integers(0, 2), user=st.none() | st.integers(0, 2), limit=st.integers(1, 4))
    def start_walk(self, agency: int, user: int | None, limit: int) -> None:
        code = self.agency(agency)
        name = None if user is None else self.user(user)
        self.walk = Walk(code, name, limit)
        self.walk.seen.append(keys(self.feed.db, code, name))

    @precondition(lambda self: self.walk is not None)
    @rule()
    def next_page(self) -> None:
        walk = self.walk
        assert walk is not None
        now = self.now()
        page = inbox_page(
            self.feed.db,
            walk.agency,
            focal_point=walk.user,
            now=now,
            after=walk.cursor,
            limit=walk.limit,
        )
        current = keys(self.feed.db, walk.agency, walk.user)
        listed = [str(i.case_id) for i in page.items]
        assert len(listed) <= walk.limit
        for case_id in listed:  # open, held by the agency (and assigned) as the page is read
            c = self.cases[case_id]
            assert c.open and c.agency == walk.agency, (case_id, c, walk.agency)
            assert walk.user is None or walk.user in c.focal_points
            assert case_id in current
        order = [current[c] for c in listed]
        assert order == sorted(order), "a page out of the inbox's order"
        if walk.cursor is not None and listed:
            start = place(walk.cursor.due_at, walk.cursor.since, walk.cursor.case_id)
            assert order[0] > start, "a page starts before its cursor"
        if page.next_cursor is None:
            # the last page: nothing of the inbox is after it
            last = order[-1] if order else None
            tail = [k for k in current.values() if last is None or k > last]
            if walk.cursor is not None:
                start = place(walk.cursor.due_at, walk.cursor.since, walk.cursor.case_id)
                tail = [k for k in tail if k > start]
            assert not tail, "the last page left cases out"
        else:
            assert len(listed) == walk.limit, "a page short of its limit before the end"
        walk.listed += listed
        walk.seen.append(current)
        walk.cursor = page.next_cursor
        if page.next_cursor is None:
            self.end_walk(walk)
            self.walk = None

    @rule(agency=st.integers(0, 2), user=st.none() | st.integers(0, 2), limit=st.integers(1, 5))
    def walk_at_once(self, agency: int, user: int | None, limit: int) -> None:
        """Every page of an inbox, nothing between them: exactly the inbox, in its order."""
        code = self.agency(agency)
        name = None if user is None else self.user(user)
        expected = keys(self.feed.db, code, name)
        listed: list[str] = []
        cursor = None
        for _ in range(len(expected) + 1):  # a page at least a case, and the last
            page = inbox_page(
                self.feed.db, code, focal_point=name, now=self.now(), after=cursor, limit=limit
            )
            listed += [str(i.case_id) for i in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        else:
            raise AssertionError(f"a walk of {len(expected)} cases did not end")
        assert listed == sorted(expected, key=expected.__getitem__)

    def end_walk(self, walk: Walk) -> None:
        first, *later = walk.seen
        if not walk.changed:
            # nothing changed: exactly the inbox, in its order, each case once
            assert walk.listed == sorted(first, key=first.__getitem__)
        stable = {
            case_id for case_id, key in first.items() if all(s.get(case_id) == key for s in later)
        }
        missing = stable - set(walk.listed)
        assert not missing, f"cases that stayed in place were skipped: {missing}"
        twice = {c for c in walk.listed if walk.listed.count(c) > 1}
        moved = {c for c in twice if len({s.get(c) for s in walk.seen}) > 1}
        assert twice == moved, f"listed twice though their place never moved: {twice - moved}"
        InboxPaging.walks[walk.changed] += 1

    def now(self) -> datetime:
        return hours(self.clock)

    @invariant()
    def the_table_holds_what_the_machine_holds(self) -> None:
        """The test's own query agrees with the machine's record (so the checks above
        compare against the truth)."""
        for i in range(3):
            code = self.agency(i)
            held = {k for k, c in self.cases.items() if c.open and c.agency == code}
            assert set(keys(self.feed.db, code, None)) == held


def policy(**changes: timedelta) -> NetworkPolicyV1:
    values = {f: getattr(DEFAULT_POLICY, f) for f in DEFAULT_POLICY.__struct_fields__}
    values.update(changes)
    return NetworkPolicyV1(**values)


@pytest.fixture
def feed(read_model_places: Places) -> Iterator[StoreFeed]:
    made = StoreFeed(read_model_places("inbox"))
    yield made
    made.db.close()


def test_paging_with_commands_between_pages(feed: StoreFeed) -> None:
    InboxPaging.feed = feed
    InboxPaging.walks = [0, 0]
    run_state_machine_as_test(
        InboxPaging,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    quiet, busy = InboxPaging.walks
    assert quiet > 0 and busy > 0, "the search walked no inbox to its end"  # not vacuous
    print(f"walks checked: {quiet} with nothing changed, {busy} with commands between pages")


# ------------------------------------------------------------------------------- queries


class Counter:
    """Statements a read-model connection sends to its database: SQLite's trace callback
    (every statement SQLite runs), or on PostgreSQL each statement the connection's
    ``execute`` sends to the server."""

    def __init__(self, db: ReadModelDb) -> None:
        self.db = db
        self.statements: list[str] = []

    def __enter__(self) -> Counter:
        if isinstance(self.db, sqlite3.Connection):
            self.db.set_trace_callback(self.statements.append)
        else:
            self._execute = self.db.execute
            statements = self.statements

            def counted(sql: str, parameters: Any = (), /) -> Any:
                statements.append(sql)
                return self._execute(sql, parameters)

            self.db.execute = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.db, sqlite3.Connection):
            self.db.set_trace_callback(None)
        else:
            del self.db.execute  # type: ignore[attr-defined]


def fill(feed: StoreFeed, agency: str, cases: int) -> list[UUID]:
    made = []
    for n in range(cases):
        case_id = feed.receive(hours(n), agency, received_at=hours(n - 200 + 7 * (n % 5)))
        feed.send(
            CaseFocalPointsAssignedV1,
            hours(n),
            case_id,
            actor=fp(agency),
            focal_points=(f"fp-{agency}-1", f"fp-{agency}-{2 + n % 3}"),
        )
        made.append(case_id)
    return made


@pytest.mark.parametrize("focal_point", [None, "fp-unhcr-1"])
def test_a_page_costs_three_queries_whatever_its_size(
    feed: StoreFeed, focal_point: str | None
) -> None:
    fill(feed, "unhcr", 60)
    counts = {}
    for limit in (1, 10, 50):
        with Counter(feed.db) as counter:
            page = inbox_page(
                feed.db, "unhcr", focal_point=focal_point, now=hours(100), limit=limit
            )
        assert len(page.items) == limit
        assert all(len(i.focal_points) == 2 and i.actions for i in page.items)
        counts[limit] = len(counter.statements)
    assert counts == {1: 3, 10: 3, 50: 3}, counts


def plan(db: ReadModelDb, sql: str, params: list[Any]) -> str:
    if isinstance(db, sqlite3.Connection):
        return " | ".join(str(r[3]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    db.execute("SET enable_seqscan = off")  # a small table: ask whether an index can serve
    try:
        return " | ".join(str(r[0]) for r in db.execute(f"EXPLAIN {sql}", params))
    finally:
        db.execute("SET enable_seqscan = on")


def test_the_inbox_order_and_a_focal_points_filter_are_served_by_indexes(
    feed: StoreFeed,
) -> None:
    fill(feed, "unhcr", 30)
    statements: list[tuple[str, list[Any]]] = []

    class Recording:
        def __init__(self, db: ReadModelDb) -> None:
            self.db = db

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            statements.append((sql, list(parameters)))
            return self.db.execute(sql, parameters)

        def executemany(self, sql: str, parameters: Any, /) -> Any:
            raise AssertionError("a read does not write")

    after = InboxCursor(hours(-1000).isoformat(), hours(0).isoformat(), str(UUID(int=0)))
    inbox_page(Recording(feed.db), "unhcr", now=hours(100), after=after)  # type: ignore[arg-type]
    inbox_page(
        Recording(feed.db),  # type: ignore[arg-type]
        "unhcr",
        focal_point="fp-unhcr-1",
        now=hours(100),
    )
    assert len(statements) == 6  # two pages, neither empty
    rows, actions, focal_points, mine, *_ = statements
    assert "inbox_open_by_due" in plan(feed.db, *rows)
    assert "Sort" not in plan(feed.db, *rows) and "TEMP B-TREE" not in plan(feed.db, *rows)
    for sql, params in (actions, focal_points):
        found = plan(feed.db, sql, params)
        assert "inbox_actions" in found or "inbox_focal_points" in found
        assert "SCAN" not in found and "Seq Scan" not in found, found
    found = plan(feed.db, *mine)
    assert "inbox_focal_points_by_user" in found, found
    assert "Seq Scan on inbox_cases" not in found and "SCAN inbox_cases" not in found, found


def test_a_read_model_made_before_the_paging_indexes_gets_them_in_place(
    feed: StoreFeed,
) -> None:
    """The indexes are ``CREATE INDEX IF NOT EXISTS`` in the projection's schema, which
    every projector start runs (``prepare``): an inbox read model made without them gets them
    with its rows and position kept (no replay; the schema version is unchanged)."""
    fill(feed, "unhcr", 5)
    for index in NEW_INDEXES:
        feed.db.execute(f"DROP INDEX {index}")
    assert not NEW_INDEXES & index_names(feed.db)  # as the release before made it
    position = feed.db.execute("SELECT position FROM projection_position").fetchone()[0]
    prepare(InboxProjection(), feed.db)  # what a projector's start does
    assert index_names(feed.db) >= NEW_INDEXES
    assert feed.db.execute("SELECT position FROM projection_position").fetchone()[0] == position
    assert position == feed.position > 0
    assert len(inbox_page(feed.db, "unhcr", now=hours(10), limit=50).items) == 5


NEW_INDEXES = {"inbox_open_by_due", "inbox_focal_points_by_user"}


def index_names(db: ReadModelDb) -> set[str]:
    if isinstance(db, sqlite3.Connection):
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return {
        r[0]
        for r in db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    }


def test_one_case_is_three_look_ups_by_its_key(feed: StoreFeed) -> None:
    """``GET /v1/inbox/cases/{id}``: the row, its actions, its focal points, each found by
    the case id's index (the tables' primary keys), whatever the read model holds."""
    [case_id, *_] = fill(feed, "unhcr", 20)
    statements: list[tuple[str, list[Any]]] = []

    class Recording:
        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            statements.append((sql, list(parameters)))
            return feed.db.execute(sql, parameters)

    row = case_row(Recording(), case_id)  # type: ignore[arg-type]
    assert row is not None and len(row.focal_points) == 2 and row.actions
    assert len(statements) == 3
    for sql, params in statements:
        found = plan(feed.db, sql, params)
        assert "SCAN" not in found and "Seq Scan" not in found, found
        assert "SEARCH" in found or "Index" in found, found
