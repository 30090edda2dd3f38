"""A case walked through the application, on whatever store the test gives it."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from domain.case import Allegation
from domain.personal_data import PersonDetails
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
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
)
from services.application.mechanism import ComplaintMechanism
from tests.conftest import T0
from tests.world import CLINIC, FOCAL_POINT, NGO_INVESTIGATOR, OPERATOR


def at(hours: float) -> datetime:
    """``hours`` after the suite's fixed start."""
    return T0 + timedelta(hours=hours)


ALLEGATION = Allegation(
    allegation_type=AllegationType.SEXUAL_ABUSE,
    subtype=AllegationSubtype.SEXUAL_ASSAULT,
    child_involved=True,
    implicated_agency="ngo-a",
    personnel_category=PersonnelCategory.IMPLEMENTING_PARTNER,
    incident_date=T0.date() - timedelta(days=5),
    incident_area="SS0101",
    victim_sex=Sex.FEMALE,
    victim_age_band=AgeBand.CHILD_12_17,
    incident_place_detail="the water point near block C",
    alleged_perpetrator="a guard",
)


def receive(app: ComplaintMechanism) -> UUID:
    return app.receive_complaint(
        actor=OPERATOR,
        at=at(0),
        received_at=at(0),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=True,
        narrative="she said the guard asked for sex for a ration card",
        complainant=PersonDetails(name="Nyandeng", phone="+211 900 000 002"),
        survivor=PersonDetails(name="Nyandeng", phone="+211 900 000 002"),
    ).id


def accepted_referral(
    app: ComplaintMechanism, case_id: UUID, *, given_by: ConsentGiver, hour: float
) -> UUID:
    """Consent to an assistance referral (given by ``given_by``), a referral to clinic-1 and
    its acceptance by the clinic, at ``hour``, the next and the one after; the referral's
    id."""
    app.give_consent(
        case_id,
        actor=FOCAL_POINT,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=given_by,
        at=at(hour),
    )
    referral = app.refer_for_assistance(
        case_id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="clinic-1",
        area="SS0101",
        at=at(hour + 1),
    )
    app.accept_referral(referral.id, actor=CLINIC, at=at(hour + 2))
    return referral.id


def walk_sea_case(app: ComplaintMechanism) -> UUID:
    case_id = receive(app)
    app.assign_focal_points(case_id, actor=FOCAL_POINT, focal_points=("fp-unhcr-1",), at=at(1))
    app.assess_case(
        case_id,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=ALLEGATION,
        at=at(2),
    )
    accepted_referral(app, case_id, given_by=ConsentGiver.CAREGIVER_BEST_INTEREST, hour=3)
    app.refer_for_investigation(
        case_id,
        actor=FOCAL_POINT,
        entity="ngo-a-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(6),
    )
    app.acknowledge_investigation(case_id, actor=NGO_INVESTIGATOR, at=at(30))
    app.record_investigation_outcome(
        case_id, actor=NGO_INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(300)
    )
    app.give_feedback(
        case_id,
        actor=FOCAL_POINT,
        message="It was investigated.",
        channel=FeedbackChannel.IN_PERSON,
        at=at(301),
    )
    app.close_case(
        case_id, actor=FOCAL_POINT, reason=ClosureReason.INVESTIGATION_CONCLUDED, at=at(302)
    )
    return case_id


def event_count(app: ComplaintMechanism) -> int:
    return app.recorder.max_notification_id() or 0
