"""Need-to-know: which cases a reader may see, and which of their fields.

DOMAIN.md's confidentiality rules, as functions of the reader (an ``Actor``: user, agency,
role) and the aggregate as it is now. Nothing here reads the store or the clock; the routes
load what is needed and ask.

- focal point: the cases its agency holds, every field;
- coordinator: every case; personal data only where network policy allows;
- investigating entity: cases referred for investigation to its agency; the allegation, and
  of the personal data only what the referral shared, identifying items only while the
  survivor's consent to disclosure stands;
- service provider: only its assistance referrals; the survivor's contact details only if the
  referral shared them, only while the survivor's consent to contact stands, and only the
  channels consented to;
- auditor: every case and history, personal data redacted, unless the coordinator granted
  that auditor access to that case's personal data (``AuditGrants``: the route passes the
  case's grantees in);
- intake operator and statistics reader: no case at all.

A case the reader may not see is answered exactly like a case that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.actors import Actor, Role
from domain.assistance import OPEN_STATUSES, AssistanceReferral
from domain.case import Case
from domain.feedback import Feedback
from domain.policy import NetworkPolicy
from domain.vocabulary import (
    IDENTIFYING_ITEMS,
    ComplainantRole,
    ConsentKind,
    ContactMethod,
    SharedItem,
)

PERSON_FIELDS = ("name", "phone", "email", "address")

CASE_PERSONAL_FIELDS: tuple[str, ...] = (
    "narrative",
    *(f"complainant.{f}" for f in PERSON_FIELDS),
    *(f"survivor.{f}" for f in PERSON_FIELDS),
    "allegation.incident_place_detail",
    "allegation.alleged_perpetrator",
    "closure.no_outcome_reason",
    "closure.no_feedback_reason",
)
"""Every personal-data field of a case as the API shows it."""

INVESTIGATOR_WITHHELD = ("consents", "assistance_referrals", "feedback_given_at", "focal_points")
"""Case facts an investigating entity has no need to know."""

SHARED_FIELDS: dict[SharedItem, tuple[str, ...]] = {
    SharedItem.ALLEGATION_SUMMARY: (),
    SharedItem.NARRATIVE: ("narrative",),
    SharedItem.SURVIVOR_IDENTITY: ("survivor.name",),
    SharedItem.CONTACT_DETAILS: ("survivor.phone", "survivor.email", "survivor.address"),
    SharedItem.COMPLAINANT_IDENTITY: tuple(f"complainant.{f}" for f in PERSON_FIELDS),
    SharedItem.ALLEGED_PERPETRATOR_DETAILS: (
        "allegation.alleged_perpetrator",
        "allegation.incident_place_detail",
    ),
}
"""What each item an investigation referral shares opens to the investigating entity."""

CONTACT_FIELDS: dict[ContactMethod, tuple[str, ...]] = {
    ContactMethod.PHONE: ("phone",),
    ContactMethod.SMS: ("phone",),
    ContactMethod.EMAIL: ("email",),
    ContactMethod.IN_PERSON: ("address",),
    ContactMethod.THROUGH_TRUSTED_PERSON: (),
}
"""Which of the survivor's contact details each consented contact method needs."""

READ_PRIORITY = (
    Role.FOCAL_POINT,
    Role.COORDINATOR,
    Role.INVESTIGATING_ENTITY,
    Role.SERVICE_PROVIDER,
    Role.AUDITOR,
)
"""A user holding several roles reads a case in the first of these that lets them see it."""


@dataclass(frozen=True)
class CaseAccess:
    """How one reader sees one case."""

    reader: Actor
    personal: frozenset[str]
    """Personal fields (of ``CASE_PERSONAL_FIELDS``) the reader may be shown."""
    withheld: frozenset[str] = frozenset()
    """Non-personal parts of the case the reader has no need to know."""

    @property
    def full_history(self) -> bool:
        return self.personal == frozenset(CASE_PERSONAL_FIELDS)


def _identifying_allowed(case: Case) -> bool:
    return case.has_consent(ConsentKind.IDENTITY_DISCLOSURE)


def shared_fields(case: Case, shared: Iterable[SharedItem]) -> frozenset[str]:
    """The personal fields that sharing ``shared`` opens, identifying ones only while the
    survivor's consent to disclosure stands (the complainant's identity too, when the
    complainant is the survivor)."""
    consented = _identifying_allowed(case)
    opened: set[str] = set()
    for item in shared:
        if item in IDENTIFYING_ITEMS and not consented:
            continue
        opened.update(SHARED_FIELDS.get(item, ()))
    if not consented:
        opened.difference_update(f"survivor.{f}" for f in PERSON_FIELDS)
        if case.complainant_role is ComplainantRole.SURVIVOR:
            opened.difference_update(f"complainant.{f}" for f in PERSON_FIELDS)
    return frozenset(opened)


def holder_fields(case: Case) -> frozenset[str]:
    """The personal fields the focal points of the agency holding ``case`` see: all of them
    for the agency that received it; for an agency it was handed to, what the transfer
    shared."""
    if case.custody_shared is None:
        return frozenset(CASE_PERSONAL_FIELDS)
    return shared_fields(case, case.custody_shared)


def case_access(
    reader: Actor,
    case: Case,
    policy: NetworkPolicy,
    *,
    audit_grantees: frozenset[str] = frozenset(),
) -> CaseAccess | None:
    """How ``reader`` may see ``case``; ``None``: not at all (answer as if it did not exist).

    ``audit_grantees``: the auditors the coordinator granted this case's personal data."""
    role = reader.role
    if role is Role.FOCAL_POINT and reader.agency == case.custodian:
        return CaseAccess(reader, holder_fields(case))
    if role is Role.COORDINATOR:
        personal = CASE_PERSONAL_FIELDS if policy.coordinator_sees_personal_data else ()
        return CaseAccess(reader, frozenset(personal))
    if role is Role.AUDITOR:
        granted = reader.user in audit_grantees
        return CaseAccess(reader, frozenset(CASE_PERSONAL_FIELDS if granted else ()))
    inv = case.investigation
    if role is Role.INVESTIGATING_ENTITY and inv is not None and inv.agency == reader.agency:
        return CaseAccess(reader, shared_fields(case, inv.shared), frozenset(INVESTIGATOR_WITHHELD))
    return None


def best_case_access(
    user: str,
    agency: str,
    roles: Iterable[Role],
    case: Case,
    policy: NetworkPolicy,
    *,
    audit_grantees: frozenset[str] = frozenset(),
) -> CaseAccess | None:
    """The view of the first of the user's roles (in ``READ_PRIORITY``) that sees the case."""
    held = set(roles)
    for role in READ_PRIORITY:
        if role in held:
            access = case_access(
                Actor(user, agency, role), case, policy, audit_grantees=audit_grantees
            )
            if access is not None:
                return access
    return None


def can_see_referral(reader: Actor, referral: AssistanceReferral, case: Case) -> bool:
    """The provider it was made to, the focal points of the agency holding the case, the
    coordinator and auditors."""
    if reader.role is Role.SERVICE_PROVIDER:
        return reader.agency == referral.provider
    if reader.role is Role.FOCAL_POINT:
        return reader.agency == case.custodian
    return reader.role in (Role.COORDINATOR, Role.AUDITOR)


def referral_contact_fields(
    reader: Actor, referral: AssistanceReferral, case: Case
) -> tuple[str, ...]:
    """The survivor's contact details (``survivor.*``) the reader may see with a referral.

    The focal points holding the case see what they see of the case itself: all of it for
    the agency that received the complaint, and for an agency the case was transferred to
    only what the transfer shared (a referral is no way round the transfer's choice)."""
    if reader.role is Role.FOCAL_POINT and reader.agency == case.custodian:
        opened = holder_fields(case)
        return tuple(f"survivor.{f}" for f in PERSON_FIELDS if f"survivor.{f}" in opened)
    if reader.role is not Role.SERVICE_PROVIDER or reader.agency != referral.provider:
        return ()
    consent = case.consents.get(ConsentKind.CONTACT)
    if (
        not referral.contact_shared
        or consent is None
        or not consent.given
        or referral.status not in OPEN_STATUSES
        or not case.has_consent(ConsentKind.ASSISTANCE_REFERRAL)
    ):
        return ()
    fields = {"name"}
    for method in consent.contact_methods:
        fields.update(CONTACT_FIELDS[method])
    return tuple(f"survivor.{f}" for f in PERSON_FIELDS if f in fields)


def can_see_feedback(reader: Actor, feedback: Feedback) -> bool:
    """Community feedback: the concerned agency's focal points, the coordinator, auditors."""
    if reader.role is Role.FOCAL_POINT:
        return reader.agency == feedback.concerned_agency
    return reader.role in (Role.COORDINATOR, Role.AUDITOR)


def feedback_text_visible(reader: Actor, feedback: Feedback) -> bool:
    return reader.role is Role.FOCAL_POINT and reader.agency == feedback.concerned_agency
