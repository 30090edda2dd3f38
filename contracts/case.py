"""Messages about a case: one complaint, from intake to closure.

No message carries personal data: not the narrative, not who the complainant, the survivor or
the alleged perpetrator are, not the exact place, not any free text a user typed. Where a
consumer needs to know that such data exists, a boolean says so.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

import msgspec

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import (
    AgeBand,
    AllegationSubtype,
    AllegationType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    DataSubject,
    ErasureReason,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
    VictimCategory,
)


class AllegationV1(msgspec.Struct, frozen=True, kw_only=True):
    """An SEA allegation as a focal point assessed it, without the exact place of the
    incident and without who the alleged perpetrator is.

    ``incident_area`` is an administrative-area code (such as an OCHA P-code), not a place
    that could identify anyone. ``victim_category`` is derived from sex and age band.
    """

    allegation_type: AllegationType
    subtype: AllegationSubtype | None
    child_involved: bool
    implicated_agency: str | None
    personnel_category: PersonnelCategory
    incident_date: date | None
    incident_area: str | None
    victim_sex: Sex
    victim_age_band: AgeBand
    victim_category: VictimCategory


class CaseEventData(EventData, frozen=True, kw_only=True):
    """Fields of every case message: the case, its version after the event, who acted."""

    case_id: UUID
    version: Version
    actor: ActorRef


class CaseReceivedV1(CaseEventData, frozen=True, kw_only=True):
    """A complaint was recorded through a community entry point.

    The receiving agency is ``actor.agency``; it holds the case until a transfer.
    ``has_complainant_details`` and ``has_survivor_details`` say whether identifying or
    contact details were recorded, never what they are.
    """

    received_at: Annotated[datetime, msgspec.Meta(tz=True)]
    channel: Channel
    complainant_role: ComplainantRole
    immediate_safety_risk: bool
    has_complainant_details: bool
    has_survivor_details: bool


class CaseAssessedV1(CaseEventData, frozen=True, kw_only=True):
    """A focal point triaged the complaint; ``allegation`` is set for SEA allegations only."""

    category: ComplaintCategory
    allegation: AllegationV1 | None


class CaseFocalPointsAssignedV1(CaseEventData, frozen=True, kw_only=True):
    """The case was handed to these focal points (user accounts) of the holding agency."""

    focal_points: tuple[str, ...]


class CaseTransferredV1(CaseEventData, frozen=True, kw_only=True):
    """Custody of the case moved to another agency; ``shared`` names what went with it."""

    from_agency: str
    to_agency: str
    reason: TransferReason
    shared: tuple[SharedItem, ...]
    has_note: bool


class CaseConsentGivenV1(CaseEventData, frozen=True, kw_only=True):
    """The survivor (or a caregiver in a child's best interest) gave a consent."""

    kind: ConsentKind
    given_by: ConsentGiver
    contact_methods: tuple[ContactMethod, ...]


class CaseConsentWithdrawnV1(CaseEventData, frozen=True, kw_only=True):
    """The survivor withdrew a consent."""

    kind: ConsentKind


class CaseAssistanceReferredV1(CaseEventData, frozen=True, kw_only=True):
    """The survivor was referred to one assistance service (see the referral's messages)."""

    referral_id: UUID
    service_type: ServiceType
    provider: str


class CaseReferredForInvestigationV1(CaseEventData, frozen=True, kw_only=True):
    """The allegation was referred to the investigating entity of the implicated agency.

    ``identity_shared`` is true when an item that identifies the survivor went with it
    (which the survivor's disclosure consent allowed).
    """

    agency: str
    entity: str
    shared: tuple[SharedItem, ...]
    identity_shared: bool


class CaseInvestigationAcknowledgedV1(CaseEventData, frozen=True, kw_only=True):
    """The investigating entity confirmed it received the referral."""


class CaseInvestigationOutcomeRecordedV1(CaseEventData, frozen=True, kw_only=True):
    """The investigating entity reported the outcome of its investigation."""

    outcome: InvestigationOutcome


class CaseFeedbackGivenV1(CaseEventData, frozen=True, kw_only=True):
    """Feedback was given to the complainant through ``channel`` (the message is not sent)."""

    channel: FeedbackChannel


class CaseMarkedAsDuplicateV1(CaseEventData, frozen=True, kw_only=True):
    """This case reports the same incident as ``original_case_id``; count the incident once."""

    original_case_id: UUID


class CaseClosedV1(CaseEventData, frozen=True, kw_only=True):
    """The case was closed for ``reason``.

    The two booleans say whether a reason was written down for closing without an
    investigation outcome and without feedback to the complainant.
    """

    reason: ClosureReason
    no_outcome_reason_given: bool
    no_feedback_reason_given: bool


class CaseReopenedV1(CaseEventData, frozen=True, kw_only=True):
    """A closed case was reopened (the reason given is not sent)."""


class CasePersonalDataErasedV1(CaseEventData, frozen=True, kw_only=True):
    """The personal data of ``subjects`` in the case was erased for good (its data keys were
    destroyed), and in ``records``, the case's other records (assistance referrals, auditors'
    grants, the feedback item it was forwarded as). The case's other facts stay.

    An agency that received any of it (a sealed share on ``cbcm.v1.share.<agency>.>``) must
    erase its copy too.
    """

    subjects: tuple[DataSubject, ...]
    reason: ErasureReason
    records: tuple[UUID, ...]
