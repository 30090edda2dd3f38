"""The closed sets of values that messages carry, as ``Literal`` types.

They repeat the values of the domain's enumerations on purpose: the published language must
not depend on the domain package, and a unit test checks that the two never drift apart.
A value is never renamed or removed from a published set. Adding one is a contract change:
consumers that decode with these types refuse a value they do not know, so they must be
upgraded before a publisher sends it.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

Role: TypeAlias = Literal[
    "intake_operator",
    "focal_point",
    "coordinator",
    "investigating_entity",
    "service_provider",
    "auditor",
    "statistics_reader",
    "intake_service",
]
"""The role a user acted in."""

CaseStatus: TypeAlias = Literal[
    "under_preliminary_assessment",
    "referred_pending_investigation",
    "under_investigation",
    "substantiated",
    "not_substantiated",
    "closed_other_reasons",
]
"""The reporting status of a case (UN system-wide SEA reporting)."""

Channel: TypeAlias = Literal[
    "hotline",
    "sms_messaging",
    "complaint_box",
    "in_person",
    "email",
    "web_form",
    "community_leader",
    "staff_mandatory_report",
    "interagency_referral",
]
"""The community entry point a complaint or feedback came through."""

ComplainantRole: TypeAlias = Literal["survivor", "witness", "staff_member", "other", "anonymous"]
"""Who made the complaint, relative to the incident."""

ComplaintCategory: TypeAlias = Literal[
    "sea_allegation", "other_sensitive", "non_sensitive_feedback"
]
"""Triage result: where the complaint goes next."""

AllegationType: TypeAlias = Literal["sexual_exploitation", "sexual_abuse", "other", "unknown"]
"""UN system-wide reporting category of an SEA allegation."""

AllegationSubtype: TypeAlias = Literal[
    "transactional_sex",
    "exploitative_relationship",
    "solicitation",
    "rape",
    "sexual_assault",
    "sexual_activity_with_child",
]
"""The finer allegation types used by networks."""

PersonnelCategory: TypeAlias = Literal[
    "un_staff", "un_related_personnel", "implementing_partner_personnel", "other"
]
"""Who the alleged perpetrator works for, in reporting terms."""

Sex: TypeAlias = Literal["female", "male", "unknown"]
"""Sex of a victim, as recorded."""

AgeBand: TypeAlias = Literal["0-11", "12-17", "18+", "unknown_child", "unknown"]
"""GBVIMS age band of a victim."""

VictimCategory: TypeAlias = Literal[
    "women", "girls", "men", "boys", "unknown_adult", "unknown_child", "unknown"
]
"""Reporting category of a victim, derived from sex and age band."""

ConsentKind: TypeAlias = Literal["assistance_referral", "identity_disclosure", "contact"]
"""The survivor's separate consents."""

ConsentGiver: TypeAlias = Literal["survivor", "caregiver_best_interest"]
"""Who gave a consent: the survivor, or a caregiver in a child's best interest."""

ContactMethod: TypeAlias = Literal["phone", "sms", "in_person", "email", "through_trusted_person"]
"""How the survivor consented to be contacted."""

SharedItem: TypeAlias = Literal[
    "allegation_summary",
    "narrative",
    "survivor_identity",
    "complainant_identity",
    "contact_details",
    "alleged_perpetrator_details",
]
"""What travelled with a custody step (names of items, never their content)."""

TransferReason: TypeAlias = Literal[
    "implicated_agency_custody",
    "received_by_wrong_agency",
    "area_of_responsibility",
    "capacity",
    "other",
]
"""Why custody of a case moved to another agency."""

InvestigationOutcome: TypeAlias = Literal[
    "substantiated", "not_substantiated", "closed_other_reasons"
]
"""Outcome reported by an investigating entity."""

FeedbackChannel: TypeAlias = Literal[
    "receipt_code", "phone", "sms", "in_person", "email", "community_leader"
]
"""How feedback reached the complainant."""

ClosureReason: TypeAlias = Literal[
    "investigation_concluded",
    "referred_to_agency_procedure",
    "referred_to_feedback_mechanism",
    "duplicate",
    "insufficient_information",
    "complainant_withdrew",
    "not_within_mandate",
    "other",
]
"""Why a case was closed."""

ErasureReason: TypeAlias = Literal[
    "retention_expired", "survivor_request", "complainant_request", "network_decision"
]
"""Why personal data was erased (crypto-shredded)."""

DataSubject: TypeAlias = Literal["complainant", "survivor", "alleged_perpetrator", "case"]
"""Whose personal data: the complainant, the survivor, the alleged perpetrator, or free text
staff wrote about the case."""

ServiceType: TypeAlias = Literal[
    "medical",
    "psychosocial",
    "legal",
    "material",
    "safety_protection",
    "livelihood",
    "education",
    "child_born_of_sea",
]
"""The kind of survivor assistance a referral is for."""

ReferralStatus: TypeAlias = Literal[
    "referred",
    "accepted",
    "declined_by_provider",
    "declined_by_survivor",
    "delivered",
    "followed_up",
]
"""Where an assistance referral stands."""

FeedbackCategory: TypeAlias = Literal[
    "information_request", "service_complaint", "suggestion", "appreciation", "other"
]
"""Type of non-sensitive community feedback."""

Sector: TypeAlias = Literal[
    "camp_management",
    "cash",
    "education",
    "food_security",
    "health",
    "logistics",
    "nutrition",
    "protection",
    "shelter",
    "wash",
    "livelihoods",
    "other",
]
"""Humanitarian sector (cluster) that non-sensitive feedback is about."""

AgencyType: TypeAlias = Literal[
    "un_agency", "international_ngo", "national_ngo", "community_based_organisation", "other"
]
"""Kind of member agency of the network."""


# ---------------------------------------------------------------- prevention work (issue #22)

AudienceCategory: TypeAlias = Literal[
    "staff",
    "non_staff",
    "contractors",
    "implementing_partners",
    "service_providers",
    "community_volunteers",
]
TrainingTopic: TypeAlias = Literal[
    "sea_basics", "reporting_obligations", "focal_point_role", "survivor_centred_referral"
]
AwarenessKind: TypeAlias = Literal[
    "session", "radio", "posters", "community_meeting", "consultation"
]
CommunityAudience: TypeAlias = Literal[
    "women", "men", "girls", "boys", "mixed", "community_leaders", "persons_with_disabilities"
]
ReadinessRole: TypeAlias = Literal["focal_point", "alternate"]
MitigationMeasure: TypeAlias = Literal[
    "female_staff_at_distributions",
    "safe_distribution_sites",
    "complaint_channels",
    "community_awareness",
    "personnel_vetting",
    "code_of_conduct_training",
    "partner_capacity_assessment",
    "supervision_and_monitoring",
    "other",
]
ActionStatus: TypeAlias = Literal["planned", "in_progress", "done", "cancelled"]
WorkPlanActivityKind: TypeAlias = Literal[
    "training",
    "awareness",
    "risk_assessment",
    "focal_point_network",
    "reporting_channels",
    "assistance_pathway",
    "coordination",
    "reporting",
]
NotificationKind: TypeAlias = Literal[
    "new_case",
    "urgent_case",
    "transfer_received",
    "action_due_soon",
    "action_overdue",
    "investigation_referral",
    "assistance_referral",
    "coordinator_digest",
    "digest",
    "webhook_disabled",
]
"""What a notification told (issue #18): a kind and a count, never a case's content."""

NotificationChannel: TypeAlias = Literal["email", "sms"]
"""How a person is reached."""

NotificationDelivery: TypeAlias = Literal["immediate", "digest"]
"""When a person is told: at once, or in one daily digest (urgent notices at once)."""
