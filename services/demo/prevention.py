"""The demo network's prevention work (issue #22): a prevention policy with training targets,
a year of trainings and awareness activities across the demo areas, focal points' trainings
and alternates (some refreshers overdue), risk assessments with mitigation, and the work plan.

Everything is recorded through the application's commands, as the agencies would record it;
counts are drawn from the demo's seeded random source, so a seed gives the same year.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from domain.prevention import DEFAULT_RISK_FACTORS, TrainedCounts, TrainingTarget, work_plan_id
from domain.vocabulary import (
    ActionStatus,
    AudienceCategory,
    AwarenessKind,
    Channel,
    CommunityAudience,
    MitigationMeasure,
    TrainingTopic,
    WorkPlanActivityKind,
)
from services.application.mechanism import ComplaintMechanism
from services.demo.network import AGENCIES, AREAS, COORDINATOR, focal_point_actor

ACTIVITY_KINDS = (
    WorkPlanActivityKind.TRAINING,
    WorkPlanActivityKind.AWARENESS,
    WorkPlanActivityKind.RISK_ASSESSMENT,
    WorkPlanActivityKind.FOCAL_POINT_NETWORK,
    WorkPlanActivityKind.REPORTING_CHANNELS,
)


@dataclass(frozen=True)
class PreventionSummary:
    trainings: int
    awareness: int
    assessments: int
    activities: int
    reused: bool


def walk_prevention(
    app: ComplaintMechanism, rng: random.Random, now: datetime
) -> PreventionSummary:
    """Record the demo network's prevention year up to ``now`` (once: a network that has a
    prevention policy already is left as it is)."""
    if app.prevention_policy() is not None:
        return PreventionSummary(0, 0, 0, 0, reused=True)
    today = now.date()
    year = today.year
    app.set_prevention_policy(
        actor=COORDINATOR,
        refresher_every_days=365,
        risk_factors=DEFAULT_RISK_FACTORS,
        training_targets=tuple(
            TrainingTarget(a.code, y, rng.randrange(40, 200, 10))
            for a in AGENCIES
            for y in (year - 1, year)
        ),
        at=now,
    )
    trainings = awareness = 0
    for agency in AGENCIES:
        actor = focal_point_actor(agency.code, agency.focal_points[0])
        for _ in range(rng.randint(3, 8)):
            female, male = rng.randint(0, 30), rng.randint(0, 30)
            app.record_training(
                actor=actor,
                agency=agency.code,
                held_on=today - timedelta(days=rng.randint(0, 420)),
                area=rng.choice(AREAS),
                audience=rng.choice(list(AudienceCategory)),
                topic=rng.choice(list(TrainingTopic)),
                trained=TrainedCounts(female=female, male=male, other_or_not_recorded=1),
                at=now,
            )
            trainings += 1
        # the last area is left without awareness work: the risk map shows the gap
        for _ in range(rng.randint(1, 4)):
            app.record_awareness(
                actor=actor,
                agency=agency.code,
                held_on=today - timedelta(days=rng.randint(0, 300)),
                area=rng.choice(AREAS[:-1]),
                kind=rng.choice(list(AwarenessKind)),
                audience=rng.choice(list(CommunityAudience)),
                reach=rng.randint(20, 3000),
                preferred_channels=tuple(
                    rng.sample(
                        [
                            Channel.HOTLINE,
                            Channel.IN_PERSON,
                            Channel.COMPLAINT_BOX,
                            Channel.SMS_MESSAGING,
                        ],
                        k=2,
                    )
                ),
                at=now,
            )
            awareness += 1
        app.appoint_alternate(actor=actor, agency=agency.code, user=f"alt-{agency.code}-1", at=now)
        for user in (*agency.focal_points, f"alt-{agency.code}-1"):
            if rng.random() < 0.8:  # some never trained, some overdue for a refresher
                app.record_focal_point_training(
                    actor=actor,
                    agency=agency.code,
                    user=user,
                    completed_on=today - timedelta(days=rng.randint(0, 600)),
                    at=now,
                )
    assessments = 0
    for area in AREAS:
        agency = rng.choice(AGENCIES)
        actor = focal_point_actor(agency.code, agency.focal_points[0])
        sector = rng.choice(agency.sectors)
        high = area == AREAS[-1]
        assessed = app.assess_risk(
            actor=actor,
            agency=agency.code,
            area=area,
            sector=sector,
            assessed_on=today - timedelta(days=rng.randint(10, 90)),
            ratings={
                f: rng.randint(4, 5) if high else rng.randint(1, 4) for f in DEFAULT_RISK_FACTORS
            },
            at=now,
        )
        assessments += 1
        for measure in rng.sample(list(MitigationMeasure)[:-1], k=2):
            app.agree_mitigation(
                assessed.id,
                actor=actor,
                measure=measure,
                owner_agency=rng.choice(AGENCIES).code,
                due_on=today + timedelta(days=rng.randint(-30, 90)),
                at=now,
            )
        app.report_mitigation(
            assessed.id, actor=COORDINATOR, action=1, status=ActionStatus.IN_PROGRESS, at=now
        )
    app.open_work_plan(actor=COORDINATOR, year=year, at=now)
    activities = 0
    for kind in ACTIVITY_KINDS:
        owner = rng.choice(AGENCIES)
        app.plan_activity(
            work_plan_id(year),
            actor=COORDINATOR,
            kind=kind,
            owner_agency=owner.code,
            area=rng.choice((None, *AREAS)),
            target=rng.randrange(10, 500, 10),
            due_on=date(year, rng.randint(1, 12), 28),
            at=now,
        )
        activities += 1
        app.report_work_plan_progress(
            work_plan_id(year),
            actor=focal_point_actor(owner.code, owner.focal_points[0]),
            activity=activities,
            status=ActionStatus.IN_PROGRESS,
            achieved=rng.randint(0, 10),
            at=now,
        )
    return PreventionSummary(trainings, awareness, assessments, activities, reused=False)
