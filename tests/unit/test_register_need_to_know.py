"""The case register attacked with command sequences (issue #21, ADR 25).

A Hypothesis state machine drives the real application with any sequence of commands (those
of ``test_projections_total``: intake, triage, transfers, referrals, investigation,
closure, reopening, erasure, policy changes, time passing) and keeps the register read model
up to date from the contract messages, exactly as the projector does. After every step:

- every reader (focal points and investigating entities of each agency, the coordinator,
  an auditor, a user holding two roles, a service provider, an intake operator) pages
  through the whole register, and gets exactly the cases the API's own rule
  (``best_case_access``, which ``GET /v1/cases/{id}`` answers 404 by) lets them see: none
  more, none fewer; each row tells the case's status, holder, category and state as the
  case itself does; an investigating entity's rows show no deadline;
- a search with drawn filters gives exactly the visible cases that match them.

Paging under concurrent writes: a traversal is begun, and any commands run between its
pages. No case is ever given twice, and every case visible from the first page to the last
is given.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

from domain.actors import Role
from domain.case import Allegation
from domain.need_to_know import best_case_access
from domain.vocabulary import (
    AgeBand,
    AllegationType,
    ComplaintCategory,
    PersonnelCategory,
    Sex,
    SharedItem,
)
from projections.inbox.model import case_row
from projections.register import (
    STATUSES,
    Cursor,
    RegisterFilter,
    RegisterProjection,
    register_page,
)
from services.api.register import register_reader
from services.identity.tokens import Principal
from services.projector.runner import apply_batch, open_projection
from tests.unit import test_projections_total as total

AGENCIES = total.AGENCIES

READERS: tuple[Principal, ...] = (
    *(Principal(f"fp-{a}", a, frozenset({Role.FOCAL_POINT})) for a in AGENCIES),
    *(Principal(f"inv-{a}", a, frozenset({Role.INVESTIGATING_ENTITY})) for a in AGENCIES),
    Principal("coordinator", "network", frozenset({Role.COORDINATOR})),
    Principal("auditor-1", "audit", frozenset({Role.AUDITOR})),
    Principal("two-hats", "wfp", frozenset({Role.FOCAL_POINT, Role.INVESTIGATING_ENTITY})),
    Principal("prov-med", "med-a", frozenset({Role.SERVICE_PROVIDER})),
    Principal("op-unhcr", "unhcr", frozenset({Role.INTAKE_OPERATOR})),
)

filters = st.builds(
    RegisterFilter,
    statuses=st.lists(st.sampled_from(STATUSES), max_size=2, unique=True).map(tuple),
    agency=st.none() | st.sampled_from(AGENCIES),
    categories=st.lists(
        st.sampled_from(("sea_allegation", "other_sensitive", "unassessed")),
        max_size=2,
        unique=True,
    ).map(tuple),
    received_from=st.none()
    | st.dates(date(2025, 1, 1), date(2026, 12, 31)).map(
        lambda d: datetime(d.year, d.month, d.day, tzinfo=total.START.tzinfo)
    ),
    received_before=st.none(),
    overdue=st.none() | st.booleans(),
    open=st.none() | st.booleans(),
)


class RegisterUnderCommands(total.CommandSequences):
    """``test_projections_total``'s commands, the register (and the inbox, to compare the
    overdue flag with) kept from their messages."""

    def __init__(self) -> None:
        super().__init__()
        self.register = RegisterProjection()
        directory = Path(self._resources.enter_context(tempfile.TemporaryDirectory()))
        self.register_db = open_projection(self.register, directory / "register.sqlite3")
        self._resources.callback(self.register_db.close)
        self.register_position = 0
        # a traversal in progress: reader, page size, cursor, cases given, cases visible
        # throughout so far
        self.paging: dict[str, Any] | None = None

    @invariant()
    def read_models_follow(self) -> None:
        """Only the inbox (its overdue flag is compared) besides the register: the other
        read models are ``test_projections_total``'s to test."""
        messages = list(total._published(self.app, self.position))
        if messages:
            projection, db = self.projections[0]
            assert apply_batch(projection, db, messages).position == messages[-1][0]
            self.position = messages[-1][0]

    # the parent's invariants about the other read models are theirs to test
    def the_inbox_holds_open_cases_only(self) -> None:
        return None

    def statistics_add_up(self) -> None:
        return None

    # ------------------------------------------------------------------ helpers

    def _visible(self, principal: Principal) -> set[UUID]:
        policy = self.app.network().policy
        return {
            case_id
            for case_id in self.case_ids
            if best_case_access(
                principal.user,
                principal.agency,
                principal.roles,
                self.app.get_case(case_id),
                policy,
            )
            is not None
        }

    def _all(self, principal: Principal, flt: RegisterFilter, limit: int) -> list[Any]:
        reader = register_reader(principal)
        rows: list[Any] = []
        after: Cursor | None = None
        while True:
            page = register_page(
                self.register_db, reader, flt, now=self.now, after=after, limit=limit
            )
            rows += page.rows
            if page.next_cursor is None:
                return rows
            after = page.next_cursor

    def _matches(self, case_id: UUID, flt: RegisterFilter) -> bool:
        case = self.app.get_case(case_id)
        category = None if case.assessment is None else str(case.assessment.category)
        received = case.received_at
        if flt.statuses and str(case.status) not in flt.statuses:
            return False
        if flt.agency is not None and case.custodian != flt.agency:
            return False
        if flt.categories and (category or "unassessed") not in flt.categories:
            return False
        if flt.received_from is not None and received < flt.received_from:
            return False
        if flt.open is not None and flt.open == case.is_closed:
            return False
        if flt.overdue is not None:
            inbox = case_row(self.projections[0][1], case_id)
            assert inbox is not None
            overdue = inbox.due_at is not None and inbox.due_at < self.now
            if overdue != flt.overdue:
                return False
        return True

    # ------------------------------------------------------------------ a shortcut

    @rule(case_id=total.CommandSequences.cases, implicated=st.sampled_from(AGENCIES))
    def triage_and_refer(self, case_id: UUID, implicated: str) -> None:
        """Assessment then referral in one step, so that investigating entities (and the
        statuses after a referral) are reached in short sequences."""
        received = self.app.get_case(case_id).received_at.date()
        self._try(
            self.app.assess_case,
            case_id,
            actor=self._handler(case_id),
            category=ComplaintCategory.SEA_ALLEGATION,
            allegation=Allegation(
                allegation_type=AllegationType.SEXUAL_EXPLOITATION,
                subtype=None,
                child_involved=False,
                implicated_agency=implicated,
                personnel_category=PersonnelCategory.UN_STAFF,
                incident_date=received,
                incident_area=total.AREA,
                victim_sex=Sex.FEMALE,
                victim_age_band=AgeBand.ADULT,
            ),
            at=self.now,
        )
        self._try(
            self.app.refer_for_investigation,
            case_id,
            actor=self._handler(case_id),
            entity=f"{implicated}-oig",
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=self.now,
        )

    # ------------------------------------------------------------------ the register follows

    @invariant()
    def register_follows(self) -> None:
        messages = list(total._published(self.app, self.register_position))
        if not messages:
            return
        done = apply_batch(self.register, self.register_db, messages)
        assert done.gap is None and done.stall is None
        self.register_position = messages[-1][0]

    @invariant()
    def every_reader_lists_exactly_the_cases_it_may_get(self) -> None:
        self.register_follows()
        for principal in READERS:
            rows = self._all(principal, RegisterFilter(), limit=3)
            listed = [r.case_id for r in rows]
            assert len(listed) == len(set(listed)), principal
            assert set(listed) == self._visible(principal), principal
            for row in rows:
                case = self.app.get_case(row.case_id)
                assert row.status == str(case.status)
                assert row.agency == case.custodian
                assert row.is_open == (not case.is_closed)
                assert row.category == (
                    None if case.assessment is None else str(case.assessment.category)
                )
                only_investigating = (
                    Role.COORDINATOR not in principal.roles
                    and Role.AUDITOR not in principal.roles
                    and not (
                        Role.FOCAL_POINT in principal.roles and case.custodian == principal.agency
                    )
                )
                if only_investigating:
                    assert row.next_action is None and row.due_at is None and row.overdue is None

    @invariant()
    def a_traversal_keeps_what_stays_visible(self) -> None:
        if self.paging is not None:
            self.paging["steady"] &= self._visible(self.paging["reader"])

    # ------------------------------------------------------------------ searches

    @rule(reader=st.sampled_from(READERS), flt=filters, limit=st.integers(1, 4))
    def search(self, reader: Principal, flt: RegisterFilter, limit: int) -> None:
        self.register_follows()
        listed = [r.case_id for r in self._all(reader, flt, limit)]
        assert len(listed) == len(set(listed))
        expected = {c for c in self._visible(reader) if self._matches(c, flt)}
        if flt.overdue is not None and not (
            Role.COORDINATOR in reader.roles
            or Role.AUDITOR in reader.roles
            or Role.FOCAL_POINT in reader.roles
        ):
            expected = set()  # an investigating entity's grant has no deadlines to filter on
        elif flt.overdue is not None and Role.INVESTIGATING_ENTITY in reader.roles:
            # two hats: deadlines filter through the focal point's grant only
            expected = {c for c in expected if self.app.get_case(c).custodian == reader.agency}
        assert set(listed) == expected, (reader, flt)

    # ------------------------------------------------------------------ paging under writes

    @precondition(lambda self: self.paging is None)
    @rule(reader=st.sampled_from(READERS[:5]), limit=st.integers(1, 3))
    def begin_paging(self, reader: Principal, limit: int) -> None:
        self.register_follows()
        self.paging = {
            "reader": reader,
            "limit": limit,
            "cursor": None,
            "given": [],
            "steady": self._visible(reader),
        }
        self.turn_page()

    @precondition(lambda self: self.paging is not None)
    @rule()
    def turn_page(self) -> None:
        assert self.paging is not None
        self.register_follows()
        paging = self.paging
        page = register_page(
            self.register_db,
            register_reader(paging["reader"]),
            RegisterFilter(),
            now=self.now,
            after=paging["cursor"],
            limit=paging["limit"],
        )
        for row in page.rows:
            assert row.case_id not in paging["given"], "a case given twice"
        paging["given"] += [r.case_id for r in page.rows]
        paging["cursor"] = page.next_cursor
        if page.next_cursor is None:
            missed = paging["steady"] - set(paging["given"])
            assert not missed, f"skipped while visible throughout: {missed}"
            self.paging = None


QUICK = {"machines": 12, "steps": 40}
"""``make test``: about 10 s of CPU."""
LONG = {"machines": 400, "steps": 80}
"""``make soak``."""


def _settings(size: dict[str, int]) -> settings:
    return settings(
        max_examples=size["machines"],
        stateful_step_count=size["steps"],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_the_register_lists_exactly_what_each_reader_may_get_and_pages_without_skips() -> None:
    run_state_machine_as_test(RegisterUnderCommands, settings=_settings(QUICK))


@pytest.mark.soak
def test_a_long_run_of_the_register_under_commands() -> None:
    run_state_machine_as_test(RegisterUnderCommands, settings=_settings(LONG))
