"""A demo network and cases walked through varied workflow paths, by the real application.

Every fact goes through ``ComplaintMechanism``, so the domain's rules are checked exactly as
for real users. Time is simulated: each command gets its ``at``, from a clock that starts
months back and moves forward step by step. Personal data is synthetic and obviously so
(``Example`` family names, ``+999`` phone numbers, ``example.org`` addresses, ``[DEMO]`` texts).

``build_demo_network`` and ``walk_cases`` are public so that benchmarks can reuse them.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from domain.actors import Actor
from domain.case import Allegation
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    AgeBand,
    AgencyType,
    AllegationSubtype,
    AllegationType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from services.application.mechanism import ComplaintMechanism
from services.demo.network import (
    AGENCIES,
    AGENCY,
    AREAS,
    COORDINATOR,
    NETWORK_NAME,
    DemoAgency,
    build_demo_network,
    caseworker_actor,
    focal_point_actor,
    intake_operator_actor,
    investigator_actor,
)
from services.demo.prevention import walk_prevention
from services.demo.texts import (
    ALLEGATION_TEXT,
    FAMILY_NAMES,
    FEEDBACK_CHANNEL,
    FEMALE_NAMES,
    INTAKE_DELAY,
    ITEMS,
    MALE_NAMES,
    NON_SENSITIVE,
    OTHER_SENSITIVE_TEXT,
    PLACES,
    ROLES,
)

__all__ = [
    "AGENCIES",
    "COORDINATOR",
    "NETWORK_NAME",
    "build_demo_network",
    "caseworker_actor",
    "demo_start",
    "run_demo",
    "walk_cases",
]

T = TypeVar("T")

# ---------------------------------------------------------------------------------- paths

PATHS: dict[str, str] = {
    "sea_full": "SEA: assisted, investigated, feedback, closed",
    "sea_assistance_declined": "SEA: assistance declined, referred without identity",
    "sea_transferred": "SEA: transferred to another agency",
    "sea_child": "SEA: child survivor, caregiver best-interest consent",
    "anonymous": "SEA: anonymous, feedback through the receipt code",
    "other_sensitive": "Other sensitive: referred to the agency's procedure",
    "feedback_to_cfm": "Non-sensitive: forwarded to the CFM, answered",
    "duplicate": "Duplicate report linked and closed",
    "reopened": "Closed, reopened on new information",
    "left_open": "Left open at an earlier stage",
    "in_progress": "Still in progress (its next step is not due yet)",
}
"""Workflow paths a demo case can take, with a label for people."""

_WEIGHTS: dict[str, int] = {
    "sea_full": 18,
    "sea_assistance_declined": 8,
    "sea_transferred": 8,
    "sea_child": 8,
    "anonymous": 8,
    "other_sensitive": 10,
    "feedback_to_cfm": 18,
    "duplicate": 5,
    "reopened": 5,
    "left_open": 12,
}

DEMO_SPAN = timedelta(days=120)
"""Intake times of one walk spread over this span after ``start``."""

DEMO_RUN_ON = timedelta(days=90)
"""After the last intake, the simulated clock runs on this long and no further: a case whose
next step would come later is left where it is, still in progress, as recent cases are."""


@dataclass
class WalkResult:
    """What a walk recorded: each case with the path it took, and the other aggregates."""

    cases: dict[UUID, str] = field(default_factory=dict)
    referrals: list[UUID] = field(default_factory=list)
    feedback_items: list[UUID] = field(default_factory=list)

    @property
    def by_path(self) -> Counter[str]:
        return Counter(self.cases.values())


def walk_cases(
    app: ComplaintMechanism,
    n: int,
    rng: random.Random,
    start: datetime,
    progress: Callable[[str], None] | None = None,
) -> WalkResult:
    """Receive ``n`` complaints from ``start`` on and walk each through a workflow path.

    The first cases take every path once (so any walk of 10 or more shows them all), the
    rest are drawn with realistic weights. Simulated time stops at ``start + DEMO_SPAN +
    DEMO_RUN_ON``; a case not finished by then counts as ``in_progress``. ``progress`` is
    called with each case's path. The demo network must exist (``build_demo_network``).
    """
    walker = _Walker(app, rng, horizon=start + DEMO_SPAN + DEMO_RUN_ON)
    result = walker.result
    interval = DEMO_SPAN / max(n, 1)
    names, weights = list(_WEIGHTS), list(_WEIGHTS.values())
    for i in range(n):
        path = names[i] if i < len(names) else rng.choices(names, weights)[0]
        intake = start + interval * i + timedelta(seconds=rng.uniform(0, interval.total_seconds()))
        taken = walker.walk(path, intake)
        if progress is not None:
            progress(taken)
    return result


class _NotYetDue(Exception):
    """The case's next step would come after the end of simulated time."""


class _Clock:
    """Simulated time of one case: only ever moves forward, never past ``horizon``."""

    def __init__(self, now: datetime, rng: random.Random, horizon: datetime) -> None:
        self.now = now
        self._rng = rng
        self._horizon = horizon

    def minutes(self, low: float, high: float) -> datetime:
        then = self.now + timedelta(seconds=int(self._rng.uniform(low, high) * 60) + 1)
        if then > self._horizon:
            raise _NotYetDue
        self.now = then
        return self.now

    def hours(self, low: float, high: float) -> datetime:
        return self.minutes(low * 60, high * 60)

    def days(self, low: float, high: float) -> datetime:
        return self.minutes(low * 24 * 60, high * 24 * 60)


@dataclass
class _Case:
    """What the walker knows about a case it is walking."""

    id: UUID
    clock: _Clock
    custodian: DemoAgency
    handler: Actor
    area: str
    anonymous: bool = False
    given_by: ConsentGiver = ConsentGiver.SURVIVOR
    contact: tuple[ContactMethod, ...] = ()
    identity_consent: bool = False
    implicated: DemoAgency | None = None
    pending_referrals: list[tuple[UUID, str, ServiceType]] = field(default_factory=list)


class _Walker:
    def __init__(self, app: ComplaintMechanism, rng: random.Random, horizon: datetime) -> None:
        self.app = app
        self.rng = rng
        self.horizon = horizon
        self.network = app.network()
        """The registry as the walk began: demo cases never change it."""
        self.result = WalkResult()
        self.originals: list[UUID] = []
        """SEA cases of this walk that a later report can duplicate."""
        self._received: UUID | None = None

    def walk(self, path: str, intake: datetime) -> str:
        if path == "duplicate" and not self.originals:
            path = "sea_full"
        self._received = None
        try:
            getattr(self, f"_{path}")(_Clock(intake, self.rng, self.horizon))
        except _NotYetDue:
            if self._received is None:  # not even received: intake is past the horizon
                raise
            path = "in_progress"
        assert self._received is not None
        self.result.cases[self._received] = path
        return path

    # ---------------------------------------------------------------- synthetic data

    def _pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def _chance(self, p: float) -> bool:
        return self.rng.random() < p

    def _person(self, sex: Sex = Sex.FEMALE, *, contact: bool = True) -> PersonDetails:
        names = {Sex.FEMALE: FEMALE_NAMES, Sex.MALE: MALE_NAMES}.get(sex, FEMALE_NAMES + MALE_NAMES)
        first, family = self._pick(names), self._pick(FAMILY_NAMES)
        if not contact:
            return PersonDetails(name=f"{first} {family}")
        return PersonDetails(
            name=f"{first} {family}",
            phone=f"+999 5550 {self.rng.randrange(10_000):04d}",
            email=f"{first.lower()}.{family.lower()}@example.org" if self._chance(0.2) else None,
            address=f"Block {self._pick('ABCDEFGH')}{self.rng.randint(1, 40)}, Demo Camp Zone "
            f"{self.rng.randint(1, 6)}",
        )

    def _words(self) -> dict[str, str]:
        return {
            "role": self._pick(ROLES),
            "place": self._pick(PLACES),
            "item": self._pick(ITEMS),
        }

    def _incident_date(self, received: datetime) -> date | None:
        if self._chance(0.1):
            return None
        # the reporting bands: 0-3 days, 4-5, 6-14, 2 weeks-1 month, over a month
        low, high = self._pick(((0, 3), (0, 3), (4, 5), (6, 14), (15, 30), (31, 400)))
        return (received - timedelta(days=self.rng.randint(low, high))).date()

    def _allegation(
        self,
        *,
        implicated: DemoAgency | None,
        received: datetime,
        area: str,
        sex: Sex = Sex.FEMALE,
        age_band: AgeBand = AgeBand.ADULT,
        subtype: AllegationSubtype | None = None,
        words: dict[str, str] | None = None,
    ) -> Allegation:
        if subtype is None and self._chance(0.85):
            adult_subtypes = [
                s
                for s in AllegationSubtype
                if s is not AllegationSubtype.SEXUAL_ACTIVITY_WITH_CHILD
            ]
            subtype = self._pick(adult_subtypes)
        if subtype is not None:
            allegation_type = subtype.allegation_type
        elif sex is Sex.UNKNOWN and self._chance(0.3):
            allegation_type = AllegationType.UNKNOWN
        else:
            allegation_type = self._pick(
                (AllegationType.SEXUAL_EXPLOITATION, AllegationType.SEXUAL_ABUSE)
            )
        if implicated is None:
            personnel = PersonnelCategory.OTHER
        elif implicated.agency_type is AgencyType.UN_AGENCY:
            personnel = self._pick(
                (PersonnelCategory.UN_STAFF, PersonnelCategory.UN_RELATED_PERSONNEL)
            )
        else:
            personnel = self._pick(
                (PersonnelCategory.IMPLEMENTING_PARTNER,) * 3 + (PersonnelCategory.OTHER,)
            )
        words = words or self._words()
        return Allegation(
            allegation_type=allegation_type,
            subtype=subtype,
            child_involved=age_band.is_child
            or subtype is AllegationSubtype.SEXUAL_ACTIVITY_WITH_CHILD,
            implicated_agency=implicated.code if implicated else None,
            personnel_category=personnel,
            incident_date=self._incident_date(received),
            incident_area=area,
            victim_sex=sex,
            victim_age_band=age_band,
            incident_place_detail=f"near the {words['place']} (demo)",
            alleged_perpetrator=f"{words['role']}, first name given as "
            f"'{self._pick(MALE_NAMES)}' (demo)"
            if implicated
            else None,
        )

    def _sea_narrative(
        self, who: str, subtype: AllegationSubtype | None, words: dict[str, str]
    ) -> str:
        template = ALLEGATION_TEXT.get(
            subtype or AllegationSubtype.SOLICITATION,
            ALLEGATION_TEXT[AllegationSubtype.SOLICITATION],
        )
        return f"[DEMO] {who} reports that {template.format(**words)}."

    # ---------------------------------------------------------------- steps

    def _intake(
        self,
        clock: _Clock,
        agency: DemoAgency,
        channel: Channel,
        role: ComplainantRole,
        narrative: str,
        *,
        complainant: PersonDetails | None = None,
        survivor: PersonDetails | None = None,
        safety_risk: bool = False,
        area: str | None = None,
    ) -> _Case:
        received_at = clock.now
        at = clock.minutes(*INTAKE_DELAY[channel])
        if channel in (Channel.STAFF_MANDATORY_REPORT, Channel.INTERAGENCY_REFERRAL):
            actor = focal_point_actor(agency.code, agency.focal_points[0])
        else:
            actor = intake_operator_actor(agency.code)
        written = self.app.receive_complaint(
            actor=actor,
            at=at,
            received_at=received_at,
            channel=channel,
            complainant_role=role,
            immediate_safety_risk=safety_risk,
            narrative=narrative,
            complainant=complainant,
            survivor=survivor,
        )
        self._received = written.id
        lead = focal_point_actor(agency.code, agency.focal_points[0])
        return _Case(
            id=written.id,
            clock=clock,
            custodian=agency,
            handler=lead,
            area=area or self._pick(AREAS),
            anonymous=role is ComplainantRole.ANONYMOUS,
        )

    def _assess(
        self, case: _Case, category: ComplaintCategory, allegation: Allegation | None = None
    ) -> None:
        # most within the 24 h of policy, some late: overdue work is what the inbox shows first
        late = self._chance(0.1)
        at = case.clock.hours(26, 60) if late else case.clock.hours(0.5, 20)
        self.app.assess_case(
            case.id, actor=case.handler, category=category, allegation=allegation, at=at
        )

    def _assign(self, case: _Case) -> None:
        agency = case.custodian
        count = 2 if len(agency.focal_points) > 1 and self._chance(0.4) else 1
        chosen = tuple(self.rng.sample(agency.focal_points, count))
        lead = focal_point_actor(agency.code, agency.focal_points[0])
        self.app.assign_focal_points(
            case.id, actor=lead, focal_points=chosen, at=case.clock.minutes(5, 90)
        )
        case.handler = focal_point_actor(agency.code, chosen[0])

    def _consents(
        self,
        case: _Case,
        *,
        assistance: bool,
        identity: bool,
        contact: tuple[ContactMethod, ...] = (),
    ) -> None:
        for kind, wanted in (
            (ConsentKind.ASSISTANCE_REFERRAL, assistance),
            (ConsentKind.IDENTITY_DISCLOSURE, identity),
            (ConsentKind.CONTACT, bool(contact)),
        ):
            if not wanted:
                continue
            self.app.give_consent(
                case.id,
                actor=case.handler,
                kind=kind,
                given_by=case.given_by,
                contact_methods=contact if kind is ConsentKind.CONTACT else (),
                at=case.clock.minutes(2, 30),
            )
        case.identity_consent = case.identity_consent or identity
        case.contact = contact or case.contact

    def _contact_methods(self) -> tuple[ContactMethod, ...]:
        first = self._pick(
            (ContactMethod.PHONE, ContactMethod.PHONE, ContactMethod.SMS, ContactMethod.IN_PERSON)
        )
        if self._chance(0.3):
            second = self._pick(tuple(ContactMethod))
            return (first, second) if second is not first else (first,)
        return (first,)

    def _refer(self, case: _Case, service: ServiceType, exclude: str | None = None) -> bool:
        network = self.network
        candidates = [p for p in network.providers_of(service, case.area) if p != exclude]
        area = case.area
        if not candidates:
            # a gap in the pathway here: the nearest provider elsewhere takes it
            candidates = [p for p in network.providers_of(service) if p != exclude]
            if not candidates:
                return False
        provider = self._pick(candidates)
        areas = network.providers[provider].areas
        if area not in areas:
            area = sorted(areas)[0]
        written = self.app.refer_for_assistance(
            case.id,
            actor=case.handler,
            service_type=service,
            provider=provider,
            area=area,
            share_contact=bool(case.contact) and self._chance(0.7),
            at=case.clock.minutes(10, 120),
        )
        self.result.referrals.append(written.id)
        case.pending_referrals.append((written.id, provider, service))
        return True

    def _assist(self, case: _Case, services: list[ServiceType]) -> None:
        for service in dict.fromkeys(services):
            self._refer(case, service)

    def _providers_respond(self, case: _Case) -> list[tuple[UUID, str]]:
        """Providers accept (or decline, and the focal point refers elsewhere)."""
        accepted: list[tuple[UUID, str]] = []
        pending = case.pending_referrals
        while pending:
            referral, provider, service = pending.pop(0)
            actor = caseworker_actor(provider)
            if self._chance(0.1):
                self.app.decline_referral_by_provider(
                    referral,
                    actor=actor,
                    reason="[DEMO] No capacity for new cases this week",
                    at=case.clock.hours(2, 30),
                )
                self._refer(case, service, exclude=provider)
                continue
            self.app.accept_referral(referral, actor=actor, at=case.clock.hours(1, 30))
            accepted.append((referral, provider))
        return accepted

    def _deliver(self, case: _Case, accepted: list[tuple[UUID, str]]) -> None:
        for referral, provider in accepted:
            actor = caseworker_actor(provider)
            self.app.deliver_referral(referral, actor=actor, at=case.clock.days(0.5, 4))
        for referral, provider in accepted:
            self.app.follow_up_referral(
                referral,
                actor=caseworker_actor(provider),
                note="[DEMO] Follow-up visit done; survivor satisfied with the service"
                if self._chance(0.6)
                else None,
                at=case.clock.days(1, 5),
            )

    def _refer_for_investigation(self, case: _Case) -> None:
        assert case.implicated is not None
        shared = [SharedItem.ALLEGATION_SUMMARY]
        if self._chance(0.8):
            shared.append(SharedItem.ALLEGED_PERPETRATOR_DETAILS)
        if case.identity_consent:
            shared += [SharedItem.SURVIVOR_IDENTITY, SharedItem.NARRATIVE]
            if case.contact:
                shared.append(SharedItem.CONTACT_DETAILS)
        late = self._chance(0.1)
        self.app.refer_for_investigation(
            case.id,
            actor=case.handler,
            entity=self.network.investigating_entity_of(case.implicated.code),
            shared=tuple(shared),
            at=case.clock.hours(26, 72) if late else case.clock.hours(0.2, 18),
        )

    def _acknowledge(self, case: _Case) -> None:
        assert case.implicated is not None
        late = self._chance(0.15)
        self.app.acknowledge_investigation(
            case.id,
            actor=investigator_actor(case.implicated.code),
            at=case.clock.days(8, 20) if late else case.clock.days(0.1, 6),
        )

    def _outcome(self, case: _Case) -> InvestigationOutcome:
        """Weeks of investigation, with feedback at least every 30 days meanwhile."""
        assert case.implicated is not None
        remaining = self.rng.uniform(10, 75)
        while remaining > 28:
            case.clock.days(20, 28)
            remaining -= 28
            if self._can_give_feedback(case):
                self._feedback(case, "[DEMO] The investigation is ongoing; we will update you.")
        outcome = self.rng.choices(
            (
                InvestigationOutcome.SUBSTANTIATED,
                InvestigationOutcome.NOT_SUBSTANTIATED,
                InvestigationOutcome.CLOSED_OTHER_REASONS,
            ),
            (3, 5, 2),
        )[0]
        self.app.record_investigation_outcome(
            case.id,
            actor=investigator_actor(case.implicated.code),
            outcome=outcome,
            at=case.clock.days(0, max(remaining, 0.1)),
        )
        return outcome

    def _can_give_feedback(self, case: _Case) -> bool:
        return case.anonymous or bool(case.contact)

    def _feedback(self, case: _Case, message: str) -> None:
        if case.anonymous:
            channel = FeedbackChannel.RECEIPT_CODE
        elif case.contact:
            channel = FEEDBACK_CHANNEL[case.contact[0]]
        else:
            channel = FeedbackChannel.IN_PERSON
        self.app.give_feedback(
            case.id,
            actor=case.handler,
            message=message,
            channel=channel,
            at=case.clock.hours(1, 48),
        )

    def _close(
        self,
        case: _Case,
        reason: ClosureReason,
        *,
        no_outcome_reason: str | None = None,
        no_feedback_reason: str | None = None,
    ) -> None:
        self.app.close_case(
            case.id,
            actor=case.handler,
            reason=reason,
            no_outcome_reason=no_outcome_reason,
            no_feedback_reason=no_feedback_reason,
            at=case.clock.hours(1, 72),
        )

    def _conclude(self, case: _Case) -> None:
        """Outcome, final feedback (or why none), closure."""
        self._outcome(case)
        if self._can_give_feedback(case):
            self._feedback(
                case,
                "[DEMO] The investigation is concluded and the agency concerned has acted on "
                "its findings. Thank you for reporting.",
            )
            self._close(case, ClosureReason.INVESTIGATION_CONCLUDED)
        else:
            self._close(
                case,
                ClosureReason.INVESTIGATION_CONCLUDED,
                no_feedback_reason="[DEMO] The survivor asked not to be contacted",
            )

    # ---------------------------------------------------------------- the paths

    def _new_sea(
        self, clock: _Clock, *, receiving: DemoAgency | None = None
    ) -> tuple[_Case, Allegation, DemoAgency]:
        """Intake and assessment of an adult survivor's SEA complaint."""
        receiving = receiving or self._pick(AGENCIES)
        implicated = self._pick(AGENCIES)
        channel = self._pick(
            (
                Channel.HOTLINE,
                Channel.HOTLINE,
                Channel.IN_PERSON,
                Channel.IN_PERSON,
                Channel.COMMUNITY_LEADER,
                Channel.STAFF_MANDATORY_REPORT,
                Channel.SMS_MESSAGING,
                Channel.INTERAGENCY_REFERRAL,
            )
        )
        survivor = self._person(Sex.FEMALE)
        if channel is Channel.STAFF_MANDATORY_REPORT:
            role, complainant, who = (
                ComplainantRole.STAFF_MEMBER,
                self._person(self._pick((Sex.FEMALE, Sex.MALE))),
                "A staff member",
            )
        elif self._chance(0.25):
            role, complainant, who = (
                ComplainantRole.WITNESS,
                self._person(self._pick((Sex.FEMALE, Sex.MALE))),
                "A neighbour",
            )
        else:
            role, complainant, who = ComplainantRole.SURVIVOR, survivor, "The survivor"
        words = self._words()
        area = self._pick(AREAS)
        allegation = self._allegation(
            implicated=implicated, received=clock.now, area=area, words=words
        )
        case = self._intake(
            clock,
            receiving,
            channel,
            role,
            self._sea_narrative(who, allegation.subtype, words),
            complainant=complainant,
            survivor=survivor,
            safety_risk=self._chance(0.15),
            area=area,
        )
        case.implicated = implicated
        self._assess(case, ComplaintCategory.SEA_ALLEGATION, allegation)
        self.originals.append(case.id)
        return case, allegation, implicated

    def _services_for(self, allegation: Allegation, *, child: bool = False) -> list[ServiceType]:
        services = []
        if allegation.allegation_type is AllegationType.SEXUAL_ABUSE or self._chance(0.3):
            services.append(ServiceType.MEDICAL)
        services.append(ServiceType.PSYCHOSOCIAL)
        extra = (
            (ServiceType.EDUCATION, ServiceType.SAFETY_PROTECTION, ServiceType.LEGAL)
            if child
            else (
                ServiceType.LEGAL,
                ServiceType.MATERIAL,
                ServiceType.LIVELIHOOD,
                ServiceType.SAFETY_PROTECTION,
            )
        )
        services += self.rng.sample(extra, self.rng.randint(0, 2))
        if allegation.subtype is AllegationSubtype.EXPLOITATIVE_RELATIONSHIP and self._chance(0.3):
            services.append(ServiceType.CHILD_BORN_OF_SEA)
        return services

    def _sea_full(self, clock: _Clock, stop: str | None = None) -> _Case:
        case, allegation, _ = self._new_sea(clock)
        if stop == "assessed":
            return case
        self._assign(case)
        self._consents(
            case, assistance=True, identity=self._chance(0.8), contact=self._contact_methods()
        )
        services = self._services_for(allegation)
        if self._chance(0.15):
            services.insert(0, ServiceType.SAFETY_PROTECTION)
        self._assist(case, services)
        if stop == "assistance_referred":
            return case
        self._refer_for_investigation(case)
        self._feedback(case, "[DEMO] Your report was referred to the agency concerned.")
        if stop == "referred_for_investigation":
            return case
        accepted = self._providers_respond(case)
        self._acknowledge(case)
        self._deliver(case, accepted)
        if stop == "under_investigation":
            return case
        self._conclude(case)
        return case

    def _sea_assistance_declined(self, clock: _Clock) -> _Case:
        case, _, _ = self._new_sea(clock)
        self._assign(case)
        contact = self._contact_methods() if self._chance(0.6) else ()
        if self._chance(0.3):
            # consented at first, then changed her mind: the referral is stopped
            self._consents(case, assistance=True, identity=False, contact=contact)
            self._refer(case, ServiceType.PSYCHOSOCIAL)
            self.app.withdraw_consent(
                case.id,
                actor=case.handler,
                kind=ConsentKind.ASSISTANCE_REFERRAL,
                at=case.clock.hours(2, 48),
            )
            # withdrawing the consent declines the open referrals with it
            case.pending_referrals.clear()
        elif contact:
            self._consents(case, assistance=False, identity=False, contact=contact)
        # survivor-centred is not survivor-led: the allegation goes on, without her identity
        self._refer_for_investigation(case)
        self._acknowledge(case)
        if self._chance(0.25):
            return case
        self._conclude(case)
        return case

    def _sea_transferred(self, clock: _Clock) -> _Case:
        receiving = self._pick([a for a in AGENCIES if a.agency_type is not AgencyType.UN_AGENCY])
        case, allegation, implicated = self._new_sea(clock, receiving=receiving)
        if implicated is receiving:
            implicated = self._pick([a for a in AGENCIES if a is not receiving])
            case.implicated = implicated
            # the reassessment names the right agency before anything is referred
            self._assess(
                case,
                ComplaintCategory.SEA_ALLEGATION,
                replace(
                    allegation,
                    implicated_agency=implicated.code,
                    personnel_category=PersonnelCategory.IMPLEMENTING_PARTNER,
                ),
            )
        self._consents(
            case,
            assistance=True,
            identity=self._chance(0.6),
            contact=self._contact_methods(),
        )
        shared = [SharedItem.ALLEGATION_SUMMARY, SharedItem.ALLEGED_PERPETRATOR_DETAILS]
        if case.identity_consent:
            shared += [SharedItem.SURVIVOR_IDENTITY, SharedItem.CONTACT_DETAILS]
        target, reason = (
            (implicated, TransferReason.IMPLICATED_AGENCY_CUSTODY)
            if self._chance(0.6)
            else (
                self._pick([a for a in AGENCIES if a.agency_type is AgencyType.UN_AGENCY]),
                self._pick((TransferReason.CAPACITY, TransferReason.AREA_OF_RESPONSIBILITY)),
            )
        )
        self.app.transfer_case(
            case.id,
            actor=case.handler,
            to_agency=target.code,
            reason=reason,
            shared=tuple(shared),
            note="[DEMO] Handed over by phone to the receiving focal point",
            at=case.clock.hours(1, 12),
        )
        case.custodian = target
        case.handler = focal_point_actor(target.code, target.focal_points[0])
        self._assign(case)
        self._assist(case, self._services_for(allegation))
        self._refer_for_investigation(case)
        self._feedback(case, "[DEMO] Your report is now followed by another agency.")
        accepted = self._providers_respond(case)
        self._acknowledge(case)
        self._deliver(case, accepted)
        if self._chance(0.25):
            return case
        self._conclude(case)
        return case

    def _sea_child(self, clock: _Clock) -> _Case:
        receiving = self._pick([AGENCY["unicef"], AGENCY["local-ngo"], AGENCY["women-cbo"]])
        implicated = self._pick(AGENCIES)
        sex = self._pick((Sex.FEMALE, Sex.FEMALE, Sex.FEMALE, Sex.MALE))
        age_band = self._pick((AgeBand.CHILD_12_17, AgeBand.CHILD_12_17, AgeBand.CHILD_0_11))
        subtype = self._pick(
            (
                AllegationSubtype.SEXUAL_ACTIVITY_WITH_CHILD,
                AllegationSubtype.SEXUAL_ASSAULT,
                AllegationSubtype.TRANSACTIONAL_SEX,
            )
        )
        words = self._words()
        area = self._pick(AREAS)
        allegation = self._allegation(
            implicated=implicated,
            received=clock.now,
            area=area,
            sex=sex,
            age_band=age_band,
            subtype=subtype,
            words=words,
        )
        caregiver = self._person(self._pick((Sex.FEMALE, Sex.MALE)))
        case = self._intake(
            clock,
            receiving,
            self._pick((Channel.IN_PERSON, Channel.HOTLINE, Channel.COMMUNITY_LEADER)),
            ComplainantRole.OTHER,
            self._sea_narrative("A caregiver", subtype, words),
            complainant=caregiver,
            survivor=self._person(sex, contact=False),
            safety_risk=self._chance(0.3),
            area=area,
        )
        case.implicated = implicated
        case.given_by = ConsentGiver.CAREGIVER_BEST_INTEREST
        self._assess(case, ComplaintCategory.SEA_ALLEGATION, allegation)
        self.originals.append(case.id)
        self._assign(case)
        self._consents(
            case, assistance=True, identity=self._chance(0.5), contact=self._contact_methods()
        )
        self._assist(case, self._services_for(allegation, child=True))
        self._refer_for_investigation(case)
        self._feedback(case, "[DEMO] The report was referred; the child is receiving support.")
        accepted = self._providers_respond(case)
        self._acknowledge(case)
        self._deliver(case, accepted)
        if self._chance(0.3):
            return case
        self._conclude(case)
        return case

    def _anonymous(self, clock: _Clock) -> _Case:
        receiving, implicated = self._pick(AGENCIES), self._pick(AGENCIES)
        words = self._words()
        area = self._pick(AREAS)
        sex = self._pick((Sex.FEMALE, Sex.UNKNOWN))
        allegation = self._allegation(
            implicated=implicated,
            received=clock.now,
            area=area,
            sex=sex,
            age_band=AgeBand.ADULT if sex is Sex.FEMALE else AgeBand.UNKNOWN,
            words=words,
        )
        case = self._intake(
            clock,
            receiving,
            self._pick(
                (Channel.COMPLAINT_BOX, Channel.SMS_MESSAGING, Channel.WEB_FORM, Channel.HOTLINE)
            ),
            ComplainantRole.ANONYMOUS,
            self._sea_narrative("An anonymous note", allegation.subtype, words),
            area=area,
        )
        case.implicated = implicated
        self._assess(case, ComplaintCategory.SEA_ALLEGATION, allegation)
        self.originals.append(case.id)
        self._assign(case)
        self._refer_for_investigation(case)
        self._feedback(case, "[DEMO] Report received and referred to the agency concerned.")
        self._acknowledge(case)
        self._conclude(case)
        return case

    def _other_sensitive(self, clock: _Clock) -> _Case:
        receiving = self._pick(AGENCIES)
        known = self._chance(0.6)
        case = self._intake(
            clock,
            receiving,
            self._pick((Channel.HOTLINE, Channel.COMPLAINT_BOX, Channel.IN_PERSON, Channel.EMAIL)),
            ComplainantRole.WITNESS if known else ComplainantRole.ANONYMOUS,
            "[DEMO] A community member reports that "
            + self._pick(OTHER_SENSITIVE_TEXT).format(**self._words())
            + ".",
            complainant=self._person(self._pick((Sex.FEMALE, Sex.MALE))) if known else None,
        )
        self._assess(case, ComplaintCategory.OTHER_SENSITIVE)
        self._assign(case)
        concerned = self._pick(AGENCIES)
        if concerned is not receiving and self._chance(0.5):
            self.app.transfer_case(
                case.id,
                actor=case.handler,
                to_agency=concerned.code,
                reason=TransferReason.RECEIVED_BY_WRONG_AGENCY,
                shared=(SharedItem.ALLEGATION_SUMMARY,),
                note=None,
                at=case.clock.hours(1, 24),
            )
            case.custodian = concerned
            case.handler = focal_point_actor(concerned.code, concerned.focal_points[0])
        if known:
            case.contact = (ContactMethod.PHONE,)
        if known or self._chance(0.5):
            self._feedback(
                case, "[DEMO] Your complaint was passed to the agency's own complaint procedure."
            )
        self._close(case, ClosureReason.REFERRED_TO_AGENCY_PROCEDURE)
        return case

    def _feedback_to_cfm(self, clock: _Clock) -> _Case:
        category, sector, text = self._pick(NON_SENSITIVE)
        concerned = self._pick([a for a in AGENCIES if sector in a.sectors] or list(AGENCIES))
        receiving = self._pick(AGENCIES)
        anonymous = self._chance(0.5)
        case = self._intake(
            clock,
            receiving,
            self._pick(
                (Channel.COMPLAINT_BOX, Channel.SMS_MESSAGING, Channel.WEB_FORM, Channel.HOTLINE)
            ),
            ComplainantRole.ANONYMOUS if anonymous else ComplainantRole.OTHER,
            f"[DEMO] {text}",
            complainant=None if anonymous else self._person(self._pick((Sex.FEMALE, Sex.MALE))),
        )
        self._assess(case, ComplaintCategory.NON_SENSITIVE_FEEDBACK)
        forwarded = self.app.forward_to_feedback_mechanism(
            case.id,
            actor=case.handler,
            category=category,
            sector=sector,
            concerned_agency=concerned.code,
            at=case.clock.minutes(5, 120),
        )
        self.result.feedback_items.append(forwarded.id)
        answerer = focal_point_actor(concerned.code, self._pick(concerned.focal_points))
        if self._chance(0.85):
            self.app.respond_to_feedback(
                forwarded.id,
                actor=answerer,
                response="[DEMO] Thank you; the team was informed and will answer at the next "
                "community meeting.",
                at=case.clock.days(0.5, 10),
            )
            if self._chance(0.9):
                self.app.close_feedback_loop(
                    forwarded.id, actor=answerer, at=case.clock.days(0.5, 5)
                )
        return case

    def _duplicate(self, clock: _Clock) -> _Case:
        original = self._pick(self.originals)
        receiving = self._pick(AGENCIES)
        case = self._intake(
            clock,
            receiving,
            self._pick((Channel.HOTLINE, Channel.COMPLAINT_BOX, Channel.COMMUNITY_LEADER)),
            self._pick((ComplainantRole.WITNESS, ComplainantRole.ANONYMOUS)),
            "[DEMO] Another report of an incident the network already follows.",
        )
        self.app.mark_as_duplicate(
            case.id, actor=case.handler, original_case_id=original, at=case.clock.hours(1, 20)
        )
        self._close(case, ClosureReason.DUPLICATE)
        return case

    def _reopened(self, clock: _Clock) -> _Case:
        receiving = self._pick(AGENCIES)
        words = self._words()
        area = self._pick(AREAS)
        received = clock.now
        allegation = self._allegation(implicated=None, received=received, area=area, words=words)
        case = self._intake(
            clock,
            receiving,
            self._pick((Channel.COMPLAINT_BOX, Channel.SMS_MESSAGING)),
            ComplainantRole.ANONYMOUS,
            self._sea_narrative("An anonymous note", allegation.subtype, words)
            + " No agency is named.",
            area=area,
        )
        self._assess(case, ComplaintCategory.SEA_ALLEGATION, allegation)
        self._assign(case)
        self._feedback(case, "[DEMO] We need the agency of the person to act; please tell us.")
        self._close(
            case,
            ClosureReason.INSUFFICIENT_INFORMATION,
            no_outcome_reason="[DEMO] The agency of the alleged perpetrator is unknown; "
            "nothing can be referred",
        )
        case.clock.days(5, 40)
        self.app.reopen_case(
            case.id,
            actor=case.handler,
            reason="[DEMO] The complainant came back with the agency and role of the person",
            at=case.clock.hours(1, 8),
        )
        implicated = self._pick(AGENCIES)
        case.implicated = implicated
        self._assess(
            case,
            ComplaintCategory.SEA_ALLEGATION,
            self._allegation(
                implicated=implicated,
                received=received,  # the incident still lies before the first report
                area=area,
                subtype=allegation.subtype,
                words=words,
            ),
        )
        self._refer_for_investigation(case)
        self._feedback(case, "[DEMO] Report referred to the agency concerned.")
        self._acknowledge(case)
        if self._chance(0.5):
            self._conclude(case)
        return case

    def _left_open(self, clock: _Clock) -> _Case:
        stage = self._pick(
            (
                "received",
                "assessed",
                "assistance_referred",
                "referred_for_investigation",
                "under_investigation",
            )
        )
        if stage == "received":
            receiving = self._pick(AGENCIES)
            return self._intake(
                clock,
                receiving,
                self._pick(
                    (
                        Channel.HOTLINE,
                        Channel.COMPLAINT_BOX,
                        Channel.SMS_MESSAGING,
                        Channel.WEB_FORM,
                    )
                ),
                ComplainantRole.ANONYMOUS,
                self._sea_narrative("An anonymous caller", None, self._words()),
            )
        return self._sea_full(clock, stop=stage)


# ---------------------------------------------------------------------------------- command


def demo_start(today: datetime | None = None) -> datetime:
    """Where the simulated clock starts: midnight (UTC), some months back."""
    now = today or datetime.now(UTC)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - (DEMO_SPAN + DEMO_RUN_ON)


def run_demo(app: ComplaintMechanism, cases: int, seed: int | None, where: str) -> WalkResult:
    """The ``cbcm demo`` command: network, cases with a progress bar, then a summary."""
    console = Console(stderr=True)
    out = Console()
    if seed is None:
        seed = secrets.randbelow(2**31)
    rng = random.Random(seed)  # noqa: S311 - synthetic demo data, not security
    began = time.perf_counter()
    start = demo_start()
    before = app.recorder.max_notification_id() or 0
    existed = app.has_network()
    network = build_demo_network(app, start)
    with Progress(
        TextColumn("[bold]walking cases"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("cases", total=cases)
        result = walk_cases(
            app,
            cases,
            rng,
            start + timedelta(hours=1),
            progress=lambda _path: progress.advance(task),
        )
    prevention = walk_prevention(app, rng, datetime.now(UTC))
    elapsed = time.perf_counter() - began
    written = (app.recorder.max_notification_id() or 0) - before

    table = Table(title=f"{cases} demo cases by path", title_justify="left")
    table.add_column("path")
    table.add_column("cases", justify="right")
    for path, count in sorted(result.by_path.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(PATHS[path], str(count))
    out.print(table)
    focal_points = sum(len(a.focal_points) for a in network.agencies.values())
    out.print(
        f"network: {network.name!r} ({'reused' if existed else 'created'}): "
        f"{len(network.agencies)} agencies, {focal_points} focal points, "
        f"{len(network.providers)} service providers"
    )
    if prevention.reused:
        out.print("prevention work: kept as recorded before")
    else:
        out.print(
            f"prevention work: {prevention.trainings} trainings, {prevention.awareness} "
            f"awareness activities, {prevention.assessments} risk assessments, "
            f"{prevention.activities} work-plan activities"
        )
    rate = cases / elapsed if elapsed else 0.0
    out.print(f"{written} events written in {elapsed:.1f} s ({rate:.0f} cases/s); seed {seed}")
    # one line, whatever its length: a path is copied from here (and is no markup)
    out.print(f"event store: {where}", soft_wrap=True, markup=False, highlight=False)
    return result
