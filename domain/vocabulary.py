"""The categories of DOMAIN.md, as closed sets of values.

Values are stable strings: they are stored in events and published in contracts, so a value
is never renamed; a new value is added instead.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """The community entry point a complaint came through."""

    HOTLINE = "hotline"
    SMS_MESSAGING = "sms_messaging"
    COMPLAINT_BOX = "complaint_box"
    IN_PERSON = "in_person"
    EMAIL = "email"
    WEB_FORM = "web_form"
    COMMUNITY_LEADER = "community_leader"
    STAFF_MANDATORY_REPORT = "staff_mandatory_report"
    INTERAGENCY_REFERRAL = "interagency_referral"


class ComplainantRole(StrEnum):
    SURVIVOR = "survivor"
    WITNESS = "witness"
    STAFF_MEMBER = "staff_member"
    OTHER = "other"
    ANONYMOUS = "anonymous"


class ComplaintCategory(StrEnum):
    """Triage result: where the complaint goes next."""

    SEA_ALLEGATION = "sea_allegation"
    OTHER_SENSITIVE = "other_sensitive"
    NON_SENSITIVE_FEEDBACK = "non_sensitive_feedback"


class AllegationType(StrEnum):
    """UN system-wide reporting categories."""

    SEXUAL_EXPLOITATION = "sexual_exploitation"
    SEXUAL_ABUSE = "sexual_abuse"
    OTHER = "other"
    UNKNOWN = "unknown"


class AllegationSubtype(StrEnum):
    """The finer types used by networks; each belongs to one allegation type."""

    TRANSACTIONAL_SEX = "transactional_sex"
    EXPLOITATIVE_RELATIONSHIP = "exploitative_relationship"
    SOLICITATION = "solicitation"
    RAPE = "rape"
    SEXUAL_ASSAULT = "sexual_assault"
    SEXUAL_ACTIVITY_WITH_CHILD = "sexual_activity_with_child"

    @property
    def allegation_type(self) -> AllegationType:
        if self in (
            AllegationSubtype.TRANSACTIONAL_SEX,
            AllegationSubtype.EXPLOITATIVE_RELATIONSHIP,
            AllegationSubtype.SOLICITATION,
        ):
            return AllegationType.SEXUAL_EXPLOITATION
        return AllegationType.SEXUAL_ABUSE


class PersonnelCategory(StrEnum):
    """Who the alleged perpetrator works for, in reporting terms."""

    UN_STAFF = "un_staff"
    UN_RELATED_PERSONNEL = "un_related_personnel"
    IMPLEMENTING_PARTNER = "implementing_partner_personnel"
    OTHER = "other"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    UNKNOWN = "unknown"


class AgeBand(StrEnum):
    """GBVIMS age bands."""

    CHILD_0_11 = "0-11"
    CHILD_12_17 = "12-17"
    ADULT = "18+"
    UNKNOWN_CHILD = "unknown_child"
    UNKNOWN = "unknown"

    @property
    def is_child(self) -> bool:
        return self in (AgeBand.CHILD_0_11, AgeBand.CHILD_12_17, AgeBand.UNKNOWN_CHILD)


class VictimCategory(StrEnum):
    """Reporting category derived from sex and age band."""

    WOMAN = "women"
    GIRL = "girls"
    MAN = "men"
    BOY = "boys"
    UNKNOWN_ADULT = "unknown_adult"
    UNKNOWN_CHILD = "unknown_child"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, sex: Sex, age_band: AgeBand) -> VictimCategory:
        """The reporting category of a victim of this sex and age band."""
        if age_band is AgeBand.UNKNOWN:
            return cls.UNKNOWN
        child = age_band.is_child
        if sex is Sex.FEMALE:
            return cls.GIRL if child else cls.WOMAN
        if sex is Sex.MALE:
            return cls.BOY if child else cls.MAN
        return cls.UNKNOWN_CHILD if child else cls.UNKNOWN_ADULT


class ConsentKind(StrEnum):
    """The survivor's separate consents."""

    ASSISTANCE_REFERRAL = "assistance_referral"
    IDENTITY_DISCLOSURE = "identity_disclosure"
    CONTACT = "contact"


class ConsentGiver(StrEnum):
    """Who gave consent: the survivor, or for a child a caregiver in the child's best interest."""

    SURVIVOR = "survivor"
    CAREGIVER_BEST_INTEREST = "caregiver_best_interest"


class ContactMethod(StrEnum):
    PHONE = "phone"
    SMS = "sms"
    IN_PERSON = "in_person"
    EMAIL = "email"
    THROUGH_TRUSTED_PERSON = "through_trusted_person"


class SharedItem(StrEnum):
    """What may travel with a custody step."""

    ALLEGATION_SUMMARY = "allegation_summary"
    NARRATIVE = "narrative"
    SURVIVOR_IDENTITY = "survivor_identity"
    COMPLAINANT_IDENTITY = "complainant_identity"
    CONTACT_DETAILS = "contact_details"
    ALLEGED_PERPETRATOR_DETAILS = "alleged_perpetrator_details"


IDENTIFYING_ITEMS = frozenset(
    {SharedItem.SURVIVOR_IDENTITY, SharedItem.CONTACT_DETAILS, SharedItem.NARRATIVE}
)
"""Items that identify the survivor: they follow the survivor's disclosure consent."""


class TransferReason(StrEnum):
    IMPLICATED_AGENCY_CUSTODY = "implicated_agency_custody"
    RECEIVED_BY_WRONG_AGENCY = "received_by_wrong_agency"
    AREA_OF_RESPONSIBILITY = "area_of_responsibility"
    CAPACITY = "capacity"
    OTHER = "other"


class InvestigationOutcome(StrEnum):
    SUBSTANTIATED = "substantiated"
    NOT_SUBSTANTIATED = "not_substantiated"
    CLOSED_OTHER_REASONS = "closed_other_reasons"


class FeedbackChannel(StrEnum):
    """How feedback reached the complainant."""

    RECEIPT_CODE = "receipt_code"
    PHONE = "phone"
    SMS = "sms"
    IN_PERSON = "in_person"
    EMAIL = "email"
    COMMUNITY_LEADER = "community_leader"


class ClosureReason(StrEnum):
    INVESTIGATION_CONCLUDED = "investigation_concluded"
    REFERRED_TO_AGENCY_PROCEDURE = "referred_to_agency_procedure"
    REFERRED_TO_FEEDBACK_MECHANISM = "referred_to_feedback_mechanism"
    DUPLICATE = "duplicate"
    INSUFFICIENT_INFORMATION = "insufficient_information"
    COMPLAINANT_WITHDREW = "complainant_withdrew"
    NOT_WITHIN_MANDATE = "not_within_mandate"
    OTHER = "other"


class ErasureReason(StrEnum):
    """Why a case's personal data was erased (crypto-shredded)."""

    RETENTION_EXPIRED = "retention_expired"
    """Network policy: kept as long as ``personal_data_retention`` after closure, no longer."""
    SURVIVOR_REQUEST = "survivor_request"
    COMPLAINANT_REQUEST = "complainant_request"
    NETWORK_DECISION = "network_decision"


class ServiceType(StrEnum):
    MEDICAL = "medical"
    PSYCHOSOCIAL = "psychosocial"
    LEGAL = "legal"
    MATERIAL = "material"
    SAFETY_PROTECTION = "safety_protection"
    LIVELIHOOD = "livelihood"
    EDUCATION = "education"
    CHILD_BORN_OF_SEA = "child_born_of_sea"


class ReferralStatus(StrEnum):
    REFERRED = "referred"
    ACCEPTED = "accepted"
    DECLINED_BY_PROVIDER = "declined_by_provider"
    DECLINED_BY_SURVIVOR = "declined_by_survivor"
    DELIVERED = "delivered"
    FOLLOWED_UP = "followed_up"


class FeedbackCategory(StrEnum):
    INFORMATION_REQUEST = "information_request"
    SERVICE_COMPLAINT = "service_complaint"
    SUGGESTION = "suggestion"
    APPRECIATION = "appreciation"
    OTHER = "other"


class Sector(StrEnum):
    """Humanitarian clusters, for coding non-sensitive feedback."""

    CAMP_MANAGEMENT = "camp_management"
    CASH = "cash"
    EDUCATION = "education"
    FOOD_SECURITY = "food_security"
    HEALTH = "health"
    LOGISTICS = "logistics"
    NUTRITION = "nutrition"
    PROTECTION = "protection"
    SHELTER = "shelter"
    WASH = "wash"
    LIVELIHOODS = "livelihoods"
    OTHER = "other"


class AgencyType(StrEnum):
    UN_AGENCY = "un_agency"
    INTERNATIONAL_NGO = "international_ngo"
    NATIONAL_NGO = "national_ngo"
    COMMUNITY_BASED_ORGANISATION = "community_based_organisation"
    OTHER = "other"


# ---------------------------------------------------------------- prevention work (issue #22)


class AudienceCategory(StrEnum):
    """Who a PSEA training reached (the categories networks report to the HC)."""

    STAFF = "staff"
    NON_STAFF = "non_staff"
    CONTRACTORS = "contractors"
    IMPLEMENTING_PARTNERS = "implementing_partners"
    SERVICE_PROVIDERS = "service_providers"
    COMMUNITY_VOLUNTEERS = "community_volunteers"


class TrainingTopic(StrEnum):
    SEA_BASICS = "sea_basics"
    REPORTING_OBLIGATIONS = "reporting_obligations"
    FOCAL_POINT_ROLE = "focal_point_role"
    SURVIVOR_CENTRED_REFERRAL = "survivor_centred_referral"


class AwarenessKind(StrEnum):
    SESSION = "session"
    RADIO = "radio"
    POSTERS = "posters"
    COMMUNITY_MEETING = "community_meeting"
    CONSULTATION = "consultation"


class CommunityAudience(StrEnum):
    """Who an awareness activity or consultation was held with."""

    WOMEN = "women"
    MEN = "men"
    GIRLS = "girls"
    BOYS = "boys"
    MIXED = "mixed"
    COMMUNITY_LEADERS = "community_leaders"
    PERSONS_WITH_DISABILITIES = "persons_with_disabilities"


class ReadinessRole(StrEnum):
    """The place of a person in an agency's focal-point network."""

    FOCAL_POINT = "focal_point"
    ALTERNATE = "alternate"


class MitigationMeasure(StrEnum):
    """Mitigation agreed for an SEA risk, as codes: no free text travels, so no name can."""

    FEMALE_STAFF_AT_DISTRIBUTIONS = "female_staff_at_distributions"
    SAFE_DISTRIBUTION_SITES = "safe_distribution_sites"
    COMPLAINT_CHANNELS = "complaint_channels"
    COMMUNITY_AWARENESS = "community_awareness"
    PERSONNEL_VETTING = "personnel_vetting"
    CODE_OF_CONDUCT_TRAINING = "code_of_conduct_training"
    PARTNER_CAPACITY_ASSESSMENT = "partner_capacity_assessment"
    SUPERVISION_AND_MONITORING = "supervision_and_monitoring"
    OTHER = "other"


class ActionStatus(StrEnum):
    """Status of a mitigation action or a work-plan activity."""

    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class WorkPlanActivityKind(StrEnum):
    TRAINING = "training"
    AWARENESS = "awareness"
    RISK_ASSESSMENT = "risk_assessment"
    FOCAL_POINT_NETWORK = "focal_point_network"
    REPORTING_CHANNELS = "reporting_channels"
    ASSISTANCE_PATHWAY = "assistance_pathway"
    COORDINATION = "coordination"
    REPORTING = "reporting"


class NotificationKind(StrEnum):
    """What a notification tells (issue #18): a kind and a count, never a case's content."""

    NEW_CASE = "new_case"
    URGENT_CASE = "urgent_case"
    """A complaint flagged at intake as an immediate safety risk: sent at any hour."""
    TRANSFER_RECEIVED = "transfer_received"
    ACTION_DUE_SOON = "action_due_soon"
    ACTION_OVERDUE = "action_overdue"
    INVESTIGATION_REFERRAL = "investigation_referral"
    ASSISTANCE_REFERRAL = "assistance_referral"
    COORDINATOR_DIGEST = "coordinator_digest"
    """The coordinator's daily count of overdue actions and undelivered notifications."""
    DIGEST = "digest"
    """A person's daily count of the notices they chose to receive as a digest."""
    WEBHOOK_DISABLED = "webhook_disabled"
    """An agency's webhook endpoint was disabled for failing (issue #19): told to the
    coordinators and to that agency's focal points, with the endpoint's id only."""


class NotificationChannel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class NotificationDelivery(StrEnum):
    """When a person is told: at once, or in one daily digest (urgent notices always at
    once)."""

    IMMEDIATE = "immediate"
    DIGEST = "digest"
