"""The focal-point inbox: what a focal point sees, in what order, with what deadline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from contracts.actors import ActorRef
from contracts.case import (
    CaseAssessedV1,
    CaseAssistanceReferredV1,
    CaseClosedV1,
    CaseConsentGivenV1,
    CaseFeedbackGivenV1,
    CaseFocalPointsAssignedV1,
    CaseInvestigationAcknowledgedV1,
    CaseInvestigationOutcomeRecordedV1,
    CaseMarkedAsDuplicateV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.network import NetworkPolicyV1
from domain.policy import NetworkPolicy
from projections.base import DEFAULT_POLICY, POLICY_DURATIONS
from projections.inbox import InboxProjection, case_row, inbox
from tests.unit.projection_messages import Feed, allegation, fp, hours

INVESTIGATOR = ActorRef(user="inv-ngo-a", agency="ngo-a", role="investigating_entity")


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    return Feed(InboxProjection(), tmp_path / "inbox.sqlite3")


def actions(feed: Feed, agency: str = "unhcr", now_h: float = 0) -> list[tuple[str, object]]:
    return [(i.action, i.due_at) for i in inbox(feed.db, agency, now=hours(now_h))]


def assess_sea(feed: Feed, case: UUID, at_h: float, agency: str = "unhcr", **changes: object):
    feed.send(
        CaseAssessedV1,
        hours(at_h),
        case,
        actor=fp(agency),
        category="sea_allegation",
        allegation=allegation(**changes),
    )


def test_policy_defaults_are_the_domains() -> None:
    domain = NetworkPolicy()
    for name in POLICY_DURATIONS:
        assert getattr(DEFAULT_POLICY, name) == getattr(domain, name)


def test_a_full_sea_path_walks_through_every_action_and_leaves_when_closed(feed: Feed) -> None:
    case = feed.receive(hours(0))
    assert actions(feed) == [("assess", hours(24))]

    assess_sea(feed, case, 2)
    row = case_row(feed.db, case)
    assert row is not None
    # Offer assistance and refer are both due 24 h after assessment: assistance comes first.
    assert [(a.action, a.due_at) for a in row.actions] == [
        ("offer_assistance", hours(26)),
        ("refer_for_investigation", hours(26)),
        ("give_feedback", hours(24 * 30)),
    ]
    assert actions(feed) == [("offer_assistance", hours(26))]

    feed.send(
        CaseConsentGivenV1,
        hours(3),
        case,
        actor=fp("unhcr"),
        kind="assistance_referral",
        given_by="survivor",
        contact_methods=(),
    )
    assert actions(feed) == [("refer_for_investigation", hours(26))]

    feed.send(
        CaseReferredForInvestigationV1,
        hours(5),
        case,
        actor=fp("unhcr"),
        agency="ngo-a",
        entity="ngo-a-oig",
        shared=("allegation_summary",),
        identity_shared=False,
    )
    assert actions(feed) == [("chase_acknowledgement", hours(5 + 24 * 7))]

    feed.send(CaseInvestigationAcknowledgedV1, hours(50), case, actor=INVESTIGATOR)
    assert actions(feed) == [("give_feedback", hours(24 * 30))]

    feed.send(CaseFeedbackGivenV1, hours(60), case, actor=fp("unhcr"), channel="phone")
    assert actions(feed) == [("give_feedback", hours(60 + 24 * 30))]

    feed.send(
        CaseInvestigationOutcomeRecordedV1,
        hours(500),
        case,
        actor=INVESTIGATOR,
        outcome="substantiated",
    )
    # The complainant must hear of the outcome before the case can close.
    assert actions(feed, now_h=500) == [("give_feedback", hours(60 + 24 * 30))]

    feed.send(CaseFeedbackGivenV1, hours(510), case, actor=fp("unhcr"), channel="phone")
    [item] = inbox(feed.db, "unhcr", now=hours(520))
    assert (item.action, item.due_at, item.overdue, item.since) == (
        "close",
        None,
        False,
        hours(510),
    )

    feed.send(
        CaseClosedV1,
        hours(520),
        case,
        actor=fp("unhcr"),
        reason="investigation_concluded",
        no_outcome_reason_given=False,
        no_feedback_reason_given=False,
    )
    assert inbox(feed.db, "unhcr", now=hours(521)) == []
    row = case_row(feed.db, case)
    assert row is not None and not row.is_open and row.action is None


def test_overdue_cases_come_first_then_by_due_time(feed: Feed) -> None:
    late = feed.receive(hours(0))  # assess due 24
    soon = feed.receive(hours(20))  # assess due 44
    later = feed.receive(hours(10))  # assess due 34
    undated = feed.receive(hours(1))
    feed.send(
        CaseAssessedV1,
        hours(2),
        undated,
        actor=fp("unhcr"),
        category="other_sensitive",
        allegation=None,
    )
    items = inbox(feed.db, "unhcr", now=hours(30))
    assert [i.case_id for i in items] == [late, later, soon, undated]
    assert [i.overdue for i in items] == [True, False, False, False]
    assert [i.action for i in items] == ["assess", "assess", "assess", "close"]


def test_a_focal_point_sees_the_cases_assigned_to_them(feed: Feed) -> None:
    mine = feed.receive(hours(0))
    theirs = feed.receive(hours(1))
    unassigned = feed.receive(hours(2))
    feed.send(
        CaseFocalPointsAssignedV1,
        hours(3),
        mine,
        actor=fp("unhcr"),
        focal_points=("fp-unhcr-1", "fp-unhcr-2"),
    )
    feed.send(
        CaseFocalPointsAssignedV1, hours(3), theirs, actor=fp("unhcr"), focal_points=("fp-unhcr-2",)
    )
    now = hours(4)
    assert [i.case_id for i in inbox(feed.db, "unhcr", focal_point="fp-unhcr-1", now=now)] == [mine]
    assert [i.case_id for i in inbox(feed.db, "unhcr", focal_point="fp-unhcr-2", now=now)] == [
        mine,
        theirs,
    ]
    assert [i.case_id for i in inbox(feed.db, "unhcr", now=now)] == [mine, theirs, unassigned]
    assert inbox(feed.db, "unhcr", now=now)[0].focal_points == ("fp-unhcr-1", "fp-unhcr-2")


def test_a_transferred_case_leaves_the_old_holders_inbox(feed: Feed) -> None:
    case = feed.receive(hours(0))
    feed.send(
        CaseFocalPointsAssignedV1, hours(1), case, actor=fp("unhcr"), focal_points=("fp-unhcr-1",)
    )
    feed.send(
        CaseTransferredV1,
        hours(2),
        case,
        actor=fp("unhcr"),
        from_agency="unhcr",
        to_agency="wfp",
        reason="received_by_wrong_agency",
        shared=("allegation_summary",),
        has_note=False,
    )
    now = hours(3)
    assert inbox(feed.db, "unhcr", now=now) == []
    assert inbox(feed.db, "unhcr", focal_point="fp-unhcr-1", now=now) == []
    [item] = inbox(feed.db, "wfp", now=now)
    assert (item.case_id, item.focal_points, item.action) == (case, (), "assess")


def test_a_reopened_case_returns_and_must_be_assessed_again(feed: Feed) -> None:
    case = feed.receive(hours(0))
    assess_sea(feed, case, 1, implicated_agency=None)
    feed.send(CaseFeedbackGivenV1, hours(2), case, actor=fp("unhcr"), channel="receipt_code")
    feed.send(
        CaseClosedV1,
        hours(3),
        case,
        actor=fp("unhcr"),
        reason="insufficient_information",
        no_outcome_reason_given=True,
        no_feedback_reason_given=False,
    )
    assert inbox(feed.db, "unhcr", now=hours(4)) == []

    feed.send(CaseReopenedV1, hours(100), case, actor=fp("unhcr"))
    [item] = inbox(feed.db, "unhcr", now=hours(101))
    assert (item.action, item.due_at, item.reopened) == ("assess", hours(124), True)
    # Feedback runs from the reopening, not from the feedback before it.
    assert [(a.action, a.due_at) for a in item.actions] == [
        ("assess", hours(124)),
        ("give_feedback", hours(100 + 24 * 30)),
    ]

    assess_sea(feed, case, 105)
    assert actions(feed, now_h=106)[0] == ("offer_assistance", hours(129))


def test_non_sensitive_and_duplicate_cases_only_need_closing(feed: Feed) -> None:
    other = feed.receive(hours(0))
    duplicate = feed.receive(hours(1))
    feed.send(
        CaseAssessedV1,
        hours(2),
        other,
        actor=fp("unhcr"),
        category="non_sensitive_feedback",
        allegation=None,
    )
    feed.send(
        CaseMarkedAsDuplicateV1, hours(3), duplicate, actor=fp("unhcr"), original_case_id=other
    )
    items = inbox(feed.db, "unhcr", now=hours(1000))
    assert [(i.case_id, i.action, i.due_at, i.overdue) for i in items] == [
        (other, "close", None, False),
        (duplicate, "close", None, False),
    ]


def test_an_anonymous_case_without_survivor_details_has_no_assistance_to_offer(
    feed: Feed,
) -> None:
    case = feed.receive(hours(0), role="anonymous", survivor_details=False)
    assess_sea(feed, case, 1)
    assert actions(feed) == [("refer_for_investigation", hours(25))]


def test_an_assistance_referral_counts_as_the_offer(feed: Feed) -> None:
    case = feed.receive(hours(0))
    assess_sea(feed, case, 1)
    feed.send(
        CaseAssistanceReferredV1,
        hours(2),
        case,
        actor=fp("unhcr"),
        referral_id=UUID(int=7),
        service_type="medical",
        provider="clinic",
    )
    assert actions(feed) == [("refer_for_investigation", hours(25))]


def test_the_networks_policy_sets_the_deadlines_of_open_cases(feed: Feed) -> None:
    case = feed.receive(hours(0))
    assert actions(feed) == [("assess", hours(24))]
    feed.policy(hours(1), replace_policy(assess_within=timedelta(hours=4)))
    assert actions(feed) == [("assess", hours(4))]
    assert inbox(feed.db, "unhcr", now=hours(5))[0].overdue
    assert case_row(feed.db, case) is not None


def test_an_unknown_case_is_none(feed: Feed) -> None:
    assert case_row(feed.db, UUID(int=99)) is None


def replace_policy(**changes: timedelta) -> NetworkPolicyV1:
    values = {f: getattr(DEFAULT_POLICY, f) for f in DEFAULT_POLICY.__struct_fields__}
    values.update(changes)
    return NetworkPolicyV1(**values)
