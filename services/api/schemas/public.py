"""The public pages' resources: a complaint sent without an account, its receipt, and the
feedback read with it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.vocabulary import (
    ComplainantRole,
)
from services.api.schemas.common import (
    Body,
    Code,
    Flag,
    Text,
)


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


class ReceiptLookupIn(Body):
    """A receipt code to look up, in the body: never in a URL, where logs keep it."""

    code: str = Field(
        min_length=1,
        max_length=64,
        description="the receipt code as the complainant has it (case, spaces and dashes "
        "do not matter)",
        examples=["42UW-NM7V-AXSP-6YCE-ZQKP-XY4A"],
    )


PublicStatus = Literal["received", "referred", "under_investigation", "closed"]
"""Where a complaint stands, as the complainant is told: the pages put it into words in the
reader's language (and a network's own words, ADR 20)."""


class PublicReceiptOut(BaseModel):
    """A receipt code's answer: the status in plain words, feedback meant for the
    complainant, nothing else."""

    code: str = Field(description="the receipt code, as normalised")
    status_code: PublicStatus = Field(
        description="where the complaint stands, as a code (put into words at the edge)"
    )
    status: str = Field(description="where the complaint stands, in plain English words")
    received_on: str = Field(description="the day the complaint was received (YYYY-MM-DD)")
    feedback: list[PublicFeedbackOut]


class PublicFeedbackOut(BaseModel):
    given_on: str
    message: str


class PublicComplaintOut(BaseModel):
    receipt_code: str = Field(
        description="keep it: with it, the status and feedback can be checked with "
        'POST /v1/public/receipt-lookups {"code": "..."}'
    )
    message: str


PublicReceiptOut.model_rebuild()
