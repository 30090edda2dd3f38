"""The three workflows of DOMAIN.md, walked end to end on the aggregates."""

from __future__ import annotations

from domain.case import Case, CaseStatus
from domain.feedback import Feedback
from domain.network import Network
from domain.vocabulary import (
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    FeedbackCategory,
    FeedbackChannel,
    InvestigationOutcome,
    ReferralStatus,
    Sector,
    ServiceType,
    SharedItem,
    VictimCategory,
)
from tests.unit.conftest import (
    CLINIC,
    COORDINATOR,
    FOCAL_POINT,
    NGO_FOCAL_POINT,
    NGO_INVESTIGATOR,
    OPERATOR,
    allegation,
    at,
)


def test_sea_allegation_walks_from_intake_to_closure(case: Case, network: Network) -> None:
    # given a complaint received through the hotline, held by the receiving agency
    assert case.custodian == "unhcr"
    assert case.status is CaseStatus.UNDER_PRELIMINARY_ASSESSMENT

    # when a focal point assesses, gets consents, refers for assistance and investigation,
    # the entity acknowledges and reports, feedback is given and the case is closed
    case.assign_focal_points(network, actor=FOCAL_POINT, focal_points=("fp-unhcr-1",), at=at(1))
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=allegation(),
        at=at(2),
    )
    case.give_consent(
        actor=FOCAL_POINT,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=at(3),
    )
    case.give_consent(
        actor=FOCAL_POINT,
        kind=ConsentKind.CONTACT,
        given_by=ConsentGiver.SURVIVOR,
        contact_methods=(ContactMethod.PHONE,),
        at=at(3),
    )
    referral = case.refer_for_assistance(
        network,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="clinic-1",
        area="SS0101",
        share_contact=True,
        at=at(4),
    )
    referral.accept(actor=CLINIC, at=at(5))
    referral.deliver(actor=CLINIC, at=at(30))
    referral.follow_up("unhcr", actor=FOCAL_POINT, note="feels safer", at=at(100))
    case.refer_for_investigation(
        network,
        actor=FOCAL_POINT,
        entity="ngo-a-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(6),
    )
    assert case.status is CaseStatus.REFERRED_PENDING_INVESTIGATION
    case.acknowledge_investigation(actor=NGO_INVESTIGATOR, at=at(48))
    assert case.status is CaseStatus.UNDER_INVESTIGATION
    case.record_investigation_outcome(
        actor=NGO_INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(500)
    )
    case.give_feedback(
        actor=FOCAL_POINT,
        message="Your complaint was investigated.",
        channel=FeedbackChannel.PHONE,
        at=at(501),
    )
    case.close(actor=FOCAL_POINT, reason=ClosureReason.INVESTIGATION_CONCLUDED, at=at(502))

    # then the case is closed as substantiated with every step on record
    assert case.is_closed
    assert case.status is CaseStatus.SUBSTANTIATED
    assert case.assistance_referrals == (referral.id,)
    assert referral.status is ReferralStatus.FOLLOWED_UP
    assert set(referral.status_times) == {
        ReferralStatus.REFERRED,
        ReferralStatus.ACCEPTED,
        ReferralStatus.DELIVERED,
        ReferralStatus.FOLLOWED_UP,
    }
    assert case.investigation is not None and not case.investigation.identity_shared
    assert case.assessment is not None and case.assessment.allegation is not None
    assert case.assessment.allegation.victim_category is VictimCategory.WOMAN
    assert [type(e).__name__ for e in case.collect_events()] == [
        "Received",
        "FocalPointsAssigned",
        "Assessed",
        "ConsentGiven",
        "ConsentGiven",
        "AssistanceReferred",
        "ReferredForInvestigation",
        "InvestigationAcknowledged",
        "InvestigationOutcomeRecorded",
        "FeedbackGiven",
        "Closed",
    ]


def test_other_sensitive_complaint_goes_to_agency_procedure_and_closes(
    case: Case, network: Network
) -> None:
    # given a complaint about fraud, not SEA
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.OTHER_SENSITIVE,
        allegation=None,
        at=at(1),
    )
    # when it is closed as referred to the agency's own procedure
    case.close(actor=FOCAL_POINT, reason=ClosureReason.REFERRED_TO_AGENCY_PROCEDURE, at=at(2))
    # then it closes without investigation outcome or feedback (those rules are for SEA)
    assert case.is_closed
    assert case.investigation is None
    assert case.closure is not None
    assert case.closure.reason is ClosureReason.REFERRED_TO_AGENCY_PROCEDURE


def test_feedback_is_answered_and_its_loop_closed(network: Network) -> None:
    # given feedback about a water point, for the concerned agency's CFM
    feedback = Feedback.receive(
        actor=OPERATOR,
        channel=Channel.COMPLAINT_BOX,
        category=FeedbackCategory.SERVICE_COMPLAINT,
        sector=Sector.WASH,
        concerned_agency="ngo-a",
        text="the tap at block C is broken",
        network=network,
        at=at(0),
    )
    # when the concerned agency responds and closes the loop
    feedback.respond(actor=NGO_FOCAL_POINT, response="Repaired on Monday.", at=at(20))
    feedback.close_loop(actor=NGO_FOCAL_POINT, at=at(21))
    # then the loop is closed with its times
    assert feedback.responded_at == at(20)
    assert feedback.loop_closed_at == at(21)


def test_anonymous_complaint_takes_no_complainant_details(network: Network) -> None:
    case = Case.receive(
        actor=OPERATOR,
        received_at=at(0),
        channel=Channel.COMPLAINT_BOX,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=False,
        narrative="a note in the box",
        complainant=None,
        survivor=None,
        network=network,
        at=at(1),
    )
    assert case.complainant is None
    assert case.received_at == at(0) and case.recorded_at == at(1)


def test_every_event_records_actor_and_the_callers_time(case: Case, network: Network) -> None:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.OTHER_SENSITIVE,
        allegation=None,
        at=at(7),
    )
    case.close(actor=COORDINATOR, reason=ClosureReason.REFERRED_TO_AGENCY_PROCEDURE, at=at(9))
    events = case.collect_events()
    assert [(e.actor, e.timestamp) for e in events] == [  # type: ignore[attr-defined]
        (OPERATOR, at(0)),
        (FOCAL_POINT, at(7)),
        (COORDINATOR, at(9)),
    ]
