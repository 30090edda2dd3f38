"""Assistance referrals: what a provider or focal point sends, and the referral as read."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from domain.vocabulary import (
    ReferralStatus,
    ServiceType,
)
from services.api.schemas.cases import PersonOut
from services.api.schemas.common import (
    Body,
    ShortText,
)


class ProviderDeclineIn(Body):
    reason: ShortText | None = None


class FollowUpIn(Body):
    note: ShortText | None = None


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
