"""The network's registry and policy: what the coordinator sends, and what is read back."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from domain.vocabulary import (
    AgencyType,
    ServiceType,
)
from services.api.schemas.common import (
    AreaCode,
    Body,
    Code,
    Count,
    Duration,
    DurationOut,
    Flag,
    UserId,
)


class PolicyIn(Body):
    """Deadlines (ISO 8601 durations, e.g. PT24H, P7D) and thresholds."""

    assess_within: Duration = timedelta(hours=24)
    offer_assistance_within: Duration = timedelta(hours=24)
    refer_for_investigation_within: Duration = timedelta(hours=24)
    acknowledge_within: Duration = timedelta(days=7)
    feedback_every: Duration = timedelta(days=30)
    assistance_acceptance_within: Duration = timedelta(hours=72)
    suppression_threshold: Count = Field(default=5, ge=2, le=1000)
    personal_data_retention: Duration = timedelta(days=5 * 365)
    coordinator_sees_personal_data: Flag = False
    complaints_recorded_within: Duration = Field(
        default=timedelta(days=366),
        description="a complaint received longer than this before it is recorded is refused",
    )
    incidents_reported_within: Duration = Field(
        default=timedelta(days=50 * 366),
        description="an incident dated longer than this before its complaint is refused",
    )
    expected_version: Count | None = Field(default=None, ge=1)


class NetworkIn(Body):
    name: str = Field(min_length=1, max_length=200)
    policy: PolicyIn | None = None


class AgencyIn(Body):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    agency_type: AgencyType


class EntityIn(Body):
    entity: Code


class FocalPointIn(Body):
    user: UserId


class ShareKeyIn(Body):
    """An agency's X25519 public key for sealed shares (`cbcm agency keygen` makes one)."""

    public_key: str = Field(
        pattern=r"^[A-Za-z0-9+/]{43}=$",
        description="standard base64 of the 32-byte X25519 public key",
        examples=["WbR594ziyHob0iaFTR65b1kw1wTmtLPpGan1g54KTFk="],
    )


class ServiceProviderIn(Body):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    service_types: list[ServiceType] = Field(min_length=1, max_length=10)
    areas: list[AreaCode] = Field(min_length=1, max_length=200)


class ShareKeyOut(BaseModel):
    """The key personal data shared with the agency is sealed to (issue #6)."""

    public_key: str
    key_id: str = Field(description="16 hex chars of SHA-256 over the raw 32-byte key")


class AgencyOut(BaseModel):
    code: str
    name: str
    agency_type: AgencyType
    investigating_entity: str | None
    focal_points: list[str]
    share_key: ShareKeyOut | None = None


class ServiceProviderOut(BaseModel):
    code: str
    name: str
    service_types: list[ServiceType]
    areas: list[str]


class PolicyOut(BaseModel):
    assess_within: DurationOut
    offer_assistance_within: DurationOut
    refer_for_investigation_within: DurationOut
    acknowledge_within: DurationOut
    feedback_every: DurationOut
    assistance_acceptance_within: DurationOut
    suppression_threshold: int
    personal_data_retention: DurationOut
    coordinator_sees_personal_data: bool
    complaints_recorded_within: DurationOut
    incidents_reported_within: DurationOut


class NetworkOut(BaseModel):
    """The network's registry and policy (no personal data)."""

    version: int
    name: str
    policy: PolicyOut
    agencies: list[AgencyOut]
    service_providers: list[ServiceProviderOut]


# ------------------------------------------------------------------ public
