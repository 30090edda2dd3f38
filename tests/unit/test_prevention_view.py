"""The prevention work through the application, on the in-memory store: what each command
records, how each record is routed on the bus, and the view folded from the contract
messages (Hypothesis checks the compliance figures against a plain sum of what was recorded)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.statistics import (
    ReleaseProtectionV1,
    ReleaseV1,
    StatisticsCellV1,
    StatisticsReleaseV1,
    StatisticsReportV1,
)
from contracts.subjects import event_subject
from domain.errors import ActionNotPermitted, NotAFocalPoint
from domain.prevention import DEFAULT_RISK_FACTORS, TrainedCounts, TrainingTarget, work_plan_id
from domain.vocabulary import (
    ActionStatus,
    AudienceCategory,
    AwarenessKind,
    Channel,
    CommunityAudience,
    MitigationMeasure,
    Sector,
    TrainingTopic,
    WorkPlanActivityKind,
)
from projections.prevention.view import AREA_REPORT
from services.application.mechanism import ComplaintMechanism
from services.prevention.reads import prevention_view
from services.relay.routing import Router
from services.relay.translation import to_cloud_event
from tests.in_memory import in_memory_mechanism
from tests.world import COORDINATOR, FOCAL_POINT, OTHER_FOCAL_POINT, establish

AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
TODAY = AT.date()


def _app() -> ComplaintMechanism:
    application = in_memory_mechanism()
    establish(application, AT - timedelta(days=30))
    return application


@pytest.fixture
def app() -> Iterator[ComplaintMechanism]:
    application = _app()
    yield application
    application.close()


def _train(app: ComplaintMechanism, agency: str = "unhcr", **overrides: object) -> None:
    values: dict[str, object] = {
        "actor": FOCAL_POINT if agency == "unhcr" else COORDINATOR,
        "agency": agency,
        "held_on": TODAY - timedelta(days=10),
        "area": "SO22",
        "audience": AudienceCategory.STAFF,
        "topic": TrainingTopic.SEA_BASICS,
        "trained": TrainedCounts(female=10, male=5),
        "at": AT,
    }
    values.update(overrides)
    app.record_training(**values)  # type: ignore[arg-type]


def test_every_prevention_record_goes_out_under_its_agency_or_the_network(
    app: ComplaintMechanism,
) -> None:
    # given one record of each kind
    _train(app)
    app.record_awareness(
        actor=OTHER_FOCAL_POINT,
        agency="wfp",
        held_on=TODAY,
        area="SO23",
        kind=AwarenessKind.RADIO,
        audience=CommunityAudience.MIXED,
        reach=5000,
        preferred_channels=(Channel.SMS_MESSAGING,),
        at=AT,
    )
    app.record_focal_point_training(
        actor=FOCAL_POINT, agency="unhcr", user="fp-unhcr-2", completed_on=TODAY, at=AT
    )
    assessed = app.assess_risk(
        actor=FOCAL_POINT,
        agency="unhcr",
        area="SO22",
        sector=Sector.FOOD_SECURITY,
        assessed_on=TODAY,
        ratings=dict.fromkeys(DEFAULT_RISK_FACTORS, 4),
        at=AT,
    )
    app.agree_mitigation(
        assessed.id,
        actor=FOCAL_POINT,
        measure=MitigationMeasure.FEMALE_STAFF_AT_DISTRIBUTIONS,
        owner_agency="wfp",
        due_on=TODAY + timedelta(days=30),
        at=AT,
    )
    app.open_work_plan(actor=COORDINATOR, year=2026, at=AT)
    app.set_prevention_policy(
        actor=COORDINATOR,
        refresher_every_days=180,
        risk_factors=DEFAULT_RISK_FACTORS,
        training_targets=(TrainingTarget("unhcr", 2026, 40),),
        at=AT,
    )
    # when the relay routes and translates every stored event
    router = Router(app)
    subjects = []
    for notification in app.recorder.select_notifications(start=1, limit=1000):
        event = app.mapper.to_domain_event(notification)
        message = to_cloud_event(event, source="test", position=notification.id)
        aggregate, name = message.type.split(".")[3:5]
        subjects.append(event_subject(router.agency_of(event, notification.id), aggregate, name))
    # then each kind travels on its own subject, under the agency that recorded it
    prevention = [s for s in subjects if s.split(".")[4] not in ("network", "case")]
    assert prevention == [
        "cbcm.v1.evt.unhcr.training_session.recorded",
        "cbcm.v1.evt.wfp.awareness_activity.recorded",
        "cbcm.v1.evt.unhcr.focal_point_readiness.opened",
        "cbcm.v1.evt.unhcr.focal_point_readiness.training_completed",
        "cbcm.v1.evt.unhcr.risk_assessment.assessed",
        "cbcm.v1.evt.unhcr.risk_assessment.mitigation_agreed",
        "cbcm.v1.evt.network.work_plan.opened",
        "cbcm.v1.evt.network.prevention_policy.set",
    ]


def test_refused_prevention_commands_record_nothing(app: ComplaintMechanism) -> None:
    before = app.recorder.max_notification_id()
    with pytest.raises(ActionNotPermitted):
        _train(app, agency="wfp", actor=FOCAL_POINT)
    with pytest.raises(NotAFocalPoint):
        app.record_focal_point_training(
            actor=FOCAL_POINT, agency="unhcr", user="fp-wfp-1", completed_on=TODAY, at=AT
        )
    # the readiness record is not opened by a command that was refused
    assert app.recorder.max_notification_id() == before


def test_view_reports_compliance_refreshers_coverage_risk_and_plan(
    app: ComplaintMechanism,
) -> None:
    app.set_prevention_policy(
        actor=COORDINATOR,
        refresher_every_days=365,
        risk_factors=DEFAULT_RISK_FACTORS,
        training_targets=(TrainingTarget("unhcr", 2026, 40), TrainingTarget("wfp", 2026, 10)),
        at=AT,
    )
    _train(app)  # 15 staff
    _train(app, audience=AudienceCategory.COMMUNITY_VOLUNTEERS)  # not personnel
    _train(app, audience=AudienceCategory.CONTRACTORS, trained=TrainedCounts(male=5))
    app.record_focal_point_training(
        actor=FOCAL_POINT,
        agency="unhcr",
        user="fp-unhcr-1",
        completed_on=TODAY - timedelta(days=400),
        at=AT,
    )
    app.record_focal_point_training(
        actor=FOCAL_POINT, agency="unhcr", user="fp-unhcr-2", completed_on=TODAY, at=AT
    )
    app.appoint_alternate(actor=FOCAL_POINT, agency="unhcr", user="alt-unhcr-1", at=AT)
    assessed = app.assess_risk(
        actor=FOCAL_POINT,
        agency="unhcr",
        area="SO24",
        sector=Sector.CASH,
        assessed_on=TODAY,
        ratings=dict.fromkeys(DEFAULT_RISK_FACTORS, 5),
        at=AT,
    )
    app.agree_mitigation(
        assessed.id,
        actor=FOCAL_POINT,
        measure=MitigationMeasure.SAFE_DISTRIBUTION_SITES,
        owner_agency="unhcr",
        due_on=TODAY - timedelta(days=1),
        at=AT,
    )
    app.open_work_plan(actor=COORDINATOR, year=2026, at=AT)
    app.plan_activity(
        work_plan_id(2026),
        actor=COORDINATOR,
        kind=WorkPlanActivityKind.TRAINING,
        owner_agency="wfp",
        target=100,
        due_on=date(2026, 3, 1),
        at=AT,
    )
    app.report_work_plan_progress(
        work_plan_id(2026),
        actor=OTHER_FOCAL_POINT,
        activity=1,
        status=ActionStatus.IN_PROGRESS,
        achieved=20,
        at=AT,
    )
    view = prevention_view(app)

    compliance = {r["agency"]: r for r in view.training_compliance(2026)}
    assert compliance["unhcr"]["personnel_trained"] == 20
    assert compliance["unhcr"]["by_audience"]["community_volunteers"] == 15
    assert compliance["unhcr"]["met"] == 0.5
    assert compliance["wfp"]["personnel_trained"] == 0 and compliance["wfp"]["met"] == 0.0
    assert compliance["ngo-a"]["target"] is None

    due = {(r["user"]): r for r in view.refreshers(TODAY) if r["agency"] == "unhcr"}
    assert due["fp-unhcr-1"]["due"] and not due["fp-unhcr-2"]["due"]
    assert due["fp-unhcr"]["last_trained"] is None and due["fp-unhcr"]["due"]
    assert due["alt-unhcr-1"]["role"] == "alternate"

    coverage = {r["area"]: r for r in view.coverage()}
    assert coverage["SO22"]["people_trained"] == 35

    risk_map = {r["area"]: r for r in view.risk_map(TODAY)}
    assert risk_map["SO24"]["level"] == "very_high"
    assert risk_map["SO24"]["overdue_mitigation"] == 1
    assert risk_map["SO24"]["high_risk_low_coverage"]
    assert not risk_map["SO22"]["high_risk_low_coverage"]

    (activity,) = view.work_plan(2026, TODAY)
    assert activity["achieved"] == 20 and activity["overdue"]


def _release(rows: list[str], cells: list[int | None]) -> StatisticsReleaseV1:
    def cell(v: int | None) -> StatisticsCellV1:
        return StatisticsCellV1(value=v, suppressed=v is None)

    report = StatisticsReportV1(
        report=AREA_REPORT,
        description="SEA allegations by incident area",
        rows_are="incident area",
        columns_are="quarter of receipt",
        suppression_threshold=5,
        rows=rows,
        columns=["2026-Q2"],
        cells=[[cell(v)] for v in cells],
        row_totals=[cell(v) for v in cells],
        column_totals=[cell(None)],
        total=cell(None),
    )
    return StatisticsReleaseV1(
        release=ReleaseV1(
            id="2026-q2-v1",
            period="2026-Q2",
            months=["2026-04", "2026-05", "2026-06"],
            version=1,
            supersedes=None,
            released_at="2026-07-01T00:00:00+00:00",
            suppression_threshold=5,
            protection=ReleaseProtectionV1(upper=5, lower=5, method="test"),
            held_back=[],
        ),
        reports={AREA_REPORT: report},
    )


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(
        st.one_of(st.none(), st.integers(min_value=0, max_value=60)), min_size=1, max_size=6
    )
)
def test_the_risk_map_copies_released_cells_and_never_reveals_a_withheld_one(
    cells: list[int | None],
) -> None:
    # given a release whose area table withholds some cells
    areas = [f"A{i}" for i in range(len(cells))]
    release = _release(areas, cells)
    app = _app()
    try:
        _train(app, area=areas[0])
        view = prevention_view(app)
    finally:
        app.close()
    # when the risk map joins it
    rows = {r["area"]: r for r in view.risk_map(TODAY, release)}
    # then each area shows exactly the published cell: withheld stays withheld (null), and
    # no number appears that the release did not print
    published = {v for v in cells if v is not None}
    for area, value in zip(areas, cells, strict=True):
        assert rows[area]["released_allegations"] == value
        assert rows[area]["allegations_suppressed"] is (value is None)
    for row in rows.values():
        shown = row["released_allegations"]
        assert shown is None or shown in published


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sessions=st.lists(
        st.tuples(
            st.sampled_from(["unhcr", "wfp", "ngo-a"]),
            st.sampled_from(list(AudienceCategory)),
            st.integers(min_value=1, max_value=500),
            st.integers(min_value=0, max_value=400),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_compliance_is_the_sum_of_sessions_not_withdrawn(
    sessions: list[tuple[str, AudienceCategory, int, int, bool]],
) -> None:
    app = _app()
    try:
        expected: dict[str, int] = {"unhcr": 0, "wfp": 0, "ngo-a": 0}
        for agency, audience, female, days_ago, withdrawn in sessions:
            written = app.record_training(
                actor=COORDINATOR,
                agency=agency,
                held_on=TODAY - timedelta(days=days_ago),
                area="SO22",
                audience=audience,
                topic=TrainingTopic.REPORTING_OBLIGATIONS,
                trained=TrainedCounts(female=female),
                at=AT,
            )
            if withdrawn:
                app.withdraw_training(written.id, actor=COORDINATOR, at=AT)
            elif (TODAY - timedelta(days=days_ago)).year == 2026 and (
                audience is not AudienceCategory.COMMUNITY_VOLUNTEERS
            ):
                expected[agency] += female
        rows = prevention_view(app).training_compliance(2026)
    finally:
        app.close()
    assert {r["agency"]: r["personnel_trained"] for r in rows if r["agency"] in expected} == (
        expected
    )
