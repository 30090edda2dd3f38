"""Prevention work (issue #22): what is sent to record it. Counts and codes only."""

from __future__ import annotations

from pydantic import Field

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
from services.api.schemas.common import AreaCode, Body, Code, Count, Day, UserId

Factor = str


class TrainedIn(Body):
    female: Count = Field(default=0, ge=0, le=1_000_000)
    male: Count = Field(default=0, ge=0, le=1_000_000)
    other_or_not_recorded: Count = Field(default=0, ge=0, le=1_000_000)


class TrainingIn(Body):
    agency: Code
    held_on: Day
    area: AreaCode
    audience: AudienceCategory
    topic: TrainingTopic
    trained: TrainedIn


class AwarenessIn(Body):
    agency: Code
    held_on: Day
    area: AreaCode
    kind: AwarenessKind
    audience: CommunityAudience
    reach: Count = Field(ge=1, le=50_000_000)
    preferred_channels: list[Channel] = Field(default_factory=list, max_length=len(Channel))


class AlternateIn(Body):
    user: UserId


class FocalPointTrainingIn(Body):
    user: UserId
    completed_on: Day


class RiskAssessmentIn(Body):
    agency: Code
    area: AreaCode
    sector: Sector
    assessed_on: Day
    ratings: dict[Factor, Count] = Field(max_length=16)


class ReassessmentIn(Body):
    assessed_on: Day
    ratings: dict[Factor, Count] = Field(max_length=16)
    expected_version: Count | None = Field(default=None, ge=1)


class MitigationIn(Body):
    measure: MitigationMeasure
    owner_agency: Code
    due_on: Day


class StatusIn(Body):
    status: ActionStatus


class WorkPlanIn(Body):
    year: Count = Field(ge=2000, le=2100)


class ActivityIn(Body):
    kind: WorkPlanActivityKind
    owner_agency: Code
    area: AreaCode | None = None
    target: Count = Field(ge=1, le=50_000_000)
    due_on: Day


class ProgressIn(Body):
    status: ActionStatus
    achieved: Count = Field(ge=0, le=50_000_000)


class TargetIn(Body):
    agency: Code
    year: Count = Field(ge=2000, le=2100)
    personnel: Count = Field(ge=1, le=1_000_000)


class PreventionPolicyIn(Body):
    refresher_every_days: Count = Field(default=365, ge=30, le=1830)
    risk_factors: list[Code] = Field(min_length=1, max_length=16)
    training_targets: list[TargetIn] = Field(default_factory=list, max_length=1000)
    expected_version: Count | None = Field(default=None, ge=1)
