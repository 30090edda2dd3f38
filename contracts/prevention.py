"""Messages about the network's prevention work (issue #22): trainings, awareness-raising and
consultations, the focal-point network's readiness, SEA risk assessments and the work plan.

Counts and codes only: no participant is named, and no free text is recorded or sent.
Trainings, awareness activities, readiness and risk assessments travel under the agency that
recorded them; the work plan and the prevention policy under ``network``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

import msgspec

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import (
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

Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Rating = Annotated[int, msgspec.Meta(ge=1, le=5)]
AreaCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,24}$")]
AgencyCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]


class TrainedCountsV1(msgspec.Struct, frozen=True, kw_only=True):
    """How many people a session trained, by sex."""

    female: Count
    male: Count
    other_or_not_recorded: Count


class TrainingTargetV1(msgspec.Struct, frozen=True, kw_only=True):
    """How many personnel ``agency`` commits to train in ``year``."""

    agency: AgencyCode
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]
    personnel: Positive


# ------------------------------------------------------------------------ trainings


class TrainingSessionEventData(EventData, frozen=True, kw_only=True):
    """Fields of every training-session message: the session, its version, who acted."""

    training_session_id: UUID
    version: Version
    actor: ActorRef


class TrainingSessionRecordedV1(TrainingSessionEventData, frozen=True, kw_only=True):
    """A PSEA training session held by ``agency`` was recorded (counts by sex only)."""

    agency: AgencyCode
    held_on: date
    area: AreaCode
    audience: AudienceCategory
    topic: TrainingTopic
    trained: TrainedCountsV1


class TrainingSessionWithdrawnV1(TrainingSessionEventData, frozen=True, kw_only=True):
    """The session was recorded in error and counts no longer."""


# ------------------------------------------------------------------------ awareness


class AwarenessActivityEventData(EventData, frozen=True, kw_only=True):
    """Fields of every awareness-activity message: the activity, its version, who acted."""

    awareness_activity_id: UUID
    version: Version
    actor: ActorRef


class AwarenessActivityRecordedV1(AwarenessActivityEventData, frozen=True, kw_only=True):
    """An awareness activity or community consultation in ``area``, with its reach and the
    reporting channels the community said it would use."""

    agency: AgencyCode
    held_on: date
    area: AreaCode
    kind: AwarenessKind
    audience: CommunityAudience
    reach: Positive
    preferred_channels: tuple[Channel, ...]


class AwarenessActivityWithdrawnV1(AwarenessActivityEventData, frozen=True, kw_only=True):
    """The activity was recorded in error and counts no longer."""


# ------------------------------------------------------------------------ readiness


class FocalPointReadinessEventData(EventData, frozen=True, kw_only=True):
    """Fields of every readiness message: the agency's readiness record, its version, who acted."""

    focal_point_readiness_id: UUID
    version: Version
    actor: ActorRef


class FocalPointReadinessOpenedV1(FocalPointReadinessEventData, frozen=True, kw_only=True):
    """``agency``'s readiness record was opened."""

    agency: AgencyCode


class FocalPointReadinessAlternateAppointedV1(
    FocalPointReadinessEventData, frozen=True, kw_only=True
):
    """``user`` (an account identifier) is an alternate focal point of the agency."""

    user: str


class FocalPointReadinessAlternateWithdrawnV1(
    FocalPointReadinessEventData, frozen=True, kw_only=True
):
    """``user`` is no longer an alternate focal point of the agency."""

    user: str


class FocalPointReadinessTrainingCompletedV1(
    FocalPointReadinessEventData, frozen=True, kw_only=True
):
    """A focal point or alternate of the agency completed PSEA training on ``completed_on``
    (their refresher falls due after the prevention policy's interval)."""

    user: str
    role: ReadinessRole
    completed_on: date


# ------------------------------------------------------------------ risk assessments


class RiskAssessmentEventData(EventData, frozen=True, kw_only=True):
    """Fields of every risk-assessment message: the assessment, its version, who acted."""

    risk_assessment_id: UUID
    version: Version
    actor: ActorRef


class RiskAssessmentAssessedV1(RiskAssessmentEventData, frozen=True, kw_only=True):
    """SEA risk in ``area`` and ``sector``: each factor of the template rated 1-5."""

    agency: AgencyCode
    area: AreaCode
    sector: Sector
    assessed_on: date
    ratings: dict[str, Rating]


class RiskAssessmentReassessedV1(RiskAssessmentEventData, frozen=True, kw_only=True):
    """The area and sector were rated again, on the template of the day."""

    assessed_on: date
    ratings: dict[str, Rating]


class RiskAssessmentMitigationAgreedV1(RiskAssessmentEventData, frozen=True, kw_only=True):
    """Mitigation action number ``action`` was agreed, owned by ``owner_agency``."""

    action: Positive
    measure: MitigationMeasure
    owner_agency: AgencyCode
    due_on: date


class RiskAssessmentMitigationStatusChangedV1(RiskAssessmentEventData, frozen=True, kw_only=True):
    """Mitigation action ``action`` moved to ``status``."""

    action: Positive
    status: ActionStatus


# ---------------------------------------------------------------- work plan and policy


class WorkPlanEventData(EventData, frozen=True, kw_only=True):
    """Fields of every work-plan message: the plan of a year, its version, who acted."""

    work_plan_id: UUID
    version: Version
    actor: ActorRef


class WorkPlanOpenedV1(WorkPlanEventData, frozen=True, kw_only=True):
    """The network's collective PSEA work plan of ``year`` was opened."""

    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]


class WorkPlanActivityPlannedV1(WorkPlanEventData, frozen=True, kw_only=True):
    """Activity number ``activity`` was added to the plan: a kind, an owner agency, a target
    and a due date."""

    activity: Positive
    kind: WorkPlanActivityKind
    owner_agency: AgencyCode
    area: AreaCode | None
    target: Positive
    due_on: date


class WorkPlanProgressReportedV1(WorkPlanEventData, frozen=True, kw_only=True):
    """The owner agency reported an activity's status and what it achieved so far (cumulative)."""

    activity: Positive
    status: ActionStatus
    achieved: Count


class PreventionPolicyEventData(EventData, frozen=True, kw_only=True):
    """Fields of every prevention-policy message: the whole policy as set."""

    prevention_policy_id: UUID
    version: Version
    actor: ActorRef
    refresher_every_days: Positive
    risk_factors: tuple[str, ...]
    training_targets: tuple[TrainingTargetV1, ...]


class PreventionPolicySetV1(PreventionPolicyEventData, frozen=True, kw_only=True):
    """The network's prevention policy was set: focal points' refresher interval, the
    risk-assessment template, and training targets per agency and year."""


class PreventionPolicyChangedV1(PreventionPolicyEventData, frozen=True, kw_only=True):
    """The prevention policy was replaced."""
