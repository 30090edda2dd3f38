"""Case resources: commands in (``ComplaintIn``, ``AssessmentIn``...), the case out."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.case import CaseStatus
from domain.personal_data import DataSubject
from domain.vocabulary import (
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
    ErasureReason,
    FeedbackCategory,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    Sector,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from services.api.schemas.common import (
    AreaCode,
    Body,
    CaseCommand,
    Code,
    Day,
    Flag,
    Instant,
    ShortText,
    Text,
    UserId,
)


class PersonIn(Body):
    """Who someone is and how to reach them: all personal data, all optional."""

    name: ShortText | None = None
    phone: ShortText | None = None
    email: ShortText | None = None
    address: ShortText | None = None


class PersonOut(BaseModel):
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    address: str | None = None


class ComplaintIn(Body):
    """A complaint as an intake operator records it."""

    received_at: Instant = Field(description="when it was said (with a time zone)")
    channel: Channel
    complainant_role: ComplainantRole
    immediate_safety_risk: Flag = False
    narrative: Text = Field(description="what was said (personal data)")
    complainant: PersonIn | None = None
    survivor: PersonIn | None = None
    issue_receipt: Flag = Field(
        default=False,
        description="issue a receipt code the complainant follows the complaint with "
        "(answered once, in `receipt_code`)",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "received_at": "2026-03-02T08:00:00+03:00",
                    "channel": "hotline",
                    "complainant_role": "anonymous",
                    "immediate_safety_risk": False,
                    "narrative": "A distribution worker asked for sex in exchange for food.",
                    "issue_receipt": True,
                }
            ]
        }
    )


class AllegationIn(Body):
    allegation_type: AllegationType
    subtype: AllegationSubtype | None = None
    child_involved: Flag
    implicated_agency: Code | None = None
    personnel_category: PersonnelCategory
    incident_date: Day | None = None
    incident_area: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,24}$")
    victim_sex: Sex
    victim_age_band: AgeBand
    incident_place_detail: ShortText | None = None
    alleged_perpetrator: ShortText | None = None


class AssessmentIn(CaseCommand):
    category: ComplaintCategory
    allegation: AllegationIn | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "category": "sea_allegation",
                    "allegation": {
                        "allegation_type": "sexual_exploitation",
                        "subtype": "transactional_sex",
                        "child_involved": False,
                        "implicated_agency": "wfp",
                        "personnel_category": "implementing_partner_personnel",
                        "victim_sex": "female",
                        "victim_age_band": "18+",
                    },
                    "expected_version": 1,
                }
            ]
        }
    )


class FocalPointsIn(CaseCommand):
    focal_points: list[UserId] = Field(min_length=1, max_length=20)


class TransferIn(CaseCommand):
    to_agency: Code
    reason: TransferReason
    shared: list[SharedItem] = Field(default_factory=list, max_length=10)
    note: ShortText | None = None


class ConsentIn(CaseCommand):
    kind: ConsentKind
    given_by: ConsentGiver
    contact_methods: list[ContactMethod] = Field(default_factory=list, max_length=10)


class ConsentWithdrawalIn(CaseCommand):
    pass


class AssistanceReferralIn(CaseCommand):
    service_type: ServiceType
    provider: Code
    area: AreaCode
    share_contact: Flag = False


class InvestigationReferralIn(CaseCommand):
    entity: Code
    shared: list[SharedItem] = Field(min_length=1, max_length=10)


class AcknowledgementIn(CaseCommand):
    pass


class OutcomeIn(CaseCommand):
    outcome: InvestigationOutcome


class FeedbackToComplainantIn(CaseCommand):
    message: Text = Field(description="what the complainant is told (personal data)")
    channel: FeedbackChannel


class DuplicateIn(CaseCommand):
    original_case_id: UUID


class ClosureIn(CaseCommand):
    reason: ClosureReason
    no_outcome_reason: ShortText | None = None
    no_feedback_reason: ShortText | None = None


class ReopeningIn(CaseCommand):
    reason: ShortText


class ErasureIn(CaseCommand):
    """Erase, for good, the personal data of these people in the case and its records (on a
    survivor's or complainant's request, or a network decision); the case's other facts stay.
    Retention is applied by `cbcm retention run`, not here."""

    subjects: list[DataSubject] = Field(
        min_length=1,
        description="whose personal data: complainant, survivor, alleged_perpetrator, or case "
        "(free text staff wrote about the case)",
    )
    reason: ErasureReason

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"subjects": ["survivor", "complainant"], "reason": "survivor_request"}]
        }
    )


class ForwardingIn(CaseCommand):
    category: FeedbackCategory
    sector: Sector
    concerned_agency: Code


class AuditGrantIn(Body):
    """The coordinator lets an auditor see one case's personal data."""

    auditor: UserId = Field(description="the auditor's account id")
    reason: ShortText = Field(description="why the audit needs the personal data (personal data)")


# ------------------------------------------------------------------ out


class AllegationOut(BaseModel):
    allegation_type: AllegationType
    subtype: AllegationSubtype | None
    child_involved: bool
    implicated_agency: str | None
    personnel_category: PersonnelCategory
    incident_date: date | None
    incident_area: str | None
    victim_sex: Sex
    victim_age_band: AgeBand
    incident_place_detail: str | None = None
    alleged_perpetrator: str | None = None


class AssessmentOut(BaseModel):
    category: ComplaintCategory
    allegation: AllegationOut | None
    assessed_at: datetime


class ConsentOut(BaseModel):
    kind: ConsentKind
    given: bool
    given_by: ConsentGiver | None
    contact_methods: list[ContactMethod]
    recorded_at: datetime


class InvestigationOut(BaseModel):
    agency: str
    entity: str
    shared: list[SharedItem]
    referred_at: datetime
    acknowledged_at: datetime | None
    outcome: InvestigationOutcome | None
    outcome_at: datetime | None


class ClosureOut(BaseModel):
    reason: ClosureReason
    closed_at: datetime
    no_outcome_reason: str | None = None
    no_feedback_reason: str | None = None


class CaseOut(BaseModel):
    """A case as the reader may see it. Whatever the reader has no need to know is null
    (or empty) and named in ``redacted``."""

    id: UUID
    version: int
    status: CaseStatus
    received_at: datetime
    recorded_at: datetime
    channel: Channel
    receiving_agency: str
    custodian: str
    complainant_role: ComplainantRole
    immediate_safety_risk: bool
    focal_points: list[str] | None
    narrative: str | None
    complainant: PersonOut | None
    survivor: PersonOut | None
    assessment: AssessmentOut | None
    consents: list[ConsentOut] | None
    assistance_referrals: list[UUID] | None
    investigation: InvestigationOut | None
    feedback_given_at: list[datetime] | None
    duplicate_of: UUID | None
    closure: ClosureOut | None
    reopened_count: int
    redacted: list[str] = Field(
        description="fields withheld from this reader (personal data, or not their task)"
    )
    erased: list[str] = Field(
        default_factory=list,
        description="personal fields whose data was erased for good (crypto-shredded): null",
    )


class HistoryEventOut(BaseModel):
    version: int
    type: str = Field(description="the event, e.g. Case.Assessed")
    at: datetime
    actor: dict[str, str] | None
    data: dict[str, object] = Field(description="the event's fields, personal ones redacted")
    redacted: list[str]
    erased: list[str] = Field(
        default_factory=list,
        description="personal fields whose data was erased for good (crypto-shredded): null",
    )
    position: int | None = Field(default=None, description="the event's store position")
    link: str | None = Field(
        default=None, description="the hash chain's link at that position (SHA-256, hex)"
    )
    summary: str | None = Field(
        default=None, description="what the event did, in plain words (no personal values)"
    )


class NoticeOut(BaseModel):
    """A notice about the case: who was told, for which agency, of what, how, and whether it
    was delivered. Never an address, never the message's words."""

    recipient: str = Field(description="the account told")
    role: str = Field(description="focal_point, investigating_entity or service_provider")
    agency: str | None = Field(description="the agency (or provider) it was told for")
    kind: str = Field(description="new_case, urgent_case, transfer_received, ...")
    urgent: bool
    count: int
    delivered: bool
    channels: list[str] = Field(description="the channels that accepted it (email, sms)")
    attempts: int
    reason: str | None = Field(description="why it was given up (no_address, send_failed)")


class StepOut(BaseModel):
    """One step of the custody trail, in plain words, with its place in the hash chain."""

    at: datetime | None
    record: str = Field(
        description="case, assistance referral, audit grants, personal-data reads or notification"
    )
    aggregate_id: UUID
    version: int = Field(description="the event's version in its record")
    type: str = Field(description="the event, e.g. Case.Transferred")
    actor: dict[str, str] | None
    holder: str | None = Field(description="the agency holding the case after this step")
    summary: str = Field(description="what was done, by whom, what was shared (no values)")
    position: int
    link: str | None
    link_recomputes: bool = Field(
        description="whether the link recomputes from the stored event and the link before it"
    )
    missing: bool = Field(
        default=False,
        description="a notice the case's index names that the log no longer holds",
    )
    notice: NoticeOut | None = Field(
        default=None, description="for a notification: who was told, of what, and how"
    )


class PersonalDataReadOut(BaseModel):
    at: datetime
    user: str
    agency: str
    role: str
    fields: list[str]
    purpose: str


class CaseHistoryOut(BaseModel):
    """The custody trail: every recorded step, and every read of personal data."""

    case_id: UUID
    version: int
    events: list[HistoryEventOut]
    personal_data_reads: list[PersonalDataReadOut]
    steps: list[StepOut] = Field(
        default_factory=list,
        description="every step in time order: the case's events, its assistance referrals', "
        "auditors' grants, reads of personal data and the notices sent or given up about it",
    )
