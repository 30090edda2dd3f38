"""A workflow that records every event class with a unique canary in every personal field.

Shared by the tests that scan published messages (translation, and the NATS wire) for
personal data: a canary found anywhere but the event store is a leak.
"""

from __future__ import annotations

import base64
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from nacl.public import PrivateKey

from domain.actors import Actor, Role
from domain.case import Allegation
from domain.notification import Notification, QuietHours
from domain.personal_data import DataSubject, PersonDetails
from domain.policy import NetworkPolicy
from domain.prevention import (
    DEFAULT_RISK_FACTORS,
    TrainedCounts,
    TrainingTarget,
    work_plan_id,
)
from domain.vocabulary import (
    ActionStatus,
    AgeBand,
    AgencyType,
    AllegationSubtype,
    AllegationType,
    AudienceCategory,
    AwarenessKind,
    Channel,
    ClosureReason,
    CommunityAudience,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    ErasureReason,
    FeedbackCategory,
    FeedbackChannel,
    InvestigationOutcome,
    MitigationMeasure,
    NotificationChannel,
    NotificationDelivery,
    NotificationKind,
    PersonnelCategory,
    Sector,
    ServiceType,
    Sex,
    SharedItem,
    TrainingTopic,
    TransferReason,
    WorkPlanActivityKind,
)
from services.application.mechanism import ComplaintMechanism
from tests.conftest import T0
from tests.world import COORDINATOR

INTAKE = Actor("hotline-7", "agency-a", Role.INTAKE_OPERATOR)
FOCAL_A = Actor("fp-a1", "agency-a", Role.FOCAL_POINT)
FOCAL_B = Actor("fp-b1", "ngo-b", Role.FOCAL_POINT)
INVESTIGATOR = Actor("oig-1", "ngo-b", Role.INVESTIGATING_ENTITY)
PROVIDER = Actor("clinic-user", "clinic-1", Role.SERVICE_PROVIDER)

SHARE_KEYS: dict[str, PrivateKey] = {"ngo-b": PrivateKey.generate()}
"""The private share keys of the agencies the walk registers one for: ngo-b receives the
transfer (its note) and the investigation referral (the survivor's identity), sealed."""


ERASED_AT_THE_END = frozenset({"feedback_narrative", "feedback_response"})
"""Canaries of the complaint the walk ends by erasing (and of its copy in the CFM): the store
reads them back as erased."""


def walk_every_event_type(app: ComplaintMechanism, canary: dict[str, str]) -> None:
    """Record at least one event of every class, with a canary in every personal field."""

    def at(minutes: int) -> Any:
        return T0 + timedelta(minutes=minutes)

    app.establish_network(actor=COORDINATOR, name="Somewhere PSEA network", at=at(0))
    app.set_policy(actor=COORDINATOR, policy=NetworkPolicy(suppression_threshold=3), at=at(1))
    for code, kind in (
        ("ocha", AgencyType.UN_AGENCY),
        ("agency-a", AgencyType.UN_AGENCY),
        ("ngo-b", AgencyType.INTERNATIONAL_NGO),
    ):
        app.register_agency(
            actor=COORDINATOR, code=code, name=code.upper(), agency_type=kind, at=at(2)
        )
    app.designate_investigating_entity(
        actor=COORDINATOR, agency="ngo-b", entity="ngo-b-oig", at=at(3)
    )
    for agency, key in SHARE_KEYS.items():
        app.register_agency_share_key(
            actor=COORDINATOR,
            agency=agency,
            public_key=base64.b64encode(bytes(key.public_key)).decode(),
            at=at(3),
        )
    for agency, user in (("agency-a", "fp-a1"), ("agency-a", "fp-a2"), ("ngo-b", "fp-b1")):
        app.appoint_focal_point(actor=COORDINATOR, agency=agency, user=user, at=at(4))
    app.withdraw_focal_point(actor=COORDINATOR, agency="agency-a", user="fp-a2", at=at(5))
    app.register_service_provider(
        actor=COORDINATOR,
        code="clinic-1",
        name="Clinic One",
        service_types=(ServiceType.MEDICAL, ServiceType.PSYCHOSOCIAL, ServiceType.LEGAL),
        areas=("SO1101",),
        at=at(6),
    )

    # The main case: an SEA allegation walked through every custody step.
    case = app.receive_complaint(
        actor=INTAKE,
        at=at(10),
        received_at=at(9),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=True,
        narrative=canary["narrative"],
        complainant=PersonDetails(
            name=canary["complainant.name"],
            phone=canary["complainant.phone"],
            email=canary["complainant.email"],
            address=canary["complainant.address"],
        ),
        survivor=PersonDetails(
            name=canary["survivor.name"],
            phone=canary["survivor.phone"],
            email=canary["survivor.email"],
            address=canary["survivor.address"],
        ),
    ).id
    app.assess_case(
        case,
        actor=FOCAL_A,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=Allegation(
            allegation_type=AllegationType.SEXUAL_EXPLOITATION,
            subtype=AllegationSubtype.TRANSACTIONAL_SEX,
            child_involved=False,
            implicated_agency="ngo-b",
            personnel_category=PersonnelCategory.IMPLEMENTING_PARTNER,
            incident_date=date(2026, 2, 20),
            incident_area="SO1101",
            victim_sex=Sex.FEMALE,
            victim_age_band=AgeBand.ADULT,
            incident_place_detail=canary["incident_place_detail"],
            alleged_perpetrator=canary["alleged_perpetrator"],
        ),
        at=at(11),
    )
    app.assign_focal_points(case, actor=FOCAL_A, focal_points=("fp-a1",), at=at(12))
    app.give_consent(
        case,
        actor=FOCAL_A,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=at(13),
    )
    app.give_consent(
        case,
        actor=FOCAL_A,
        kind=ConsentKind.IDENTITY_DISCLOSURE,
        given_by=ConsentGiver.SURVIVOR,
        at=at(13),
    )
    app.give_consent(
        case,
        actor=FOCAL_A,
        kind=ConsentKind.CONTACT,
        given_by=ConsentGiver.SURVIVOR,
        contact_methods=(ContactMethod.SMS, ContactMethod.IN_PERSON),
        at=at(13),
    )
    delivered, declined, unwanted = (
        app.refer_for_assistance(
            case,
            actor=FOCAL_A,
            service_type=service,
            provider="clinic-1",
            area="SO1101",
            share_contact=True,
            at=at(14),
        ).id
        for service in (ServiceType.MEDICAL, ServiceType.PSYCHOSOCIAL, ServiceType.LEGAL)
    )
    app.accept_referral(delivered, actor=PROVIDER, at=at(15))
    app.deliver_referral(delivered, actor=PROVIDER, at=at(16))
    app.follow_up_referral(delivered, actor=FOCAL_A, note=canary["follow_up_note"], at=at(17))
    app.decline_referral_by_provider(
        declined, actor=PROVIDER, reason=canary["decline_reason"], at=at(15)
    )
    app.decline_referral_by_survivor(unwanted, actor=FOCAL_A, at=at(15))
    app.refer_for_investigation(
        case,
        actor=FOCAL_A,
        entity="ngo-b-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
        at=at(18),
    )
    app.withdraw_consent(case, actor=FOCAL_A, kind=ConsentKind.CONTACT, at=at(19))
    app.transfer_case(
        case,
        actor=FOCAL_A,
        to_agency="ngo-b",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        note=canary["transfer_note"],
        at=at(20),
    )
    app.assign_focal_points(case, actor=FOCAL_B, focal_points=("fp-b1",), at=at(21))
    app.acknowledge_investigation(case, actor=INVESTIGATOR, at=at(22))
    app.give_feedback(
        case,
        actor=FOCAL_B,
        message=canary["feedback_message"],
        channel=FeedbackChannel.SMS,
        at=at(23),
    )
    app.record_investigation_outcome(
        case, actor=INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(24)
    )
    app.close_case(
        case,
        actor=FOCAL_B,
        reason=ClosureReason.INVESTIGATION_CONCLUDED,
        no_outcome_reason=canary["no_outcome_reason"],
        no_feedback_reason=canary["no_feedback_reason"],
        at=at(25),
    )
    app.reopen_case(case, actor=COORDINATOR, reason=canary["reopen_reason"], at=at(26))

    # A second, anonymous report of the same incident.
    duplicate = app.receive_complaint(
        actor=INTAKE,
        at=at(30),
        received_at=at(30),
        channel=Channel.COMPLAINT_BOX,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=False,
        narrative=canary["duplicate_narrative"],
    ).id
    app.mark_as_duplicate(duplicate, actor=FOCAL_A, original_case_id=case, at=at(31))
    app.close_case(
        duplicate,
        actor=FOCAL_A,
        reason=ClosureReason.DUPLICATE,
        no_feedback_reason=canary["duplicate_no_feedback_reason"],
        at=at(32),
    )

    # A complaint that turns out to be feedback for an agency's CFM, and direct feedback.
    misrouted = app.receive_complaint(
        actor=INTAKE,
        at=at(40),
        received_at=at(40),
        channel=Channel.WEB_FORM,
        complainant_role=ComplainantRole.OTHER,
        immediate_safety_risk=False,
        narrative=canary["feedback_narrative"],
    ).id
    app.assess_case(
        misrouted, actor=FOCAL_A, category=ComplaintCategory.NON_SENSITIVE_FEEDBACK, at=at(41)
    )
    forwarded = app.forward_to_feedback_mechanism(
        misrouted,
        actor=FOCAL_A,
        category=FeedbackCategory.SERVICE_COMPLAINT,
        sector=Sector.WASH,
        concerned_agency="ngo-b",
        at=at(42),
    ).id
    app.respond_to_feedback(
        forwarded, actor=FOCAL_B, response=canary["feedback_response"], at=at(43)
    )
    app.close_feedback_loop(forwarded, actor=FOCAL_B, at=at(44))
    app.receive_feedback(
        actor=INTAKE,
        channel=Channel.SMS_MESSAGING,
        category=FeedbackCategory.SUGGESTION,
        sector=Sector.FOOD_SECURITY,
        concerned_agency="agency-a",
        text=canary["feedback_text"],
        at=at(45),
    )
    # Staff contacts (issue #18): a focal point's addresses (personal data of staff), changed,
    # and another one's registered and erased; a notice sent and one given up.
    for when in (at(47), at(48)):
        app.register_staff_contact(
            actor=FOCAL_A,
            user="fp-a1",
            organisation="agency-a",
            role=Role.FOCAL_POINT,
            email=canary["contact.email"],
            phone=canary["contact.phone"],
            channels=(NotificationChannel.EMAIL, NotificationChannel.SMS),
            quiet_hours=QuietHours(time(22), time(6), "Africa/Juba"),
            delivery=NotificationDelivery.IMMEDIATE,
            at=when,
        )
    app.register_staff_contact(
        actor=COORDINATOR,
        user="fp-b1",
        organisation="ngo-b",
        role=Role.FOCAL_POINT,
        email="fp-b1@ngo-b.test",
        phone=None,
        channels=(NotificationChannel.EMAIL,),
        quiet_hours=None,
        delivery=NotificationDelivery.DIGEST,
        at=at(47),
    )
    app.erase_staff_contact(actor=COORDINATOR, user="fp-b1", at=at(48))
    app.record_notification(
        Notification.sent(
            recipient="fp-a1",
            kind=NotificationKind.URGENT_CASE,
            about=str(case),
            case_id=case,
            urgent=True,
            count=1,
            channels=(NotificationChannel.EMAIL,),
            attempts=1,
            at=at(10),
        )
    )
    app.record_notification(
        Notification.given_up(
            recipient="fp-b1",
            kind=NotificationKind.TRANSFER_RECEIVED,
            about=f"{case}:v9",
            case_id=case,
            urgent=True,
            count=1,
            attempts=0,
            reason="no_address",
            at=at(20),
        )
    )
    # A recorded decision erases the misrouted complaint's personal data, and its copy in
    # the CFM with it.
    app.erase_personal_data(
        misrouted,
        actor=COORDINATOR,
        subjects=tuple(DataSubject),
        reason=ErasureReason.NETWORK_DECISION,
        at=at(46),
    )
    walk_prevention(app, at(50))


def walk_prevention(app: ComplaintMechanism, now: datetime) -> None:
    """One event of every prevention class (issue #22): they hold codes and counts only, so
    no canary goes into them; the checks see that none of the walk's canaries reach them."""
    day = now.date()
    app.set_prevention_policy(
        actor=COORDINATOR,
        refresher_every_days=365,
        risk_factors=DEFAULT_RISK_FACTORS,
        training_targets=(TrainingTarget("agency-a", day.year, 30),),
        at=now,
    )
    app.set_prevention_policy(
        actor=COORDINATOR,
        refresher_every_days=180,
        risk_factors=DEFAULT_RISK_FACTORS,
        training_targets=(TrainingTarget("agency-a", day.year, 40),),
        at=now,
    )
    training = app.record_training(
        actor=FOCAL_A,
        agency="agency-a",
        held_on=day,
        area="SO22",
        audience=AudienceCategory.STAFF,
        topic=TrainingTopic.SEA_BASICS,
        trained=TrainedCounts(female=8, male=7, other_or_not_recorded=1),
        at=now,
    )
    app.withdraw_training(training.id, actor=FOCAL_A, at=now)
    activity = app.record_awareness(
        actor=FOCAL_A,
        agency="agency-a",
        held_on=day,
        area="SO22",
        kind=AwarenessKind.CONSULTATION,
        audience=CommunityAudience.WOMEN,
        reach=35,
        preferred_channels=(Channel.HOTLINE, Channel.COMPLAINT_BOX),
        at=now,
    )
    app.withdraw_awareness(activity.id, actor=FOCAL_A, at=now)
    app.appoint_alternate(actor=FOCAL_A, agency="agency-a", user="alt-a1", at=now)
    app.record_focal_point_training(
        actor=FOCAL_A, agency="agency-a", user="alt-a1", completed_on=day, at=now
    )
    app.withdraw_alternate(actor=FOCAL_A, agency="agency-a", user="alt-a1", at=now)
    assessment = app.assess_risk(
        actor=FOCAL_A,
        agency="agency-a",
        area="SO22",
        sector=Sector.CASH,
        assessed_on=day,
        ratings=dict.fromkeys(DEFAULT_RISK_FACTORS, 3),
        at=now,
    )
    app.reassess_risk(
        assessment.id,
        actor=FOCAL_A,
        assessed_on=day,
        ratings=dict.fromkeys(DEFAULT_RISK_FACTORS, 4),
        at=now,
    )
    app.agree_mitigation(
        assessment.id,
        actor=FOCAL_A,
        measure=MitigationMeasure.COMPLAINT_CHANNELS,
        owner_agency="ngo-b",
        due_on=day + timedelta(days=30),
        at=now,
    )
    app.report_mitigation(
        assessment.id, actor=FOCAL_B, action=1, status=ActionStatus.IN_PROGRESS, at=now
    )
    app.open_work_plan(actor=COORDINATOR, year=day.year, at=now)
    app.plan_activity(
        work_plan_id(day.year),
        actor=COORDINATOR,
        kind=WorkPlanActivityKind.AWARENESS,
        owner_agency="agency-a",
        area="SO22",
        target=500,
        due_on=date(day.year, 12, 31),
        at=now,
    )
    app.report_work_plan_progress(
        work_plan_id(day.year),
        actor=FOCAL_A,
        activity=1,
        status=ActionStatus.IN_PROGRESS,
        achieved=120,
        at=now,
    )


def new_canaries() -> dict[str, str]:
    """A unique canary string per personal field the workflow fills (the staff contact's
    address and number as an address and an E.164 number can be)."""
    return {
        "contact.email": f"CANARY-{uuid.uuid4().hex}@staff.test",
        "contact.phone": "+2" + str(uuid.uuid4().int)[:13],
    } | {
        field: f"CANARY-{uuid.uuid4().hex}"
        for field in (
            "narrative",
            "complainant.name",
            "complainant.phone",
            "complainant.email",
            "complainant.address",
            "survivor.name",
            "survivor.phone",
            "survivor.email",
            "survivor.address",
            "incident_place_detail",
            "alleged_perpetrator",
            "transfer_note",
            "feedback_message",
            "no_outcome_reason",
            "no_feedback_reason",
            "reopen_reason",
            "decline_reason",
            "follow_up_note",
            "duplicate_narrative",
            "duplicate_no_feedback_reason",
            "feedback_narrative",
            "feedback_response",
            "feedback_text",
        )
    }
