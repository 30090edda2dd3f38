"""Network policy: the deadlines and thresholds each network sets in its country SOPs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from domain.errors import ImplausibleTime, InvalidCommand

LATEST_RECORDING = timedelta(days=5 * 366)
"""A complaint is recorded at most five years after it was received, whatever the policy:
each quarter between the earliest receipt and now is a column of every statistics report, and
a century of them made one report of 70 agencies outgrow what NATS carries (attack review of
issue #12)."""

LONGEST_POLICY_DURATION = timedelta(days=100 * 366)
"""No deadline, retention or look-back of a policy may exceed a century: a read model adds
them to dates, and a sum past the year 9999 cannot be represented."""

DURATIONS = (
    "assess_within",
    "offer_assistance_within",
    "refer_for_investigation_within",
    "acknowledge_within",
    "feedback_every",
    "assistance_acceptance_within",
    "personal_data_retention",
    "complaints_recorded_within",
    "incidents_reported_within",
)


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
    complaints_recorded_within: timedelta = timedelta(days=366)
    """How long after it was received a complaint may still be recorded (a paper form from a
    complaint box typed in late): ``received_at`` earlier than that before the recording is
    refused."""
    incidents_reported_within: timedelta = timedelta(days=50 * 366)
    """How far before its receipt an incident may lie: an ``incident_date`` earlier than that
    is refused (historical abuse is reported decades later; a year 0001 is a typing error)."""

    def __post_init__(self) -> None:
        for name in DURATIONS:
            value = getattr(self, name)
            if value <= timedelta(0):
                raise ImplausibleTime(name, "must be a positive duration")
            if value > LONGEST_POLICY_DURATION:
                raise ImplausibleTime(name, "must not exceed 100 years")
        if self.complaints_recorded_within > LATEST_RECORDING:
            raise ImplausibleTime("complaints_recorded_within", "must not exceed 5 years")
        if self.suppression_threshold < 2:
            raise InvalidCommand("policy suppression_threshold must be at least 2")

    def check_received_at(self, received_at: datetime, at: datetime) -> None:
        """A complaint is received before it is recorded, and not longer before than
        ``complaints_recorded_within``."""
        if received_at > at:
            raise ImplausibleTime("received_at", "is after the complaint is recorded")
        if at - received_at > self.complaints_recorded_within:
            raise ImplausibleTime(
                "received_at",
                f"is more than {self.complaints_recorded_within.days} days before the "
                "complaint is recorded (the network policy's complaints_recorded_within)",
            )

    def check_incident_date(self, incident_date: date, received_at: datetime) -> None:
        """An incident happens before it is reported, and not longer before than
        ``incidents_reported_within``. Both are compared as calendar days where the
        complaint was received."""
        received_on = received_at.date()
        if incident_date > received_on:
            raise ImplausibleTime("incident_date", "is after the complaint was received")
        if received_on - incident_date > self.incidents_reported_within:
            raise ImplausibleTime(
                "incident_date",
                f"is more than {self.incidents_reported_within.days} days before the "
                "complaint was received (the network policy's incidents_reported_within)",
            )
