"""The application service on a real store: each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain.actors import Actor, Role
from domain.case import Allegation, Case, CaseStatus
from domain.errors import NotAnAllegation, NotFound, UnknownAgency, VersionConflict
from domain.feedback import Feedback
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
    FeedbackCategory,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ReferralStatus,
    Sector,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from services.application.commands import expecting
from services.application.mechanism import ComplaintMechanism
from services.event_store.config import persistence_env
from services.settings import Settings
from tests.conftest import T0

COORDINATOR = Actor("coord-1", "unhcr", Role.COORDINATOR)
OPERATOR = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)
FOCAL_POINT = Actor("fp-unhcr-1", "unhcr", Role.FOCAL_POINT)
INVESTIGATOR = Actor("inv-1", "ngo-a", Role.INVESTIGATING_ENTITY)
CLINIC = Actor("nurse-1", "clinic-1", Role.SERVICE_PROVIDER)


def at(hours: float) -> datetime:
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


def set_up_network(app: ComplaintMechanism) -> None:
    app.establish_network(actor=COORDINATOR, name="Test network", at=T0)
    for code in ("unhcr", "ngo-a"):
        app.register_agency(
            actor=COORDINATOR, code=code, name=code, agency_type=AgencyType.UN_AGENCY, at=T0
        )
        app.designate_investigating_entity(
            actor=COORDINATOR, agency=code, entity=f"{code}-inv", at=T0
        )
    app.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-unhcr-1", at=T0)
    app.register_service_provider(
        actor=COORDINATOR,
        code="clinic-1",
        name="Clinic",
        service_types=(ServiceType.MEDICAL,),
        areas=("SS0101",),
        at=T0,
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
    app.give_consent(
        case_id,
        actor=FOCAL_POINT,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.CAREGIVER_BEST_INTEREST,
        at=at(3),
    )
    referral = app.refer_for_assistance(
        case_id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="clinic-1",
        area="SS0101",
        at=at(4),
    )
    app.accept_referral(referral.id, actor=CLINIC, at=at(5))
    app.refer_for_investigation(
        case_id,
        actor=FOCAL_POINT,
        entity="ngo-a-inv",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(6),
    )
    app.acknowledge_investigation(case_id, actor=INVESTIGATOR, at=at(30))
    app.record_investigation_outcome(
        case_id, actor=INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(300)
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


def test_sea_case_walks_the_whole_workflow_through_the_store(app: ComplaintMechanism) -> None:
    set_up_network(app)
    case_id = walk_sea_case(app)
    case = app.get_case(case_id)
    assert case.is_closed and case.status is CaseStatus.SUBSTANTIATED
    assert case.version == 10
    referral = app.get_referral(case.assistance_referrals[0])
    assert referral.case_id == case_id and referral.provider == "clinic-1"


def test_case_replayed_from_the_store_has_the_same_state(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    set_up_network(app)
    case_id = walk_sea_case(app)
    live = app.get_case(case_id)
    replayed = reopen().get_case(case_id)
    assert vars(replayed) == vars(live)
    assert replayed.survivor == PersonDetails(name="Nyandeng", phone="+211 900 000 002")
    assert replayed.assessment is not None and replayed.assessment.allegation == ALLEGATION


def test_state_at_any_earlier_version_can_be_read(app: ComplaintMechanism) -> None:
    set_up_network(app)
    case_id = walk_sea_case(app)
    received = app.get_case(case_id, version=1)
    assessed = app.get_case(case_id, version=3)
    referred = app.get_case(case_id, version=6)
    assert received.assessment is None and received.focal_points == ()
    assert assessed.assessment is not None and assessed.investigation is None
    assert referred.status is CaseStatus.REFERRED_PENDING_INVESTIGATION
    assert not referred.is_closed and app.get_case(case_id).is_closed


def test_stale_expected_version_is_a_conflict_and_records_nothing(
    app: ComplaintMechanism,
) -> None:
    set_up_network(app)
    case_id = receive(app)
    app.assign_focal_points(
        expecting(case_id, 1), actor=FOCAL_POINT, focal_points=("fp-unhcr-1",), at=at(1)
    )
    before = event_count(app)
    with pytest.raises(VersionConflict) as conflict:
        app.assess_case(
            expecting(case_id, 1),
            actor=FOCAL_POINT,
            category=ComplaintCategory.OTHER_SENSITIVE,
            at=at(2),
        )
    assert conflict.value.current == 2
    assert event_count(app) == before
    assert app.get_case(case_id).assessment is None


def test_concurrent_writer_on_a_stale_copy_gets_a_conflict_not_an_overwrite(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given a second application whose cached copy of the case does not fast-forward
    set_up_network(app)
    case_id = receive(app)
    stale = ComplaintMechanism(
        env={**persistence_env(settings), "AGGREGATE_CACHE_FASTFORWARD": "n"}
    )
    try:
        stale.get_case(case_id)
        # when the first application records a step and the second decides on its old copy
        app.assess_case(
            case_id, actor=FOCAL_POINT, category=ComplaintCategory.OTHER_SENSITIVE, at=at(1)
        )
        before = event_count(app)
        with pytest.raises(VersionConflict) as conflict:
            stale.give_feedback(
                case_id,
                actor=FOCAL_POINT,
                message="m",
                channel=FeedbackChannel.SMS,
                at=at(2),
            )
    finally:
        stale.close()
    # then the second write is refused with the current version, and the first one stands
    assert conflict.value.current == 2
    assert event_count(app) == before
    assert app.get_case(case_id).feedback_given_at == ()


def test_refused_command_records_nothing(app: ComplaintMechanism) -> None:
    set_up_network(app)
    case_id = receive(app)
    before = event_count(app)
    with pytest.raises(NotAnAllegation):
        app.refer_for_investigation(
            case_id,
            actor=FOCAL_POINT,
            entity="ngo-a-inv",
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=at(1),
        )
    assert event_count(app) == before


def test_writes_answer_with_the_store_position_of_their_last_event(
    app: ComplaintMechanism,
) -> None:
    set_up_network(app)
    first = app.receive_complaint(
        actor=OPERATOR,
        at=at(0),
        received_at=at(0),
        channel=Channel.EMAIL,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=False,
        narrative="n",
    )
    assert first.position == event_count(app)
    app.give_consent(
        first.id,
        actor=FOCAL_POINT,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=at(1),
    )
    referral = app.refer_for_assistance(
        first.id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="clinic-1",
        area="SS0101",
        at=at(2),
    )
    # the case event and the new referral are saved together; the position is the last one
    assert referral.position == event_count(app) == first.position + 3


def test_unknown_ids_and_ids_of_other_kinds_are_not_found(app: ComplaintMechanism) -> None:
    set_up_network(app)
    case_id = receive(app)
    with pytest.raises(NotFound):
        app.get_case(uuid4())
    with pytest.raises(NotFound):
        app.get_referral(case_id)


def test_non_sensitive_complaint_is_forwarded_to_the_feedback_mechanism(
    app: ComplaintMechanism,
) -> None:
    set_up_network(app)
    case_id = receive(app)
    app.assess_case(
        case_id, actor=FOCAL_POINT, category=ComplaintCategory.NON_SENSITIVE_FEEDBACK, at=at(1)
    )
    written = app.forward_to_feedback_mechanism(
        case_id,
        actor=FOCAL_POINT,
        category=FeedbackCategory.SERVICE_COMPLAINT,
        sector=Sector.FOOD_SECURITY,
        concerned_agency="ngo-a",
        at=at(2),
    )
    feedback = app.get_feedback(written.id)
    assert isinstance(feedback, Feedback) and feedback.source_case_id == case_id
    assert app.get_case(case_id).closure is not None


def test_events_are_stored_as_msgspec_json_and_decode_to_their_types(
    app: ComplaintMechanism,
) -> None:
    set_up_network(app)
    case_id = walk_sea_case(app)
    stored = app.recorder.select_events(case_id)
    cipher = app.mapper.cipher  # the whole-event cipher, on by default on PostgreSQL
    states = [msgspec.json.decode(cipher.decrypt(s.state) if cipher else s.state) for s in stored]
    assert states[0]["channel"] == "hotline"
    assert states[2]["allegation"]["victim_age_band"] == "12-17"
    events = app.case_history(case_id)
    assert isinstance(events[0].originator_id, UUID)
    assert isinstance(events[0], Case.Received) and events[0].channel is Channel.HOTLINE
    assert events[0].received_at == at(0)
    assert isinstance(events[2], Case.Assessed) and events[2].allegation == ALLEGATION


def test_a_version_1_investigation_referral_is_upcast_when_read(app: ComplaintMechanism) -> None:
    # given a case whose referral was stored by version 1 of the event class
    set_up_network(app)
    case_id = receive(app)
    app.assess_case(
        case_id,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=ALLEGATION,
        at=at(1),
    )
    v1_state = msgspec.json.encode(
        {
            "timestamp": at(2),
            "actor": {"user": "fp-unhcr-1", "agency": "unhcr", "role": "focal_point"},
            "agency": "ngo-a",
            "entity": "ngo-a-inv",
            "identity_shared": True,
        }
    )
    if app.mapper.cipher:  # stored as that version would have stored it
        v1_state = app.mapper.cipher.encrypt(v1_state)
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=case_id,
                originator_version=3,
                topic=get_topic(Case.ReferredForInvestigation),
                state=v1_state,
            )
        ]
    )
    # when it is read now
    case = ComplaintMechanism(env=app.env).get_case(case_id)
    # then it has the version 2 shape: what was shared, identity included
    assert case.investigation is not None
    assert case.investigation.shared == (
        SharedItem.ALLEGATION_SUMMARY,
        SharedItem.SURVIVOR_IDENTITY,
    )
    assert case.investigation.identity_shared
    # and new referrals are stored as version 2
    other = receive(app)
    app.assess_case(
        other,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=ALLEGATION,
        at=at(1),
    )
    app.refer_for_investigation(
        other,
        actor=FOCAL_POINT,
        entity="ngo-a-inv",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(2),
    )
    latest = app.recorder.select_events(other, desc=True, limit=1)[0]
    state = app.mapper.cipher.decrypt(latest.state) if app.mapper.cipher else latest.state
    assert msgspec.json.decode(state)["class_version"] == 2


def test_network_registry_survives_a_restart(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    set_up_network(app)
    network = reopen().network()
    assert network.investigating_entity_of("ngo-a") == "ngo-a-inv"
    assert network.agency("unhcr").focal_points == frozenset({"fp-unhcr-1"})
    assert network.providers_of(ServiceType.MEDICAL, "SS0101") == ["clinic-1"]


def test_withdrawing_assistance_consent_declines_the_open_referrals(
    app: ComplaintMechanism,
) -> None:
    # given a survivor referred to a clinic that accepted
    set_up_network(app)
    case_id = receive(app)
    app.give_consent(
        case_id,
        actor=FOCAL_POINT,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=at(1),
    )
    referral = app.refer_for_assistance(
        case_id,
        actor=FOCAL_POINT,
        service_type=ServiceType.MEDICAL,
        provider="clinic-1",
        area="SS0101",
        at=at(2),
    )
    app.accept_referral(referral.id, actor=CLINIC, at=at(3))
    # when she withdraws her consent
    app.withdraw_consent(case_id, actor=FOCAL_POINT, kind=ConsentKind.ASSISTANCE_REFERRAL, at=at(4))
    # then the referral is declined by the survivor in the same step
    stopped = app.get_referral(referral.id)
    assert stopped.status is ReferralStatus.DECLINED_BY_SURVIVOR
    assert stopped.status_times[ReferralStatus.DECLINED_BY_SURVIVOR] == at(4)


def test_registry_changes_reach_the_next_command(app: ComplaintMechanism) -> None:
    set_up_network(app)
    case_id = receive(app)
    with pytest.raises(UnknownAgency):
        app.transfer_case(
            case_id,
            actor=FOCAL_POINT,
            to_agency="wfp",
            reason=TransferReason.CAPACITY,
            shared=(),
            at=at(1),
        )
    app.register_agency(
        actor=COORDINATOR, code="wfp", name="WFP", agency_type=AgencyType.UN_AGENCY, at=at(1)
    )
    app.transfer_case(
        case_id,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(),
        at=at(2),
    )
    assert app.get_case(case_id).custodian == "wfp"
