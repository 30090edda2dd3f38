"""The survivor-assistance tracker read model (see ``projections.assistance.model``)."""

from projections.assistance.model import (
    SERVICE_TYPES,
    AssistanceProjection,
    CaseAssistance,
    ConsentRecord,
    Gap,
    ReferralView,
    StatusTime,
    gaps,
    provider_referrals,
    tracker,
)

__all__ = [
    "SERVICE_TYPES",
    "AssistanceProjection",
    "CaseAssistance",
    "ConsentRecord",
    "Gap",
    "ReferralView",
    "StatusTime",
    "gaps",
    "provider_referrals",
    "tracker",
]
