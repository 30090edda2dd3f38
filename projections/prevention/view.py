"""The prevention read model: a fold of contract messages, kept in memory.

Prevention records are few (a network records hundreds of sessions a year, not millions of
events), so the model is rebuilt from the log's prevention and network messages on each read
rather than kept in a read-model file (ADR 22). It imports only ``contracts``, like every
projection, so it can be fed from the store or from NATS alike.

Every figure is a count over records that carry no personal data. The risk map joins them with
the allegation counts of a statistics *release* (``risk_map``): it copies released cells
only, suppressed ones stay suppressed, and it derives no count from them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from contracts.envelope import CloudEvent
from contracts.network import (
    NetworkAgencyRegisteredV1,
    NetworkFocalPointAppointedV1,
    NetworkFocalPointWithdrawnV1,
)
from contracts.prevention import (
    AwarenessActivityRecordedV1,
    AwarenessActivityWithdrawnV1,
    FocalPointReadinessAlternateAppointedV1,
    FocalPointReadinessAlternateWithdrawnV1,
    FocalPointReadinessOpenedV1,
    FocalPointReadinessTrainingCompletedV1,
    PreventionPolicyChangedV1,
    PreventionPolicySetV1,
    RiskAssessmentAssessedV1,
    RiskAssessmentMitigationAgreedV1,
    RiskAssessmentMitigationStatusChangedV1,
    RiskAssessmentReassessedV1,
    TrainingSessionRecordedV1,
    TrainingSessionWithdrawnV1,
    WorkPlanActivityPlannedV1,
    WorkPlanOpenedV1,
    WorkPlanProgressReportedV1,
)
from contracts.statistics import StatisticsReleaseV1

DEFAULT_REFRESHER_DAYS = 365
UNKNOWN_AREA = "unknown"
OPEN_STATUSES = frozenset({"planned", "in_progress"})


@dataclass
class _Training:
    agency: str
    year: int
    area: str
    audience: str
    topic: str
    trained: int
    withdrawn: bool = False


@dataclass
class _Awareness:
    agency: str
    area: str
    kind: str
    reach: int
    preferred_channels: tuple[str, ...]
    withdrawn: bool = False


@dataclass
class _Mitigation:
    measure: str
    owner_agency: str
    due_on: date
    status: str = "planned"


@dataclass
class _Assessment:
    agency: str
    area: str
    sector: str
    assessed_on: date
    ratings: dict[str, int]
    actions: dict[int, _Mitigation] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean rating, 1 (low) to 5 (very high)."""
        return round(sum(self.ratings.values()) / len(self.ratings), 2) if self.ratings else 0.0


@dataclass
class _Activity:
    kind: str
    owner_agency: str
    area: str | None
    target: int
    due_on: date
    status: str = "planned"
    achieved: int = 0


def risk_level(score: float) -> str:
    """The band of a mean rating: what a risk map colours an area by."""
    if score >= 4:
        return "very_high"
    if score >= 3:
        return "high"
    if score >= 2:
        return "medium"
    return "low"


class PreventionView:
    """Everything the prevention pages and the quarterly report read."""

    def __init__(self) -> None:
        self.agencies: list[str] = []
        self.focal_points: dict[str, set[str]] = defaultdict(set)
        self.alternates: dict[str, set[str]] = defaultdict(set)
        self.trained_on: dict[tuple[str, str], date] = {}
        self.readiness_agency: dict[UUID, str] = {}
        self.trainings: dict[UUID, _Training] = {}
        self.awareness: dict[UUID, _Awareness] = {}
        self.assessments: dict[UUID, _Assessment] = {}
        self.plans: dict[UUID, int] = {}
        self.activities: dict[int, dict[int, _Activity]] = defaultdict(dict)
        self.refresher_every = timedelta(days=DEFAULT_REFRESHER_DAYS)
        self.risk_factors: tuple[str, ...] = ()
        self.targets: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ folding

    def apply(self, message: CloudEvent[Any]) -> None:
        data = message.data
        if isinstance(data, NetworkAgencyRegisteredV1):
            if data.code not in self.agencies:
                self.agencies.append(data.code)
        elif isinstance(data, NetworkFocalPointAppointedV1):
            self.focal_points[data.agency].add(data.user)
        elif isinstance(data, NetworkFocalPointWithdrawnV1):
            self.focal_points[data.agency].discard(data.user)
        elif isinstance(data, (PreventionPolicySetV1, PreventionPolicyChangedV1)):
            self.refresher_every = timedelta(days=data.refresher_every_days)
            self.risk_factors = tuple(data.risk_factors)
            self.targets = {(t.agency, t.year): t.personnel for t in data.training_targets}
        elif isinstance(data, TrainingSessionRecordedV1):
            t = data.trained
            self.trainings[data.training_session_id] = _Training(
                agency=data.agency,
                year=data.held_on.year,
                area=data.area,
                audience=data.audience,
                topic=data.topic,
                trained=t.female + t.male + t.other_or_not_recorded,
            )
        elif isinstance(data, TrainingSessionWithdrawnV1):
            self.trainings[data.training_session_id].withdrawn = True
        elif isinstance(data, AwarenessActivityRecordedV1):
            self.awareness[data.awareness_activity_id] = _Awareness(
                agency=data.agency,
                area=data.area,
                kind=data.kind,
                reach=data.reach,
                preferred_channels=tuple(data.preferred_channels),
            )
        elif isinstance(data, AwarenessActivityWithdrawnV1):
            self.awareness[data.awareness_activity_id].withdrawn = True
        elif isinstance(data, FocalPointReadinessOpenedV1):
            self.readiness_agency[data.focal_point_readiness_id] = data.agency
        elif isinstance(data, FocalPointReadinessAlternateAppointedV1):
            self.alternates[self.readiness_agency[data.focal_point_readiness_id]].add(data.user)
        elif isinstance(data, FocalPointReadinessAlternateWithdrawnV1):
            agency = self.readiness_agency[data.focal_point_readiness_id]
            self.alternates[agency].discard(data.user)
        elif isinstance(data, FocalPointReadinessTrainingCompletedV1):
            agency = self.readiness_agency[data.focal_point_readiness_id]
            self.trained_on[(agency, data.user)] = data.completed_on
        elif isinstance(data, RiskAssessmentAssessedV1):
            self.assessments[data.risk_assessment_id] = _Assessment(
                agency=data.agency,
                area=data.area,
                sector=data.sector,
                assessed_on=data.assessed_on,
                ratings=dict(data.ratings),
            )
        elif isinstance(data, RiskAssessmentReassessedV1):
            assessment = self.assessments[data.risk_assessment_id]
            assessment.assessed_on = data.assessed_on
            assessment.ratings = dict(data.ratings)
        elif isinstance(data, RiskAssessmentMitigationAgreedV1):
            self.assessments[data.risk_assessment_id].actions[data.action] = _Mitigation(
                data.measure, data.owner_agency, data.due_on
            )
        elif isinstance(data, RiskAssessmentMitigationStatusChangedV1):
            self.assessments[data.risk_assessment_id].actions[data.action].status = data.status
        elif isinstance(data, WorkPlanOpenedV1):
            self.plans[data.work_plan_id] = data.year
        elif isinstance(data, WorkPlanActivityPlannedV1):
            self.activities[self.plans[data.work_plan_id]][data.activity] = _Activity(
                kind=data.kind,
                owner_agency=data.owner_agency,
                area=data.area,
                target=data.target,
                due_on=data.due_on,
            )
        elif isinstance(data, WorkPlanProgressReportedV1):
            activity = self.activities[self.plans[data.work_plan_id]][data.activity]
            activity.status = data.status
            activity.achieved = data.achieved

    # ------------------------------------------------------------------ reads

    def training_compliance(self, year: int) -> list[dict[str, Any]]:
        """Per agency: personnel trained in ``year`` by audience category, the target from
        the prevention policy and how much of it is met (community volunteers are reported
        but do not count towards a personnel target)."""
        rows: list[dict[str, Any]] = []
        for agency in self._agencies():
            by_audience: Counter[str] = Counter()
            for t in self.trainings.values():
                if t.agency == agency and t.year == year and not t.withdrawn:
                    by_audience[t.audience] += t.trained
            personnel = sum(n for a, n in by_audience.items() if a != "community_volunteers")
            target = self.targets.get((agency, year))
            rows.append(
                {
                    "agency": agency,
                    "year": year,
                    "by_audience": dict(sorted(by_audience.items())),
                    "personnel_trained": personnel,
                    "target": target,
                    "met": None if target is None else round(min(personnel / target, 9.99), 3),
                }
            )
        return rows

    def refreshers(self, today: date) -> list[dict[str, Any]]:
        """Every focal point and alternate with their last training and when the refresher
        falls due (today when never trained); ``due`` is true when it is now or past."""
        rows: list[dict[str, Any]] = []
        for agency in self._agencies():
            people = [(u, "focal_point") for u in sorted(self.focal_points.get(agency, ()))]
            people += [(u, "alternate") for u in sorted(self.alternates.get(agency, ()))]
            for user, role in people:
                last = self.trained_on.get((agency, user))
                due_on = today if last is None else last + self.refresher_every
                rows.append(
                    {
                        "agency": agency,
                        "user": user,
                        "role": role,
                        "last_trained": None if last is None else last.isoformat(),
                        "refresher_due_on": due_on.isoformat(),
                        "due": due_on <= today,
                    }
                )
        return rows

    def readiness(self, today: date) -> list[dict[str, Any]]:
        """Per agency: focal points and alternates appointed, and how many are trained and
        not due for a refresher."""
        rows: list[dict[str, Any]] = []
        people = self.refreshers(today)
        for agency in self._agencies():
            mine = [p for p in people if p["agency"] == agency]
            rows.append(
                {
                    "agency": agency,
                    "focal_points": sum(p["role"] == "focal_point" for p in mine),
                    "alternates": sum(p["role"] == "alternate" for p in mine),
                    "trained_and_current": sum(not p["due"] for p in mine),
                    "refresher_due": sum(p["due"] for p in mine),
                }
            )
        return rows

    def coverage(self) -> list[dict[str, Any]]:
        """Per area: awareness activities, people reached, trainings and people trained, and
        the reporting channels the communities there said they would use (most named
        first)."""
        areas = sorted(
            {a.area for a in self.awareness.values() if not a.withdrawn}
            | {t.area for t in self.trainings.values() if not t.withdrawn}
        )
        rows: list[dict[str, Any]] = []
        for area in areas:
            activities = [a for a in self.awareness.values() if a.area == area and not a.withdrawn]
            trainings = [t for t in self.trainings.values() if t.area == area and not t.withdrawn]
            channels: Counter[str] = Counter(c for a in activities for c in a.preferred_channels)
            rows.append(
                {
                    "area": area,
                    "awareness_activities": len(activities),
                    "people_reached": sum(a.reach for a in activities),
                    "trainings": len(trainings),
                    "people_trained": sum(t.trained for t in trainings),
                    "preferred_channels": [c for c, _ in channels.most_common()],
                }
            )
        return rows

    def risks(self, today: date) -> list[dict[str, Any]]:
        """Every assessment, highest risk first: its score and level, and its mitigation
        actions open and overdue."""
        rows: list[dict[str, Any]] = []
        for assessment_id, a in self.assessments.items():
            open_actions = [m for m in a.actions.values() if m.status in OPEN_STATUSES]
            rows.append(
                {
                    "risk_assessment_id": str(assessment_id),
                    "agency": a.agency,
                    "area": a.area,
                    "sector": a.sector,
                    "assessed_on": a.assessed_on.isoformat(),
                    "ratings": dict(a.ratings),
                    "score": a.score,
                    "level": risk_level(a.score),
                    "open_mitigation": len(open_actions),
                    "overdue_mitigation": sum(m.due_on < today for m in open_actions),
                    "mitigation": [
                        {
                            "action": n,
                            "measure": m.measure,
                            "owner_agency": m.owner_agency,
                            "due_on": m.due_on.isoformat(),
                            "status": m.status,
                        }
                        for n, m in sorted(a.actions.items())
                    ],
                }
            )
        rows.sort(key=lambda r: (-float(r["score"]), str(r["area"]), str(r["sector"])))
        return rows

    def work_plan(self, year: int, today: date) -> list[dict[str, Any]]:
        return [
            {
                "activity": n,
                "kind": a.kind,
                "owner_agency": a.owner_agency,
                "area": a.area,
                "target": a.target,
                "achieved": a.achieved,
                "due_on": a.due_on.isoformat(),
                "status": a.status,
                "overdue": a.status in OPEN_STATUSES and a.due_on < today,
            }
            for n, a in sorted(self.activities.get(year, {}).items())
        ]

    def risk_map(
        self, today: date, release: StatisticsReleaseV1 | None = None
    ) -> list[dict[str, Any]]:
        """Per area: the highest assessed risk and its sectors, open mitigation, training and
        awareness coverage, and the SEA allegations the statistics release published for the
        area (``released_allegations``: the release's own cell, null when it was withheld or
        when the release has no area table; never a count of our own)."""
        released = _released_by_area(release)
        coverage = {row["area"]: row for row in self.coverage()}
        risks = self.risks(today)
        areas = sorted({r["area"] for r in risks} | set(coverage) | set(released))
        rows: list[dict[str, Any]] = []
        for area in areas:
            here = [r for r in risks if r["area"] == area]
            top = max((r["score"] for r in here), default=None)
            cov = coverage.get(area, {})
            cell = released.get(area)
            rows.append(
                {
                    "area": area,
                    "highest_score": top,
                    "level": None if top is None else risk_level(top),
                    "sectors_at_high_risk": sorted({r["sector"] for r in here if r["score"] >= 3}),
                    "open_mitigation": sum(r["open_mitigation"] for r in here),
                    "overdue_mitigation": sum(r["overdue_mitigation"] for r in here),
                    "people_trained": cov.get("people_trained", 0),
                    "people_reached": cov.get("people_reached", 0),
                    "released_allegations": None if cell is None else cell[0],
                    "allegations_suppressed": False if cell is None else cell[1],
                    "high_risk_low_coverage": top is not None
                    and top >= 3
                    and cov.get("people_trained", 0) + cov.get("people_reached", 0) == 0,
                }
            )
        rows.sort(key=lambda r: (-float(r["highest_score"] or 0), str(r["area"])))
        return rows

    def _agencies(self) -> list[str]:
        named = (
            set(self.agencies)
            | {t.agency for t in self.trainings.values()}
            | set(self.focal_points)
            | set(self.alternates)
        )
        return sorted(named)


AREA_REPORT = "sea_by_area_by_quarter"
"""The release table of SEA allegations by incident area, when the release has one."""


def _released_by_area(release: StatisticsReleaseV1 | None) -> dict[str, tuple[int | None, bool]]:
    """Row totals of the release's area table: (value, suppressed), copied as published."""
    if release is None or AREA_REPORT not in release.reports:
        return {}
    report = release.reports[AREA_REPORT]
    return {
        row: (total.value, total.suppressed)
        for row, total in zip(report.rows, report.row_totals, strict=True)
    }
