"""Every rule of the prevention work (issue #22) refuses what it forbids, with its named
error, and records nothing; Hypothesis searches the values around each bound."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.actors import Actor, Role
from domain.errors import (
    ActionNotPermitted,
    AlreadyOpen,
    DomainError,
    ImplausibleTime,
    InvalidCode,
    InvalidCommand,
    NotAFocalPoint,
    UnknownAgency,
)
from domain.prevention import (
    DEFAULT_RISK_FACTORS,
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    PreventionSettings,
    RiskAssessment,
    TrainedCounts,
    TrainingSession,
    TrainingTarget,
    Withdrawal,
    WorkPlan,
    readiness_id,
    work_plan_id,
)
from domain.vocabulary import (
    ActionStatus,
    AudienceCategory,
    AwarenessKind,
    Channel,
    CommunityAudience,
    MitigationMeasure,
    ReadinessRole,
    Sector,
    TrainingTopic,
    WorkPlanActivityKind,
)
from tests.world import (
    COORDINATOR,
    FOCAL_POINT,
    NGO_FOCAL_POINT,
    OPERATOR,
    OTHER_FOCAL_POINT,
    network_aggregate,
)

AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TODAY = AT.date()
NETWORK = network_aggregate(AT - timedelta(days=1))
SETTINGS = PreventionSettings()
RATINGS = dict.fromkeys(DEFAULT_RISK_FACTORS, 3)


def refused(error: type[DomainError], command: Callable[[], object], *aggregates: Any) -> None:
    """``command`` raises ``error`` and none of ``aggregates`` gained an event."""
    before = [a.version for a in aggregates]
    with pytest.raises(error):
        command()
    assert [a.version for a in aggregates] == before


def training(**overrides: Any) -> TrainingSession:
    values: dict[str, Any] = {
        "actor": FOCAL_POINT,
        "agency": "unhcr",
        "held_on": TODAY - timedelta(days=3),
        "area": "SO22",
        "audience": AudienceCategory.STAFF,
        "topic": TrainingTopic.SEA_BASICS,
        "trained": TrainedCounts(female=12, male=9),
        "at": AT,
    }
    values.update(overrides)
    return TrainingSession.record(NETWORK, **values)


def awareness(**overrides: Any) -> AwarenessActivity:
    values: dict[str, Any] = {
        "actor": FOCAL_POINT,
        "agency": "unhcr",
        "held_on": TODAY - timedelta(days=3),
        "area": "SO22",
        "kind": AwarenessKind.COMMUNITY_MEETING,
        "audience": CommunityAudience.WOMEN,
        "reach": 40,
        "preferred_channels": (Channel.HOTLINE, Channel.IN_PERSON),
        "at": AT,
    }
    values.update(overrides)
    return AwarenessActivity.record(NETWORK, **values)


def assessment(**overrides: Any) -> RiskAssessment:
    values: dict[str, Any] = {
        "actor": FOCAL_POINT,
        "agency": "unhcr",
        "area": "SO22",
        "sector": Sector.FOOD_SECURITY,
        "assessed_on": TODAY,
        "ratings": RATINGS,
        "at": AT,
    }
    values.update(overrides)
    return RiskAssessment.assess(NETWORK, SETTINGS, **values)


# ------------------------------------------------------------------------- trainings


def test_a_focal_point_records_a_training_of_their_agency_in_counts_only() -> None:
    session = training()
    assert session.trained.total == 21
    assert not session.withdrawn
    recorded = session.collect_events()[0]
    assert set(vars(recorded)) >= {"agency", "area", "audience", "topic", "trained"}


@pytest.mark.parametrize(
    ("actor", "agency", "error"),
    [
        (OTHER_FOCAL_POINT, "unhcr", ActionNotPermitted),
        (OPERATOR, "unhcr", ActionNotPermitted),
        (Actor("aud", "unhcr", Role.AUDITOR), "unhcr", ActionNotPermitted),
        (COORDINATOR, "nobody", UnknownAgency),
    ],
)
def test_only_the_agency_or_the_coordinator_records_its_trainings(
    actor: Actor, agency: str, error: type[DomainError]
) -> None:
    with pytest.raises(error):
        training(actor=actor, agency=agency)


def test_the_coordinator_records_any_agency_s_returns() -> None:
    assert training(actor=COORDINATOR, agency="wfp").agency == "wfp"


@given(days=st.integers(min_value=-3000, max_value=3000))
def test_a_training_is_held_before_it_is_recorded_and_not_over_five_years_before(
    days: int,
) -> None:
    held_on = TODAY - timedelta(days=days)
    if 0 <= days <= 5 * 366:
        assert training(held_on=held_on).held_on == held_on
    else:
        with pytest.raises(ImplausibleTime):
            training(held_on=held_on)


@given(
    female=st.integers(min_value=-5, max_value=1_000_005),
    male=st.integers(min_value=-5, max_value=1_000_005),
    other=st.integers(min_value=-5, max_value=5),
)
@settings(max_examples=60)
def test_trained_counts_are_whole_non_negative_and_bounded(
    female: int, male: int, other: int
) -> None:
    fits = min(female, male, other) >= 0 and 0 < female + male + other <= 1_000_000
    if fits:
        assert TrainedCounts(female, male, other).total == female + male + other
    else:
        with pytest.raises(InvalidCommand):
            TrainedCounts(female, male, other)


@pytest.mark.parametrize(
    "area",
    ["", "a b", "x" * 25, "Kakuma; DROP", "Jane Doe", "unknown", "OTHER_AREA", "Total", "-A1"],
)
def test_an_area_is_a_code_not_a_place_description(area: str) -> None:
    with pytest.raises(InvalidCommand):
        training(area=area)


@pytest.mark.parametrize(
    ("make", "topic"),
    [
        (training, "domain.prevention:TrainingSession.Withdrawn"),
        (awareness, "domain.prevention:AwarenessActivity.Withdrawn"),
    ],
    ids=["training", "awareness"],
)
def test_a_withdrawn_record_cannot_be_withdrawn_twice_nor_by_another_agency(
    make: Callable[[], TrainingSession | AwarenessActivity], topic: str
) -> None:
    record = make()
    refused(
        ActionNotPermitted,
        lambda: record.withdraw(NETWORK, actor=OTHER_FOCAL_POINT, at=AT),
        record,
    )
    record.withdraw(NETWORK, actor=FOCAL_POINT, at=AT)
    assert record.withdrawn
    refused(InvalidCommand, lambda: record.withdraw(NETWORK, actor=FOCAL_POINT, at=AT), record)

    # The withdrawal is stored under the aggregate's own topic (as before the two shared
    # their command) and replays into a withdrawn record.
    events = record.collect_events()
    withdrawal = events[-1]
    assert isinstance(withdrawal, Withdrawal)
    assert get_topic(type(withdrawal)) == topic
    assert withdrawal.actor == FOCAL_POINT
    replayed: Any = None
    for e in events:
        replayed = e.mutate(replayed)
    assert replayed.withdrawn


# ------------------------------------------------------------------------- awareness


def test_an_awareness_activity_keeps_the_channels_the_community_prefers() -> None:
    activity = awareness()
    assert activity.preferred_channels == (Channel.HOTLINE, Channel.IN_PERSON)


@pytest.mark.parametrize("reach", [0, -1, 50_000_001, True])
def test_an_activity_reaches_at_least_one_person_and_not_more_than_a_country(reach: int) -> None:
    with pytest.raises(InvalidCommand):
        awareness(reach=reach)


def test_a_channel_is_preferred_once_and_must_be_a_channel() -> None:
    with pytest.raises(InvalidCommand):
        awareness(preferred_channels=(Channel.HOTLINE, Channel.HOTLINE))
    with pytest.raises(ValueError):
        awareness(preferred_channels=("carrier_pigeon",))


def test_awareness_of_another_agency_is_refused() -> None:
    with pytest.raises(ActionNotPermitted):
        awareness(actor=NGO_FOCAL_POINT)


# ------------------------------------------------------------------------- readiness


def test_readiness_names_alternates_and_records_trainings_of_focal_points_and_alternates() -> None:
    readiness = FocalPointReadiness.open(NETWORK, actor=FOCAL_POINT, agency="unhcr", at=AT)
    assert readiness.id == readiness_id("unhcr")
    readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", at=AT)
    readiness.record_training(
        NETWORK, actor=FOCAL_POINT, user="fp-unhcr-2", completed_on=TODAY, at=AT
    )
    readiness.record_training(
        NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", completed_on=TODAY, at=AT
    )
    events = readiness.collect_events()
    assert [e.role for e in events if isinstance(e, FocalPointReadiness.TrainingCompleted)] == [
        ReadinessRole.FOCAL_POINT,
        ReadinessRole.ALTERNATE,
    ]


def test_readiness_rules() -> None:
    readiness = FocalPointReadiness.open(NETWORK, actor=COORDINATOR, agency="unhcr", at=AT)
    readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", at=AT)
    # a focal point or an alternate already in the network is not appointed again
    refused(
        InvalidCommand,
        lambda: readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="fp-unhcr-1", at=AT),
        readiness,
    )
    refused(
        InvalidCommand,
        lambda: readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", at=AT),
        readiness,
    )
    # a name or an address is not an account identifier
    refused(
        InvalidCode,
        lambda: readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="Jane Doe", at=AT),
        readiness,
    )
    refused(
        InvalidCode,
        lambda: readiness.appoint_alternate(NETWORK, actor=FOCAL_POINT, user="jane@ngo.org", at=AT),
        readiness,
    )
    # another agency's focal point may not touch it
    refused(
        ActionNotPermitted,
        lambda: readiness.appoint_alternate(NETWORK, actor=OTHER_FOCAL_POINT, user="alt-2", at=AT),
        readiness,
    )
    # only people in the agency's focal-point network are trained on its record
    refused(
        NotAFocalPoint,
        lambda: readiness.record_training(
            NETWORK, actor=FOCAL_POINT, user="fp-wfp-1", completed_on=TODAY, at=AT
        ),
        readiness,
    )
    readiness.record_training(
        NETWORK, actor=FOCAL_POINT, user="fp-unhcr-1", completed_on=TODAY, at=AT
    )
    # trainings of one person move forward in time
    refused(
        InvalidCommand,
        lambda: readiness.record_training(
            NETWORK,
            actor=FOCAL_POINT,
            user="fp-unhcr-1",
            completed_on=TODAY - timedelta(days=1),
            at=AT,
        ),
        readiness,
    )
    refused(
        ImplausibleTime,
        lambda: readiness.record_training(
            NETWORK,
            actor=FOCAL_POINT,
            user="fp-unhcr-2",
            completed_on=TODAY + timedelta(days=1),
            at=AT,
        ),
        readiness,
    )
    refused(
        NotAFocalPoint,
        lambda: readiness.withdraw_alternate(NETWORK, actor=FOCAL_POINT, user="alt-9", at=AT),
        readiness,
    )
    readiness.withdraw_alternate(NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", at=AT)
    refused(
        NotAFocalPoint,
        lambda: readiness.record_training(
            NETWORK, actor=FOCAL_POINT, user="alt-unhcr-1", completed_on=TODAY, at=AT
        ),
        readiness,
    )


# ------------------------------------------------------------------ risk assessments


def test_an_assessment_rates_exactly_the_template_s_factors_one_to_five() -> None:
    done = assessment()
    assert done.ratings == RATINGS
    with pytest.raises(InvalidCommand):
        assessment(ratings={**RATINGS, "invented_factor": 2})
    missing = dict(RATINGS)
    missing.pop(DEFAULT_RISK_FACTORS[0])
    with pytest.raises(InvalidCommand):
        assessment(ratings=missing)


@given(rating=st.one_of(st.integers(min_value=-3, max_value=9), st.booleans()))
def test_ratings_outside_one_to_five_are_refused(rating: int) -> None:
    ratings = {**RATINGS, DEFAULT_RISK_FACTORS[1]: rating}
    if not isinstance(rating, bool) and 1 <= rating <= 5:
        assert assessment(ratings=ratings).ratings[DEFAULT_RISK_FACTORS[1]] == rating
    else:
        with pytest.raises(InvalidCommand):
            assessment(ratings=ratings)


def test_mitigation_is_agreed_with_an_owner_and_moves_forward_only() -> None:
    done = assessment()
    done.agree_mitigation(
        NETWORK,
        actor=FOCAL_POINT,
        measure=MitigationMeasure.FEMALE_STAFF_AT_DISTRIBUTIONS,
        owner_agency="wfp",
        due_on=TODAY + timedelta(days=60),
        at=AT,
    )
    # the owner agency reports on it, an unrelated agency may not
    refused(
        ActionNotPermitted,
        lambda: done.report_mitigation(
            NETWORK, actor=NGO_FOCAL_POINT, action=1, status=ActionStatus.DONE, at=AT
        ),
        done,
    )
    done.report_mitigation(
        NETWORK, actor=OTHER_FOCAL_POINT, action=1, status=ActionStatus.IN_PROGRESS, at=AT
    )
    refused(
        InvalidCommand,
        lambda: done.report_mitigation(
            NETWORK, actor=FOCAL_POINT, action=1, status=ActionStatus.PLANNED, at=AT
        ),
        done,
    )
    refused(
        InvalidCommand,
        lambda: done.report_mitigation(
            NETWORK, actor=FOCAL_POINT, action=2, status=ActionStatus.DONE, at=AT
        ),
        done,
    )
    done.report_mitigation(NETWORK, actor=FOCAL_POINT, action=1, status=ActionStatus.DONE, at=AT)
    refused(
        InvalidCommand,
        lambda: done.report_mitigation(
            NETWORK, actor=COORDINATOR, action=1, status=ActionStatus.CANCELLED, at=AT
        ),
        done,
    )
    refused(
        UnknownAgency,
        lambda: done.agree_mitigation(
            NETWORK,
            actor=FOCAL_POINT,
            measure=MitigationMeasure.OTHER,
            owner_agency="nobody",
            due_on=TODAY,
            at=AT,
        ),
        done,
    )
    refused(
        ImplausibleTime,
        lambda: done.agree_mitigation(
            NETWORK,
            actor=FOCAL_POINT,
            measure=MitigationMeasure.OTHER,
            owner_agency="wfp",
            due_on=TODAY + timedelta(days=4000),
            at=AT,
        ),
        done,
    )


def test_a_reassessment_does_not_go_back_in_time() -> None:
    done = assessment()
    refused(
        ImplausibleTime,
        lambda: done.reassess(
            NETWORK,
            SETTINGS,
            actor=FOCAL_POINT,
            assessed_on=TODAY - timedelta(days=1),
            ratings=RATINGS,
            at=AT,
        ),
        done,
    )
    done.reassess(
        NETWORK,
        SETTINGS,
        actor=FOCAL_POINT,
        assessed_on=TODAY,
        ratings=dict.fromkeys(DEFAULT_RISK_FACTORS, 5),
        at=AT,
    )
    assert set(done.ratings.values()) == {5}


# ------------------------------------------------------------------- policy and plan


def test_only_the_coordinator_sets_the_prevention_policy_and_targets_name_agencies() -> None:
    with pytest.raises(ActionNotPermitted):
        PreventionPolicy.set(NETWORK, actor=FOCAL_POINT, at=AT)
    with pytest.raises(UnknownAgency):
        PreventionPolicy.set(
            NETWORK,
            actor=COORDINATOR,
            training_targets=(TrainingTarget("nobody", 2026, 10),),
            at=AT,
        )
    with pytest.raises(InvalidCommand):
        PreventionPolicy.set(
            NETWORK,
            actor=COORDINATOR,
            training_targets=(TrainingTarget("wfp", 2026, 10), TrainingTarget("wfp", 2026, 20)),
            at=AT,
        )
    with pytest.raises(InvalidCommand):
        PreventionPolicy.set(NETWORK, actor=COORDINATOR, risk_factors=("a", "a"), at=AT)
    with pytest.raises(InvalidCommand):
        PreventionPolicy.set(NETWORK, actor=COORDINATOR, refresher_every_days=3, at=AT)
    policy = PreventionPolicy.set(
        NETWORK, actor=COORDINATOR, risk_factors=("cash", "remote"), refresher_every_days=180, at=AT
    )
    settings_now = PreventionSettings.of(policy)
    assert settings_now.risk_factors == ("cash", "remote")
    assert settings_now.refresher_every == timedelta(days=180)
    # an assessment on the new template rates its factors, not the old ones
    with pytest.raises(InvalidCommand):
        RiskAssessment.assess(
            NETWORK,
            settings_now,
            actor=FOCAL_POINT,
            agency="unhcr",
            area="SO22",
            sector=Sector.CASH,
            assessed_on=TODAY,
            ratings=RATINGS,
            at=AT,
        )


def test_the_work_plan_is_the_coordinator_s_and_owners_report_progress() -> None:
    with pytest.raises(ActionNotPermitted):
        WorkPlan.open(actor=FOCAL_POINT, year=2026, at=AT)
    with pytest.raises(ImplausibleTime):
        WorkPlan.open(actor=COORDINATOR, year=2040, at=AT)
    plan = WorkPlan.open(actor=COORDINATOR, year=2026, at=AT)
    assert plan.id == work_plan_id(2026)
    refused(
        ImplausibleTime,
        lambda: plan.plan_activity(
            NETWORK,
            actor=COORDINATOR,
            kind=WorkPlanActivityKind.TRAINING,
            owner_agency="wfp",
            target=10,
            due_on=date(2027, 1, 1),
            at=AT,
        ),
        plan,
    )
    refused(
        ActionNotPermitted,
        lambda: plan.plan_activity(
            NETWORK,
            actor=OTHER_FOCAL_POINT,
            kind=WorkPlanActivityKind.TRAINING,
            owner_agency="wfp",
            target=10,
            due_on=date(2026, 9, 1),
            at=AT,
        ),
        plan,
    )
    plan.plan_activity(
        NETWORK,
        actor=COORDINATOR,
        kind=WorkPlanActivityKind.TRAINING,
        owner_agency="wfp",
        target=100,
        due_on=date(2026, 9, 1),
        area="SO22",
        at=AT,
    )
    refused(
        ActionNotPermitted,
        lambda: plan.report_progress(
            NETWORK,
            actor=FOCAL_POINT,
            activity=1,
            status=ActionStatus.IN_PROGRESS,
            achieved=10,
            at=AT,
        ),
        plan,
    )
    plan.report_progress(
        NETWORK,
        actor=OTHER_FOCAL_POINT,
        activity=1,
        status=ActionStatus.IN_PROGRESS,
        achieved=40,
        at=AT,
    )
    refused(
        InvalidCommand,
        lambda: plan.report_progress(
            NETWORK,
            actor=OTHER_FOCAL_POINT,
            activity=1,
            status=ActionStatus.IN_PROGRESS,
            achieved=30,
            at=AT,
        ),
        plan,
    )
    plan.report_progress(
        NETWORK, actor=OTHER_FOCAL_POINT, activity=1, status=ActionStatus.DONE, achieved=100, at=AT
    )
    refused(
        InvalidCommand,
        lambda: plan.report_progress(
            NETWORK, actor=COORDINATOR, activity=1, status=ActionStatus.DONE, achieved=120, at=AT
        ),
        plan,
    )
    refused(
        InvalidCommand,
        lambda: plan.report_progress(
            NETWORK, actor=COORDINATOR, activity=7, status=ActionStatus.DONE, achieved=1, at=AT
        ),
        plan,
    )


def test_a_work_plan_is_opened_once_a_year() -> None:
    with pytest.raises(AlreadyOpen):
        WorkPlan.open(actor=COORDINATOR, year=2026, at=AT, exists=True)
