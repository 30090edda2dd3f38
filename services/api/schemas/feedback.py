"""Community feedback items (the CFM): what is sent, and the item as read."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from domain.vocabulary import (
    Channel,
    FeedbackCategory,
    Sector,
)
from services.api.schemas.common import (
    Body,
    Code,
    Text,
)


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
