"""A Case: one complaint, from intake to closure, with every custody step recorded.

Public methods check the rules and then call a private decorated method that records the
fact. Decorated bodies only change state, so replaying old events never re-checks rules
that may have changed since.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral
from domain.errors import (
    ActionNotPermitted,
    AlreadyAcknowledged,
    AlreadyReferredForInvestigation,
    AssessmentLocked,
    AssistanceNotConsented,
    CaseClosed,
    CaseNotClosed,
    ConsentNotGiven,
    ContactNotConsented,
    FeedbackRequiredForClosure,
    IdentityDisclosureNotConsented,
    InvalidCommand,
    InvalidDuplicate,
    NotAFocalPoint,
    NotAnAllegation,
    NotAssessed,
    NotReferredForInvestigation,
    OutcomeAlreadyRecorded,
    OutcomeRequiredForClosure,
    RetentionNotDue,
    SameAgency,
    WrongInvestigatingEntity,
)
from domain.network import AREA_CODE, Network
from domain.personal_data import (
    ERASED,
    ComplainantText,
    DataSubject,
    PerpetratorText,
    PersonalText,
    PersonDetails,
    SurvivorText,
)
from domain.recording import RecordedAggregate, require_aware
from domain.vocabulary import (
    IDENTIFYING_ITEMS,
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
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
    VictimCategory,
)


class CaseStatus(StrEnum):
    """The reporting status of DOMAIN.md."""

    UNDER_PRELIMINARY_ASSESSMENT = "under_preliminary_assessment"
    REFERRED_PENDING_INVESTIGATION = "referred_pending_investigation"
    UNDER_INVESTIGATION = "under_investigation"
    SUBSTANTIATED = "substantiated"
    NOT_SUBSTANTIATED = "not_substantiated"
    CLOSED_OTHER_REASONS = "closed_other_reasons"


@dataclass(frozen=True)
class Allegation:
    """What an SEA allegation is about, as a focal point assessed it."""

    allegation_type: AllegationType
    subtype: AllegationSubtype | None
    child_involved: bool
    implicated_agency: str | None
    personnel_category: PersonnelCategory
    incident_date: date | None
    incident_area: str | None
    victim_sex: Sex
    victim_age_band: AgeBand
    incident_place_detail: SurvivorText | None = None
    alleged_perpetrator: PerpetratorText | None = None

    @property
    def victim_category(self) -> VictimCategory:
        return VictimCategory.of(self.victim_sex, self.victim_age_band)

    def check(self) -> None:
        """Refuse values that contradict each other."""
        if self.subtype is not None and self.subtype.allegation_type is not self.allegation_type:
            raise InvalidCommand(
                f"subtype {self.subtype} belongs to {self.subtype.allegation_type}, "
                f"not {self.allegation_type}"
            )
        child = self.victim_age_band.is_child or (
            self.subtype is AllegationSubtype.SEXUAL_ACTIVITY_WITH_CHILD
        )
        if child and not self.child_involved:
            raise InvalidCommand("the victim's age band or the subtype says a child is involved")
        if self.incident_area is not None and not AREA_CODE.fullmatch(self.incident_area):
            raise InvalidCommand(f"incident area {self.incident_area!r} is not an area code")


@dataclass(frozen=True)
class Assessment:
    category: ComplaintCategory
    allegation: Allegation | None
    assessed_at: datetime


@dataclass(frozen=True)
class Consent:
    kind: ConsentKind
    given: bool
    given_by: ConsentGiver | None
    contact_methods: tuple[ContactMethod, ...]
    recorded_at: datetime


@dataclass(frozen=True)
class Investigation:
    agency: str
    entity: str
    shared: tuple[SharedItem, ...]
    referred_at: datetime
    acknowledged_at: datetime | None = None
    outcome: InvestigationOutcome | None = None
    outcome_at: datetime | None = None

    @property
    def identity_shared(self) -> bool:
        return bool(IDENTIFYING_ITEMS.intersection(self.shared))


@dataclass(frozen=True)
class Closure:
    reason: ClosureReason
    closed_at: datetime
    no_outcome_reason: str | None
    no_feedback_reason: str | None


class Case(RecordedAggregate):
    """One complaint, whatever agency it reached first."""

    class Received(Aggregate.Created):
        actor: Actor
        received_at: datetime
        channel: Channel
        complainant_role: ComplainantRole
        immediate_safety_risk: bool
        narrative: SurvivorText
        complainant: Annotated[PersonDetails | None, DataSubject.COMPLAINANT]
        survivor: Annotated[PersonDetails | None, DataSubject.SURVIVOR]

    class Assessed(Aggregate.Event):
        actor: Actor
        category: ComplaintCategory
        allegation: Allegation | None

    class FocalPointsAssigned(Aggregate.Event):
        actor: Actor
        focal_points: tuple[str, ...]

    class Transferred(Aggregate.Event):
        actor: Actor
        from_agency: str
        to_agency: str
        reason: TransferReason
        shared: tuple[SharedItem, ...]
        note: PersonalText | None

    class ConsentGiven(Aggregate.Event):
        actor: Actor
        kind: ConsentKind
        given_by: ConsentGiver
        contact_methods: tuple[ContactMethod, ...]

    class ConsentWithdrawn(Aggregate.Event):
        actor: Actor
        kind: ConsentKind

    class AssistanceReferred(Aggregate.Event):
        actor: Actor
        referral_id: UUID
        service_type: ServiceType
        provider: str

    class ReferredForInvestigation(Aggregate.Event):
        """Version 2 records what was shared; version 1 recorded only ``identity_shared``."""

        class_version = 2

        actor: Actor
        agency: str
        entity: str
        shared: tuple[SharedItem, ...]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            shared = [SharedItem.ALLEGATION_SUMMARY.value]
            if state.pop("identity_shared"):
                shared.append(SharedItem.SURVIVOR_IDENTITY.value)
            state["shared"] = shared

    class InvestigationAcknowledged(Aggregate.Event):
        actor: Actor

    class InvestigationOutcomeRecorded(Aggregate.Event):
        actor: Actor
        outcome: InvestigationOutcome

    class FeedbackGiven(Aggregate.Event):
        actor: Actor
        message: ComplainantText
        channel: FeedbackChannel

    class MarkedAsDuplicate(Aggregate.Event):
        actor: Actor
        original_case_id: UUID

    class Closed(Aggregate.Event):
        actor: Actor
        reason: ClosureReason
        no_outcome_reason: PersonalText | None
        no_feedback_reason: PersonalText | None

    class PersonalDataErased(Aggregate.Event):
        """The data keys of these people's personal data in the case (and in ``records``, the
        case's other records: referrals, auditors' grants, forwarded feedback) were destroyed:
        their values can no longer be read by anyone, in any copy of the log."""

        actor: Actor
        subjects: tuple[DataSubject, ...]
        reason: ErasureReason
        records: tuple[UUID, ...]

    class Reopened(Aggregate.Event):
        actor: Actor
        reason: PersonalText

    # --- intake ---

    @classmethod
    def receive(
        cls,
        *,
        actor: Actor,
        received_at: datetime,
        channel: Channel,
        complainant_role: ComplainantRole,
        immediate_safety_risk: bool,
        narrative: str,
        complainant: PersonDetails | None,
        survivor: PersonDetails | None,
        network: Network,
        at: datetime,
    ) -> Case:
        """Record a complaint through any entry point; the receiving agency holds it."""
        network.agency(actor.agency)
        require_aware("received_at", received_at)
        require_aware("at", at)
        if not narrative.strip():
            raise InvalidCommand("a complaint needs what was said (the narrative)")
        network.policy.check_received_at(received_at, at)
        if complainant_role is ComplainantRole.ANONYMOUS and complainant is not None:
            raise InvalidCommand("an anonymous complaint carries no complainant details")
        return cls(
            actor=actor,
            received_at=received_at,
            channel=channel,
            complainant_role=complainant_role,
            immediate_safety_risk=immediate_safety_risk,
            narrative=narrative,
            complainant=complainant,
            survivor=survivor,
            timestamp=at,
        )

    @event(Received)
    def __init__(
        self,
        *,
        actor: Actor,
        received_at: datetime,
        channel: Channel,
        complainant_role: ComplainantRole,
        immediate_safety_risk: bool,
        narrative: str,
        complainant: PersonDetails | None,
        survivor: PersonDetails | None,
        timestamp: datetime,
    ) -> None:
        self.received_at = received_at
        self.recorded_at = timestamp
        self.channel = channel
        self.receiving_agency = actor.agency
        self.custodian = actor.agency
        self.custody_shared: tuple[SharedItem, ...] | None = None
        """What the agency holding the case was given of it: None for the agency that received
        it, else what the last transfer shared."""
        self.focal_points: tuple[str, ...] = ()
        self.complainant_role = complainant_role
        self.immediate_safety_risk = immediate_safety_risk
        self.narrative = narrative
        self.complainant = complainant
        self.survivor = survivor
        self.assessment: Assessment | None = None
        self.consents: dict[ConsentKind, Consent] = {}
        self.assistance_referrals: tuple[UUID, ...] = ()
        self.investigation: Investigation | None = None
        self.feedback_given_at: tuple[datetime, ...] = ()
        self.duplicate_of: UUID | None = None
        self.closure: Closure | None = None
        self.reopened_count = 0
        self.erased_subjects: frozenset[DataSubject] = frozenset()

    # --- derived state ---

    @property
    def is_closed(self) -> bool:
        return self.closure is not None

    @property
    def is_sea_allegation(self) -> bool:
        return (
            self.assessment is not None
            and self.assessment.category is ComplaintCategory.SEA_ALLEGATION
        )

    @property
    def status(self) -> CaseStatus:
        """The reporting status of DOMAIN.md."""
        inv = self.investigation
        if inv is not None and inv.outcome is not None:
            return {
                InvestigationOutcome.SUBSTANTIATED: CaseStatus.SUBSTANTIATED,
                InvestigationOutcome.NOT_SUBSTANTIATED: CaseStatus.NOT_SUBSTANTIATED,
                InvestigationOutcome.CLOSED_OTHER_REASONS: CaseStatus.CLOSED_OTHER_REASONS,
            }[inv.outcome]
        if self.is_closed:
            return CaseStatus.CLOSED_OTHER_REASONS
        if inv is not None:
            if inv.acknowledged_at is not None:
                return CaseStatus.UNDER_INVESTIGATION
            return CaseStatus.REFERRED_PENDING_INVESTIGATION
        return CaseStatus.UNDER_PRELIMINARY_ASSESSMENT

    def has_consent(self, kind: ConsentKind) -> bool:
        consent = self.consents.get(kind)
        return consent is not None and consent.given

    # --- rules shared by commands ---

    def _require_open(self) -> None:
        if self.is_closed:
            raise CaseClosed(self.id)

    def _require_handler(self, actor: Actor) -> None:
        """Focal points of the custodian agency, or the network coordinator, handle a case."""
        if actor.role is Role.COORDINATOR:
            return
        if actor.role is Role.FOCAL_POINT and actor.agency == self.custodian:
            return
        raise ActionNotPermitted(
            f"only focal points of the agency holding case {self.id} or the coordinator "
            "may act on it"
        )

    def _require_consent_for(self, shared: tuple[SharedItem, ...]) -> None:
        identifying = set(IDENTIFYING_ITEMS)
        if self.complainant_role is ComplainantRole.SURVIVOR:
            identifying.add(SharedItem.COMPLAINANT_IDENTITY)
        if identifying.intersection(shared) and not self.has_consent(
            ConsentKind.IDENTITY_DISCLOSURE
        ):
            raise IdentityDisclosureNotConsented(
                f"case {self.id}: the survivor has not consented to disclosure of identifying "
                "information"
            )

    # --- assessment and custody ---

    def assess(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        category: ComplaintCategory,
        allegation: Allegation | None = None,
        at: datetime,
    ) -> None:
        """Triage: SEA allegation (with its details), other sensitive complaint, or feedback."""
        self._require_open()
        self._require_handler(actor)
        if self.investigation is not None:
            raise AssessmentLocked(f"case {self.id} is already referred for investigation")
        if category is ComplaintCategory.SEA_ALLEGATION:
            if allegation is None:
                raise InvalidCommand("an SEA allegation needs its type, victim and personnel")
            allegation.check()
            if allegation.incident_date is not None:
                network.policy.check_incident_date(allegation.incident_date, self.received_at)
            if allegation.implicated_agency is not None:
                network.agency(allegation.implicated_agency)
        elif allegation is not None:
            raise InvalidCommand(f"a {category} complaint carries no SEA allegation details")
        self._assessed(actor=actor, category=category, allegation=allegation, timestamp=at)

    def assign_focal_points(
        self, network: Network, /, *, actor: Actor, focal_points: tuple[str, ...], at: datetime
    ) -> None:
        """Hand the case to named focal points of the agency holding it."""
        self._require_open()
        self._require_handler(actor)
        if not focal_points:
            raise InvalidCommand("assign at least one focal point")
        appointed = network.agency(self.custodian).focal_points
        strangers = sorted(set(focal_points) - appointed)
        if strangers:
            raise NotAFocalPoint(f"{strangers} are not focal points of {self.custodian!r}")
        self._focal_points_assigned(
            actor=actor, focal_points=tuple(dict.fromkeys(focal_points)), timestamp=at
        )

    def transfer(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        to_agency: str,
        reason: TransferReason,
        shared: tuple[SharedItem, ...],
        note: str | None = None,
        at: datetime,
    ) -> None:
        """Hand custody to another agency, recording why and what was shared."""
        self._require_open()
        self._require_handler(actor)
        network.agency(to_agency)
        if to_agency == self.custodian:
            raise SameAgency(f"case {self.id} is already held by {to_agency!r}")
        self._require_consent_for(shared)
        self._transferred(
            actor=actor,
            from_agency=self.custodian,
            to_agency=to_agency,
            reason=reason,
            shared=tuple(dict.fromkeys(shared)),
            note=note,
            timestamp=at,
        )

    # --- consents ---

    def give_consent(
        self,
        *,
        actor: Actor,
        kind: ConsentKind,
        given_by: ConsentGiver,
        contact_methods: tuple[ContactMethod, ...] = (),
        at: datetime,
    ) -> None:
        """Record the survivor's informed consent (for contact: how they may be contacted)."""
        self._require_open()
        self._require_handler(actor)
        if kind is ConsentKind.CONTACT and not contact_methods:
            raise InvalidCommand("consent to be contacted says how (at least one method)")
        if kind is not ConsentKind.CONTACT and contact_methods:
            raise InvalidCommand(f"contact methods belong to contact consent, not {kind}")
        self._consent_given(
            actor=actor,
            kind=kind,
            given_by=given_by,
            contact_methods=tuple(dict.fromkeys(contact_methods)),
            timestamp=at,
        )

    def withdraw_consent(self, *, actor: Actor, kind: ConsentKind, at: datetime) -> None:
        """Record that the survivor withdrew a consent."""
        self._require_open()
        self._require_handler(actor)
        if not self.has_consent(kind):
            raise ConsentNotGiven(f"case {self.id} has no {kind} consent to withdraw")
        self._consent_withdrawn(actor=actor, kind=kind, timestamp=at)

    # --- referrals ---

    def refer_for_assistance(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        service_type: ServiceType,
        provider: str,
        area: str,
        share_contact: bool = False,
        at: datetime,
    ) -> AssistanceReferral:
        """Refer the survivor to one service; only with the survivor's assistance consent."""
        self._require_open()
        self._require_handler(actor)
        if not self.has_consent(ConsentKind.ASSISTANCE_REFERRAL):
            raise AssistanceNotConsented(
                f"case {self.id}: the survivor has not consented to an assistance referral"
            )
        if share_contact and not self.has_consent(ConsentKind.CONTACT):
            raise ContactNotConsented(
                f"case {self.id}: the survivor has not consented to be contacted"
            )
        network.provider_offering(provider, service_type)
        if not AREA_CODE.fullmatch(area):
            raise InvalidCommand(f"area {area!r} is not an area code")
        referral = AssistanceReferral.make(
            actor=actor,
            case_id=self.id,
            service_type=service_type,
            provider=provider,
            area=area,
            contact_shared=share_contact,
            at=at,
        )
        self._assistance_referred(
            actor=actor,
            referral_id=referral.id,
            service_type=service_type,
            provider=provider,
            timestamp=at,
        )
        return referral

    def refer_for_investigation(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        entity: str,
        shared: tuple[SharedItem, ...],
        at: datetime,
    ) -> None:
        """Refer the allegation to the implicated agency's investigating entity.

        Identifying items go only with the survivor's consent to disclosure.
        """
        self._require_open()
        self._require_handler(actor)
        if not self.is_sea_allegation:
            raise NotAnAllegation(
                f"case {self.id} must be assessed as an SEA allegation before referral"
            )
        assert self.assessment is not None and self.assessment.allegation is not None
        agency = self.assessment.allegation.implicated_agency
        if agency is None:
            raise NotAnAllegation(
                f"case {self.id}: the implicated agency must be known before referral"
            )
        if self.investigation is not None:
            raise AlreadyReferredForInvestigation(f"case {self.id} is already referred")
        expected = network.investigating_entity_of(agency)
        if entity != expected:
            raise WrongInvestigatingEntity(
                f"case {self.id} implicates {agency!r}: refer it to {expected!r}, not {entity!r}"
            )
        if SharedItem.ALLEGATION_SUMMARY not in shared:
            raise InvalidCommand("an investigation referral shares at least the allegation")
        self._require_consent_for(shared)
        self._referred_for_investigation(
            actor=actor,
            agency=agency,
            entity=entity,
            shared=tuple(dict.fromkeys(shared)),
            timestamp=at,
        )

    def _require_investigator(self, actor: Actor) -> Investigation:
        if self.investigation is None:
            raise NotReferredForInvestigation(f"case {self.id} is not referred for investigation")
        if actor.role is Role.COORDINATOR:
            return self.investigation
        if actor.role is Role.INVESTIGATING_ENTITY and actor.agency == self.investigation.agency:
            return self.investigation
        raise ActionNotPermitted(
            f"only the investigating entity of {self.investigation.agency!r} reports on case "
            f"{self.id}'s investigation"
        )

    def acknowledge_investigation(self, *, actor: Actor, at: datetime) -> None:
        """The investigating entity confirms it received the referral."""
        self._require_open()
        investigation = self._require_investigator(actor)
        if investigation.acknowledged_at is not None:
            raise AlreadyAcknowledged(f"case {self.id}'s referral is already acknowledged")
        self._investigation_acknowledged(actor=actor, timestamp=at)

    def record_investigation_outcome(
        self, *, actor: Actor, outcome: InvestigationOutcome, at: datetime
    ) -> None:
        """The investigating entity reports the outcome (receipt is implied if not yet acked)."""
        self._require_open()
        investigation = self._require_investigator(actor)
        if investigation.outcome is not None:
            raise OutcomeAlreadyRecorded(f"case {self.id} already has an outcome")
        self._investigation_outcome_recorded(actor=actor, outcome=outcome, timestamp=at)

    # --- follow-up ---

    def give_feedback(
        self, *, actor: Actor, message: str, channel: FeedbackChannel, at: datetime
    ) -> None:
        """Record feedback given to the complainant (anonymous ones: through the receipt code)."""
        self._require_open()
        self._require_handler(actor)
        if not message.strip():
            raise InvalidCommand("feedback needs a message")
        self._feedback_given(actor=actor, message=message, channel=channel, timestamp=at)

    def mark_as_duplicate_of(self, *, actor: Actor, original: Case, at: datetime) -> None:
        """Link this report to the case of the same incident, so the incident counts once."""
        self._require_open()
        self._require_handler(actor)
        if original.id == self.id:
            raise InvalidDuplicate("a case cannot duplicate itself")
        if self.duplicate_of is not None:
            raise InvalidDuplicate(f"case {self.id} is already a duplicate of {self.duplicate_of}")
        if original.duplicate_of is not None:
            raise InvalidDuplicate(
                f"case {original.id} is itself a duplicate; link to the case it duplicates"
            )
        self._marked_as_duplicate(actor=actor, original_case_id=original.id, timestamp=at)

    def close(
        self,
        *,
        actor: Actor,
        reason: ClosureReason,
        no_outcome_reason: str | None = None,
        no_feedback_reason: str | None = None,
        at: datetime,
    ) -> None:
        """Close with a reason. An SEA case needs an outcome or a reason why none, and feedback
        given or a reason why not."""
        self._require_open()
        self._require_handler(actor)
        if reason is ClosureReason.DUPLICATE and self.duplicate_of is None:
            raise InvalidCommand(f"case {self.id} is not linked as a duplicate")
        if self.assessment is None and self.duplicate_of is None:
            raise NotAssessed(f"case {self.id} must be assessed (or linked as a duplicate) first")
        if self.is_sea_allegation and self.duplicate_of is None:
            has_outcome = self.investigation is not None and self.investigation.outcome is not None
            if not has_outcome and not (no_outcome_reason or "").strip():
                raise OutcomeRequiredForClosure(
                    f"case {self.id} has no investigation outcome: record one or say why not"
                )
            if not self.feedback_given_at and not (no_feedback_reason or "").strip():
                raise FeedbackRequiredForClosure(
                    f"case {self.id}: give the complainant feedback or say why it was not given"
                )
        self._closed(
            actor=actor,
            reason=reason,
            no_outcome_reason=no_outcome_reason,
            no_feedback_reason=no_feedback_reason,
            timestamp=at,
        )

    def erase_personal_data(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        subjects: tuple[DataSubject, ...],
        reason: ErasureReason,
        records: tuple[UUID, ...],
        at: datetime,
    ) -> None:
        """Erase these people's personal data from the case and its ``records``, for good.

        By retention (the coordinator, or the retention job acting for the network): only
        once the case has been closed for the policy's ``personal_data_retention``. On a
        request or a decision: the coordinator or the holder's focal points, at any time.
        The case's non-personal history stays as it is.
        """
        if not subjects:
            raise InvalidCommand("an erasure names whose personal data it erases")
        if reason is ErasureReason.RETENTION_EXPIRED:
            if actor.role is not Role.COORDINATOR:
                raise ActionNotPermitted("retention is applied for the network by the coordinator")
            if self.closure is None:
                raise RetentionNotDue(f"case {self.id} is open: its personal data is kept")
            due = self.closure.closed_at + network.policy.personal_data_retention
            if at < due:
                raise RetentionNotDue(
                    f"case {self.id}: personal data is kept until {due.isoformat()}"
                )
        else:
            self._require_handler(actor)
        erased = set(subjects)
        if self.complainant_role is ComplainantRole.SURVIVOR and erased & {
            DataSubject.SURVIVOR,
            DataSubject.COMPLAINANT,
        }:
            # The survivor who complained is one person: their data goes whichever way named.
            erased |= {DataSubject.SURVIVOR, DataSubject.COMPLAINANT}
        self._personal_data_erased(
            actor=actor,
            subjects=tuple(sorted(erased)),
            reason=reason,
            records=tuple(dict.fromkeys(records)),
            timestamp=at,
        )

    def reopen(self, *, actor: Actor, reason: str, at: datetime) -> None:
        """Reopen a closed case, saying why."""
        if not self.is_closed:
            raise CaseNotClosed(f"case {self.id} is not closed")
        self._require_handler(actor)
        if not reason.strip():
            raise InvalidCommand("reopening needs a reason")
        self._reopened(actor=actor, reason=reason, timestamp=at)

    # --- recorded facts ---

    @event(Assessed)
    def _assessed(
        self,
        *,
        actor: Actor,
        category: ComplaintCategory,
        allegation: Allegation | None,
        timestamp: datetime,
    ) -> None:
        self.assessment = Assessment(
            category=category, allegation=allegation, assessed_at=timestamp
        )

    @event(FocalPointsAssigned)
    def _focal_points_assigned(
        self, *, actor: Actor, focal_points: tuple[str, ...], timestamp: datetime
    ) -> None:
        self.focal_points = focal_points

    @event(Transferred)
    def _transferred(
        self,
        *,
        actor: Actor,
        from_agency: str,
        to_agency: str,
        reason: TransferReason,
        shared: tuple[SharedItem, ...],
        note: str | None,
        timestamp: datetime,
    ) -> None:
        self.custodian = to_agency
        self.focal_points = ()
        self.custody_shared = None if to_agency == self.receiving_agency else shared

    @event(ConsentGiven)
    def _consent_given(
        self,
        *,
        actor: Actor,
        kind: ConsentKind,
        given_by: ConsentGiver,
        contact_methods: tuple[ContactMethod, ...],
        timestamp: datetime,
    ) -> None:
        self.consents = {
            **self.consents,
            kind: Consent(kind, True, given_by, contact_methods, timestamp),
        }

    @event(ConsentWithdrawn)
    def _consent_withdrawn(self, *, actor: Actor, kind: ConsentKind, timestamp: datetime) -> None:
        self.consents = {**self.consents, kind: Consent(kind, False, None, (), timestamp)}

    @event(AssistanceReferred)
    def _assistance_referred(
        self,
        *,
        actor: Actor,
        referral_id: UUID,
        service_type: ServiceType,
        provider: str,
        timestamp: datetime,
    ) -> None:
        self.assistance_referrals = (*self.assistance_referrals, referral_id)

    @event(ReferredForInvestigation)
    def _referred_for_investigation(
        self,
        *,
        actor: Actor,
        agency: str,
        entity: str,
        shared: tuple[SharedItem, ...],
        timestamp: datetime,
    ) -> None:
        self.investigation = Investigation(
            agency=agency, entity=entity, shared=shared, referred_at=timestamp
        )

    @event(InvestigationAcknowledged)
    def _investigation_acknowledged(self, *, actor: Actor, timestamp: datetime) -> None:
        assert self.investigation is not None
        self.investigation = replace(self.investigation, acknowledged_at=timestamp)

    @event(InvestigationOutcomeRecorded)
    def _investigation_outcome_recorded(
        self, *, actor: Actor, outcome: InvestigationOutcome, timestamp: datetime
    ) -> None:
        assert self.investigation is not None
        self.investigation = replace(
            self.investigation,
            outcome=outcome,
            outcome_at=timestamp,
            acknowledged_at=self.investigation.acknowledged_at or timestamp,
        )

    @event(FeedbackGiven)
    def _feedback_given(
        self, *, actor: Actor, message: str, channel: FeedbackChannel, timestamp: datetime
    ) -> None:
        self.feedback_given_at = (*self.feedback_given_at, timestamp)

    @event(MarkedAsDuplicate)
    def _marked_as_duplicate(
        self, *, actor: Actor, original_case_id: UUID, timestamp: datetime
    ) -> None:
        self.duplicate_of = original_case_id

    @event(Closed)
    def _closed(
        self,
        *,
        actor: Actor,
        reason: ClosureReason,
        no_outcome_reason: str | None,
        no_feedback_reason: str | None,
        timestamp: datetime,
    ) -> None:
        self.closure = Closure(reason, timestamp, no_outcome_reason, no_feedback_reason)

    @event(PersonalDataErased)
    def _personal_data_erased(
        self,
        *,
        actor: Actor,
        subjects: tuple[DataSubject, ...],
        reason: ErasureReason,
        records: tuple[UUID, ...],
        timestamp: datetime,
    ) -> None:
        # What the keys protected can no longer be read; the state says so at once (an
        # aggregate already in memory must not keep showing what was erased).
        erased = set(subjects)
        if DataSubject.SURVIVOR in erased:
            self.narrative = ERASED
            self.survivor = None if self.survivor is None else self.survivor.erased()
        if DataSubject.COMPLAINANT in erased and self.complainant is not None:
            self.complainant = self.complainant.erased()
        allegation = None if self.assessment is None else self.assessment.allegation
        if allegation is not None:
            place, who = allegation.incident_place_detail, allegation.alleged_perpetrator
            if DataSubject.SURVIVOR in erased and place is not None:
                place = ERASED
            if DataSubject.ALLEGED_PERPETRATOR in erased and who is not None:
                who = ERASED
            assert self.assessment is not None
            self.assessment = replace(
                self.assessment,
                allegation=replace(
                    allegation, incident_place_detail=place, alleged_perpetrator=who
                ),
            )
        if DataSubject.CASE in erased and self.closure is not None:
            closure = self.closure
            self.closure = replace(
                closure,
                no_outcome_reason=None if closure.no_outcome_reason is None else ERASED,
                no_feedback_reason=None if closure.no_feedback_reason is None else ERASED,
            )
        self.erased_subjects = self.erased_subjects | frozenset(subjects)

    @event(Reopened)
    def _reopened(self, *, actor: Actor, reason: str, timestamp: datetime) -> None:
        self.closure = None
        self.reopened_count += 1
