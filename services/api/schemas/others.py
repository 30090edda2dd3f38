"""Referral, community-feedback, network and public resources."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.vocabulary import (
    AgencyType,
    Channel,
    ComplainantRole,
    FeedbackCategory,
    ReferralStatus,
    Sector,
    ServiceType,
)
from services.api.schemas.cases import PersonOut
from services.api.schemas.common import (
    AreaCode,
    Body,
    Code,
    Count,
    Duration,
    DurationOut,
    Flag,
    ShortText,
    Text,
    UserId,
)

# ------------------------------------------------------------------ assistance referrals


class ProviderDeclineIn(Body):
    reason: ShortText | None = None


class FollowUpIn(Body):
    note: ShortText | None = None


class EmptyIn(Body):
    """No fields: the command is the whole request."""


class ReferralOut(BaseModel):
    """An assistance referral as the reader may see it."""

    id: UUID
    version: int
    case_id: UUID
    service_type: ServiceType
    provider: str
    area: str
    contact_shared: bool
    referring_agency: str
    status: ReferralStatus
    status_times: dict[ReferralStatus, datetime]
    survivor_contact: PersonOut | None = Field(
        description="the survivor's contact details, only as the survivor consented"
    )
    redacted: list[str]
    erased: list[str] = Field(
        default_factory=list,
        description="personal fields whose data was erased for good (crypto-shredded): null",
    )


class ProviderReferralOut(BaseModel):
    case_id: UUID
    referral_id: UUID
    service_type: str
    area: str
    status: str
    referred_at: datetime
    acceptance_overdue: bool


# ------------------------------------------------------------------ community feedback


class FeedbackIn(Body):
    channel: Channel
    category: FeedbackCategory
    sector: Sector
    concerned_agency: Code
    text: str = Field(min_length=1, max_length=20_000)


class FeedbackResponseIn(Body):
    response: Text


class FeedbackOut(BaseModel):
    id: UUID
    version: int
    channel: Channel
    category: FeedbackCategory
    sector: Sector
    concerned_agency: str
    text: str | None
    source_case_id: UUID | None
    received_at: datetime
    responded_at: datetime | None
    loop_closed_at: datetime | None
    redacted: list[str]
    erased: list[str] = Field(
        default_factory=list,
        description="personal fields whose data was erased for good (crypto-shredded): null",
    )


# ------------------------------------------------------------------ network


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


class PublicComplaintIn(Body):
    """A complaint through the network's public web form. No login; a receipt code is
    always issued, so the complainant can follow it."""

    agency: Code = Field(description="the agency whose web form this is")
    narrative: Text
    complainant_role: ComplainantRole = ComplainantRole.ANONYMOUS
    immediate_safety_risk: Flag = False

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agency": "unhcr",
                    "narrative": "A guard at the distribution asked my sister for sex.",
                    "complainant_role": "anonymous",
                }
            ]
        }
    )


class PublicReceiptOut(BaseModel):
    """A receipt code's answer: the status in plain words, feedback meant for the
    complainant, nothing else."""

    code: str = Field(description="the receipt code, as normalised")
    status: str = Field(description="where the complaint stands, in plain words")
    received_on: str = Field(description="the day the complaint was received (YYYY-MM-DD)")
    feedback: list[PublicFeedbackOut]


class PublicFeedbackOut(BaseModel):
    given_on: str
    message: str


class PublicComplaintOut(BaseModel):
    receipt_code: str = Field(
        description="keep it: with it, the status and feedback can be checked at "
        "/v1/public/receipts/{code}"
    )
    message: str


PublicReceiptOut.model_rebuild()
