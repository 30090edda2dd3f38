"""Network policy: the deadlines and thresholds each network sets in its country SOPs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from domain.errors import InvalidCommand


@dataclass(frozen=True)
class NetworkPolicy:
    """Configurable deadlines (defaults from DOMAIN.md) and reporting thresholds.

    ``assistance_acceptance_within``, ``suppression_threshold``,
    ``personal_data_retention`` and ``coordinator_sees_personal_data`` have no figure in
    DOMAIN.md; their defaults are ours.
    """

    assess_within: timedelta = timedelta(hours=24)
    offer_assistance_within: timedelta = timedelta(hours=24)
    refer_for_investigation_within: timedelta = timedelta(hours=24)
    acknowledge_within: timedelta = timedelta(days=7)
    feedback_every: timedelta = timedelta(days=30)
    assistance_acceptance_within: timedelta = timedelta(hours=72)
    suppression_threshold: int = 5
    personal_data_retention: timedelta = timedelta(days=5 * 365)
    coordinator_sees_personal_data: bool = False
    """Whether the network coordinator may read cases' personal data (by default the
    coordinator tracks every case without seeing who is involved)."""

    def __post_init__(self) -> None:
        for name in (
            "assess_within",
            "offer_assistance_within",
            "refer_for_investigation_within",
            "acknowledge_within",
            "feedback_every",
            "assistance_acceptance_within",
            "personal_data_retention",
        ):
            if getattr(self, name) <= timedelta(0):
                raise InvalidCommand(f"policy {name} must be a positive duration")
        if self.suppression_threshold < 2:
            raise InvalidCommand("policy suppression_threshold must be at least 2")
