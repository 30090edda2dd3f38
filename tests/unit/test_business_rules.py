"""Every business rule refuses what it forbids, with its named error, and records nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.errors import (
    ActionNotPermitted,
    AgencyAlreadyRegistered,
    AlreadyReferredForInvestigation,
    AssessmentLocked,
    AssistanceNotConsented,
    CaseClosed,
    CaseNotClosed,
    ConsentNotGiven,
    ContactNotConsented,
    DomainError,
    FeedbackLoopClosed,
    FeedbackRequiredForClosure,
    IdentityDisclosureNotConsented,
    InvalidCode,
    InvalidCommand,
    InvalidDuplicate,
    InvalidReferralTransition,
    NoInvestigatingEntity,
    NotAFocalPoint,
    NotAnAllegation,
    NotAssessed,
    NotReferredForInvestigation,
    OutcomeRequiredForClosure,
    ResponseRequired,
    SameAgency,
    ServiceNotOffered,
    UnknownAgency,
    WrongInvestigatingEntity,
)
from domain.feedback import Feedback
from domain.network import Network
from domain.policy import NetworkPolicy
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
    Sector,
    ServiceType,
    SharedItem,
    TransferReason,
)
from tests.unit.conftest import (
    CLINIC,
    COORDINATOR,
    FOCAL_POINT,
    NGO_FOCAL_POINT,
    NGO_INVESTIGATOR,
    OPERATOR,
    OTHER_FOCAL_POINT,
    WFP_INVESTIGATOR,
    allegation,
    at,
)


def refused(aggregate: object, error: type[DomainError], command: Callable[[], object]) -> None:
    """The command raises ``error`` and the aggregate records nothing."""
    version = aggregate.version  # type: ignore[attr-defined]
    pending = len(aggregate.pending_events)  # type: ignore[attr-defined]
    with pytest.raises(error):
        command()
    assert aggregate.version == version  # type: ignore[attr-defined]
    assert len(aggregate.pending_events) == pending  # type: ignore[attr-defined]


def assess_sea(case: Case, network: Network, **changes: object) -> None:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=allegation(**changes),
        at=at(1),
    )


def consent(case: Case, kind: ConsentKind) -> None:
    case.give_consent(actor=FOCAL_POINT, kind=kind, given_by=ConsentGiver.SURVIVOR, at=at(2))


def refer(case: Case, network: Network, *shared: SharedItem, entity: str = "ngo-a-oig"):
    return lambda: case.refer_for_investigation(
        network,
        actor=FOCAL_POINT,
        entity=entity,
        shared=(SharedItem.ALLEGATION_SUMMARY, *shared),
        at=at(3),
    )


# --- investigation referral ---


def test_allegation_cannot_be_referred_before_assessment(case: Case, network: Network) -> None:
    refused(case, NotAnAllegation, refer(case, network))


def test_other_sensitive_complaint_cannot_be_referred_for_investigation(
    case: Case, network: Network
) -> None:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.OTHER_SENSITIVE,
        allegation=None,
        at=at(1),
    )
    refused(case, NotAnAllegation, refer(case, network))


def test_referral_must_go_to_the_implicated_agencys_investigating_entity(
    case: Case, network: Network
) -> None:
    assess_sea(case, network)
    refused(case, WrongInvestigatingEntity, refer(case, network, entity="wfp-oig"))


def test_referral_needs_a_known_implicated_agency(case: Case, network: Network) -> None:
    assess_sea(case, network, implicated_agency=None)
    refused(case, NotAnAllegation, refer(case, network))


def test_referral_needs_the_agency_to_have_an_investigating_entity(network: Network) -> None:
    network.register_agency(
        actor=COORDINATOR, code="cbo-x", name="CBO X", agency_type=AgencyType.OTHER, at=at(0)
    )
    case = Case.receive(
        actor=OPERATOR,
        received_at=at(0),
        channel=Channel.IN_PERSON,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative="seen at the market",
        complainant=None,
        survivor=None,
        network=network,
        at=at(0),
    )
    assess_sea(case, network, implicated_agency="cbo-x")
    refused(case, NoInvestigatingEntity, refer(case, network, entity="cbo-x-investigations"))


def test_allegation_is_referred_only_once(case: Case, network: Network) -> None:
    assess_sea(case, network)
    refer(case, network)()
    refused(case, AlreadyReferredForInvestigation, refer(case, network))


def test_assessment_cannot_change_after_referral(case: Case, network: Network) -> None:
    assess_sea(case, network)
    refer(case, network)()
    refused(case, AssessmentLocked, lambda: assess_sea(case, network, implicated_agency="wfp"))


# --- identity and consent ---


def test_identity_goes_to_investigators_only_with_disclosure_consent(
    case: Case, network: Network
) -> None:
    assess_sea(case, network)
    refused(
        case, IdentityDisclosureNotConsented, refer(case, network, SharedItem.SURVIVOR_IDENTITY)
    )
    refused(case, IdentityDisclosureNotConsented, refer(case, network, SharedItem.CONTACT_DETAILS))
    refused(case, IdentityDisclosureNotConsented, refer(case, network, SharedItem.NARRATIVE))


def test_identity_goes_to_investigators_when_the_survivor_consented(
    case: Case, network: Network
) -> None:
    assess_sea(case, network)
    consent(case, ConsentKind.IDENTITY_DISCLOSURE)
    refer(case, network, SharedItem.SURVIVOR_IDENTITY)()
    assert case.investigation is not None and case.investigation.identity_shared


def test_withdrawn_disclosure_consent_stops_identity_sharing(case: Case, network: Network) -> None:
    assess_sea(case, network)
    consent(case, ConsentKind.IDENTITY_DISCLOSURE)
    case.withdraw_consent(actor=FOCAL_POINT, kind=ConsentKind.IDENTITY_DISCLOSURE, at=at(3))
    refused(
        case, IdentityDisclosureNotConsented, refer(case, network, SharedItem.SURVIVOR_IDENTITY)
    )


def test_allegation_is_referred_without_identity_when_survivor_declines(
    case: Case, network: Network
) -> None:
    # survivor-centred is not survivor-led: the allegation still goes, identifying details don't
    assess_sea(case, network)
    refer(case, network)()
    assert case.investigation is not None and not case.investigation.identity_shared


def test_transfer_sharing_identity_needs_disclosure_consent(case: Case, network: Network) -> None:
    refused(
        case,
        IdentityDisclosureNotConsented,
        lambda: case.transfer(
            network,
            actor=FOCAL_POINT,
            to_agency="ngo-a",
            reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
            shared=(SharedItem.SURVIVOR_IDENTITY,),
            note=None,
            at=at(1),
        ),
    )


def test_withdrawing_a_consent_never_given_is_refused(case: Case) -> None:
    refused(
        case,
        ConsentNotGiven,
        lambda: case.withdraw_consent(actor=FOCAL_POINT, kind=ConsentKind.CONTACT, at=at(1)),
    )


def test_contact_consent_says_how(case: Case) -> None:
    refused(
        case,
        InvalidCommand,
        lambda: case.give_consent(
            actor=FOCAL_POINT, kind=ConsentKind.CONTACT, given_by=ConsentGiver.SURVIVOR, at=at(1)
        ),
    )


# --- assistance ---


def refer_assistance(case: Case, network: Network, **changes: object):
    values: dict[str, object] = {
        "actor": FOCAL_POINT,
        "service_type": ServiceType.MEDICAL,
        "provider": "clinic-1",
        "area": "SS0101",
        "share_contact": False,
        "at": at(4),
    }
    values.update(changes)
    return lambda: case.refer_for_assistance(network, **values)  # type: ignore[arg-type]


def test_no_assistance_referral_without_the_survivors_consent(case: Case, network: Network) -> None:
    refused(case, AssistanceNotConsented, refer_assistance(case, network))


def test_no_assistance_referral_after_consent_is_withdrawn(case: Case, network: Network) -> None:
    consent(case, ConsentKind.ASSISTANCE_REFERRAL)
    case.withdraw_consent(actor=FOCAL_POINT, kind=ConsentKind.ASSISTANCE_REFERRAL, at=at(3))
    refused(case, AssistanceNotConsented, refer_assistance(case, network))


def test_contact_details_go_to_a_provider_only_with_contact_consent(
    case: Case, network: Network
) -> None:
    consent(case, ConsentKind.ASSISTANCE_REFERRAL)
    refused(case, ContactNotConsented, refer_assistance(case, network, share_contact=True))


def test_assistance_goes_only_to_a_provider_offering_the_service(
    case: Case, network: Network
) -> None:
    consent(case, ConsentKind.ASSISTANCE_REFERRAL)
    refused(
        case, ServiceNotOffered, refer_assistance(case, network, service_type=ServiceType.LEGAL)
    )


def make_referral(case: Case, network: Network) -> AssistanceReferral:
    consent(case, ConsentKind.ASSISTANCE_REFERRAL)
    referral = refer_assistance(case, network)()
    assert isinstance(referral, AssistanceReferral)
    return referral


def test_referral_cannot_be_delivered_before_it_is_accepted(case: Case, network: Network) -> None:
    referral = make_referral(case, network)
    refused(referral, InvalidReferralTransition, lambda: referral.deliver(actor=CLINIC, at=at(5)))


def test_only_the_provider_accepts_its_referral(case: Case, network: Network) -> None:
    referral = make_referral(case, network)
    other_provider = Actor("x", "clinic-2", Role.SERVICE_PROVIDER)
    refused(referral, ActionNotPermitted, lambda: referral.accept(actor=other_provider, at=at(5)))
    refused(referral, ActionNotPermitted, lambda: referral.accept(actor=FOCAL_POINT, at=at(5)))


def test_declined_referral_stays_declined(case: Case, network: Network) -> None:
    referral = make_referral(case, network)
    referral.decline_by_provider(actor=CLINIC, reason="no capacity", at=at(5))
    refused(referral, InvalidReferralTransition, lambda: referral.accept(actor=CLINIC, at=at(6)))


# --- closure ---


def test_sea_case_closes_only_with_an_outcome_or_a_reason(case: Case, network: Network) -> None:
    assess_sea(case, network)
    case.give_feedback(
        actor=FOCAL_POINT, message="received", channel=FeedbackChannel.PHONE, at=at(2)
    )
    refused(
        case,
        OutcomeRequiredForClosure,
        lambda: case.close(actor=FOCAL_POINT, reason=ClosureReason.OTHER, at=at(3)),
    )
    case.close(
        actor=FOCAL_POINT,
        reason=ClosureReason.INSUFFICIENT_INFORMATION,
        no_outcome_reason="perpetrator could not be identified",
        at=at(3),
    )
    assert case.is_closed


def test_sea_case_closes_only_with_feedback_given_or_a_reason(case: Case, network: Network) -> None:
    assess_sea(case, network)
    refer(case, network)()
    case.record_investigation_outcome(
        actor=NGO_INVESTIGATOR, outcome=InvestigationOutcome.NOT_SUBSTANTIATED, at=at(9)
    )
    refused(
        case,
        FeedbackRequiredForClosure,
        lambda: case.close(
            actor=FOCAL_POINT, reason=ClosureReason.INVESTIGATION_CONCLUDED, at=at(10)
        ),
    )
    case.close(
        actor=FOCAL_POINT,
        reason=ClosureReason.INVESTIGATION_CONCLUDED,
        no_feedback_reason="complainant unreachable after three attempts",
        at=at(10),
    )
    assert case.is_closed


def test_unassessed_case_cannot_be_closed(case: Case) -> None:
    refused(
        case,
        NotAssessed,
        lambda: case.close(actor=FOCAL_POINT, reason=ClosureReason.OTHER, at=at(1)),
    )


def closed(case: Case, network: Network) -> Case:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.OTHER_SENSITIVE,
        allegation=None,
        at=at(1),
    )
    case.close(actor=FOCAL_POINT, reason=ClosureReason.REFERRED_TO_AGENCY_PROCEDURE, at=at(2))
    return case


def test_nothing_happens_on_a_closed_case_but_reopening(case: Case, network: Network) -> None:
    closed(case, network)
    commands: list[Callable[[], object]] = [
        lambda: assess_sea(case, network),
        lambda: case.assign_focal_points(
            network, actor=FOCAL_POINT, focal_points=("fp-unhcr-1",), at=at(3)
        ),
        lambda: case.transfer(
            network,
            actor=FOCAL_POINT,
            to_agency="wfp",
            reason=TransferReason.OTHER,
            shared=(),
            note=None,
            at=at(3),
        ),
        lambda: consent(case, ConsentKind.ASSISTANCE_REFERRAL),
        lambda: case.withdraw_consent(actor=FOCAL_POINT, kind=ConsentKind.CONTACT, at=at(3)),
        refer_assistance(case, network),
        refer(case, network),
        lambda: case.acknowledge_investigation(actor=NGO_INVESTIGATOR, at=at(3)),
        lambda: case.record_investigation_outcome(
            actor=NGO_INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(3)
        ),
        lambda: case.give_feedback(
            actor=FOCAL_POINT, message="m", channel=FeedbackChannel.SMS, at=at(3)
        ),
        lambda: case.mark_as_duplicate_of(actor=FOCAL_POINT, original=case, at=at(3)),
        lambda: case.close(actor=FOCAL_POINT, reason=ClosureReason.OTHER, at=at(3)),
    ]
    for command in commands:
        refused(case, CaseClosed, command)
    case.reopen(actor=FOCAL_POINT, reason="new information from the survivor", at=at(4))
    assert not case.is_closed and case.reopened_count == 1
    case.give_feedback(actor=FOCAL_POINT, message="reopened", channel=FeedbackChannel.SMS, at=at(5))


def test_open_case_cannot_be_reopened(case: Case) -> None:
    refused(case, CaseNotClosed, lambda: case.reopen(actor=FOCAL_POINT, reason="x", at=at(1)))


# --- custody ---


def test_transfer_changes_the_custodian_agency(case: Case, network: Network) -> None:
    case.assign_focal_points(network, actor=FOCAL_POINT, focal_points=("fp-unhcr-1",), at=at(1))
    case.transfer(
        network,
        actor=FOCAL_POINT,
        to_agency="ngo-a",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        note=None,
        at=at(2),
    )
    # then the new agency holds it, the old one can no longer act on it
    assert case.custodian == "ngo-a" and case.focal_points == ()
    refused(case, ActionNotPermitted, lambda: assess_sea(case, network))
    case.assign_focal_points(network, actor=NGO_FOCAL_POINT, focal_points=("fp-ngo-1",), at=at(3))
    assert case.focal_points == ("fp-ngo-1",)


def test_transfer_to_the_agency_already_holding_is_refused(case: Case, network: Network) -> None:
    refused(
        case,
        SameAgency,
        lambda: case.transfer(
            network,
            actor=FOCAL_POINT,
            to_agency="unhcr",
            reason=TransferReason.OTHER,
            shared=(),
            note=None,
            at=at(1),
        ),
    )


def test_transfer_to_an_unregistered_agency_is_refused(case: Case, network: Network) -> None:
    refused(
        case,
        UnknownAgency,
        lambda: case.transfer(
            network,
            actor=FOCAL_POINT,
            to_agency="nobody",
            reason=TransferReason.OTHER,
            shared=(),
            note=None,
            at=at(1),
        ),
    )


def test_another_agencys_focal_point_cannot_act_on_the_case(case: Case, network: Network) -> None:
    refused(
        case,
        ActionNotPermitted,
        lambda: case.assess(
            network,
            actor=OTHER_FOCAL_POINT,
            category=ComplaintCategory.OTHER_SENSITIVE,
            allegation=None,
            at=at(1),
        ),
    )


def test_intake_operator_cannot_assess(case: Case, network: Network) -> None:
    refused(
        case,
        ActionNotPermitted,
        lambda: case.assess(
            network,
            actor=OPERATOR,
            category=ComplaintCategory.OTHER_SENSITIVE,
            allegation=None,
            at=at(1),
        ),
    )


def test_only_appointed_focal_points_are_assigned(case: Case, network: Network) -> None:
    refused(
        case,
        NotAFocalPoint,
        lambda: case.assign_focal_points(
            network, actor=FOCAL_POINT, focal_points=("fp-ngo-1",), at=at(1)
        ),
    )


def test_only_the_implicated_agencys_entity_acknowledges(case: Case, network: Network) -> None:
    assess_sea(case, network)
    refer(case, network)()
    refused(
        case,
        ActionNotPermitted,
        lambda: case.acknowledge_investigation(actor=WFP_INVESTIGATOR, at=at(5)),
    )
    refused(
        case,
        ActionNotPermitted,
        lambda: case.acknowledge_investigation(actor=FOCAL_POINT, at=at(5)),
    )


def test_outcome_needs_a_referral(case: Case, network: Network) -> None:
    assess_sea(case, network)
    refused(
        case,
        NotReferredForInvestigation,
        lambda: case.record_investigation_outcome(
            actor=NGO_INVESTIGATOR, outcome=InvestigationOutcome.SUBSTANTIATED, at=at(5)
        ),
    )


# --- assessment values ---


def test_subtype_must_belong_to_the_allegation_type(case: Case, network: Network) -> None:
    refused(
        case,
        InvalidCommand,
        lambda: assess_sea(
            case,
            network,
            allegation_type=AllegationType.SEXUAL_EXPLOITATION,
            subtype=AllegationSubtype.RAPE,
        ),
    )


def test_child_victim_must_be_marked_as_child_involved(case: Case, network: Network) -> None:
    refused(
        case,
        InvalidCommand,
        lambda: assess_sea(
            case, network, victim_age_band=AgeBand.CHILD_12_17, child_involved=False
        ),
    )


def test_sea_assessment_needs_allegation_details(case: Case, network: Network) -> None:
    refused(
        case,
        InvalidCommand,
        lambda: case.assess(
            network,
            actor=FOCAL_POINT,
            category=ComplaintCategory.SEA_ALLEGATION,
            allegation=None,
            at=at(1),
        ),
    )


def test_implicated_agency_must_be_registered(case: Case, network: Network) -> None:
    refused(case, UnknownAgency, lambda: assess_sea(case, network, implicated_agency="ghost"))


# --- duplicates ---


def test_case_cannot_duplicate_itself_or_a_duplicate(case: Case, network: Network) -> None:
    refused(
        case,
        InvalidDuplicate,
        lambda: case.mark_as_duplicate_of(actor=FOCAL_POINT, original=case, at=at(1)),
    )
    second = Case.receive(
        actor=OPERATOR,
        received_at=at(0),
        channel=Channel.SMS_MESSAGING,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative="same incident, by SMS",
        complainant=None,
        survivor=None,
        network=network,
        at=at(1),
    )
    second.mark_as_duplicate_of(actor=FOCAL_POINT, original=case, at=at(2))
    refused(
        case,
        InvalidDuplicate,
        lambda: case.mark_as_duplicate_of(actor=FOCAL_POINT, original=second, at=at(3)),
    )
    second.close(actor=FOCAL_POINT, reason=ClosureReason.DUPLICATE, at=at(4))
    assert second.is_closed and second.duplicate_of == case.id


# --- intake ---


def test_complaint_needs_a_narrative_and_a_registered_receiving_agency(network: Network) -> None:
    def receive(actor: Actor, narrative: str) -> Case:
        return Case.receive(
            actor=actor,
            received_at=at(0),
            channel=Channel.WEB_FORM,
            complainant_role=ComplainantRole.OTHER,
            immediate_safety_risk=False,
            narrative=narrative,
            complainant=None,
            survivor=None,
            network=network,
            at=at(0),
        )

    with pytest.raises(InvalidCommand):
        receive(OPERATOR, "   ")
    with pytest.raises(UnknownAgency):
        receive(Actor("op", "ghost", Role.INTAKE_OPERATOR), "text")


def test_complaint_cannot_be_received_after_it_is_recorded(network: Network) -> None:
    with pytest.raises(InvalidCommand):
        Case.receive(
            actor=OPERATOR,
            received_at=at(2),
            channel=Channel.WEB_FORM,
            complainant_role=ComplainantRole.OTHER,
            immediate_safety_risk=False,
            narrative="text",
            complainant=None,
            survivor=None,
            network=network,
            at=at(1),
        )


# --- network registry and policy ---


def test_only_the_coordinator_maintains_the_registry(network: Network) -> None:
    refused(
        network,
        ActionNotPermitted,
        lambda: network.register_agency(
            actor=FOCAL_POINT, code="x", name="X", agency_type=AgencyType.OTHER, at=at(1)
        ),
    )


def test_agency_codes_are_safe_subject_tokens_and_unique(network: Network) -> None:
    for bad in ("UNHCR", "a.b", "a b", "", "x" * 40, "a>"):
        refused(
            network,
            InvalidCode,
            lambda bad=bad: network.register_agency(
                actor=COORDINATOR, code=bad, name="X", agency_type=AgencyType.OTHER, at=at(1)
            ),
        )
    refused(
        network,
        AgencyAlreadyRegistered,
        lambda: network.register_agency(
            actor=COORDINATOR, code="unhcr", name="X", agency_type=AgencyType.OTHER, at=at(1)
        ),
    )


def test_policy_has_the_domain_defaults_and_refuses_nonsense() -> None:
    policy = NetworkPolicy()
    assert policy.assess_within == timedelta(hours=24)
    assert policy.offer_assistance_within == timedelta(hours=24)
    assert policy.refer_for_investigation_within == timedelta(hours=24)
    assert policy.acknowledge_within == timedelta(days=7)
    assert policy.feedback_every == timedelta(days=30)
    assert policy.suppression_threshold == 5
    with pytest.raises(InvalidCommand):
        NetworkPolicy(assess_within=timedelta(0))
    with pytest.raises(InvalidCommand):
        NetworkPolicy(suppression_threshold=1)


def test_network_lists_providers_by_service_and_area(network: Network) -> None:
    assert network.providers_of(ServiceType.MEDICAL, "SS0101") == ["clinic-1"]
    assert network.providers_of(ServiceType.MEDICAL, "SS0202") == []
    assert network.providers_of(ServiceType.LEGAL) == []


# --- community feedback ---


def test_feedback_loop_closes_only_after_a_response(network: Network) -> None:
    feedback = Feedback.receive(
        actor=OPERATOR,
        channel=Channel.HOTLINE,
        category=FeedbackCategory.SUGGESTION,
        sector=Sector.FOOD_SECURITY,
        concerned_agency="wfp",
        text="distribute earlier in the day",
        network=network,
        at=at(0),
    )
    refused(feedback, ResponseRequired, lambda: feedback.close_loop(actor=COORDINATOR, at=at(1)))
    refused(
        feedback,
        ActionNotPermitted,
        lambda: feedback.respond(actor=NGO_FOCAL_POINT, response="ok", at=at(1)),
    )
    feedback.respond(actor=OTHER_FOCAL_POINT, response="we will", at=at(2))
    feedback.close_loop(actor=OTHER_FOCAL_POINT, at=at(3))
    refused(
        feedback,
        FeedbackLoopClosed,
        lambda: feedback.respond(actor=OTHER_FOCAL_POINT, response="again", at=at(4)),
    )


# --- times and identifiers ---


def test_times_without_a_zone_are_refused(case: Case, network: Network) -> None:
    naive = at(1).replace(tzinfo=None)
    refused(
        case,
        InvalidCommand,
        lambda: case.give_feedback(
            actor=FOCAL_POINT, message="m", channel=FeedbackChannel.SMS, at=naive
        ),
    )
    with pytest.raises(InvalidCommand):
        Case.receive(
            actor=OPERATOR,
            received_at=naive,
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.OTHER,
            immediate_safety_risk=False,
            narrative="text",
            complainant=None,
            survivor=None,
            network=network,
            at=at(1),
        )


def test_user_ids_are_account_identifiers_not_names_or_addresses(network: Network) -> None:
    for not_an_id in ("Amina Deng", "amina@example.org", "", " fp-1"):
        with pytest.raises(InvalidCode) as refusal:
            Actor(not_an_id, "unhcr", Role.FOCAL_POINT)
        assert not_an_id.strip() == "" or not_an_id not in str(refusal.value)
    refused(
        network,
        InvalidCode,
        lambda: network.appoint_focal_point(
            actor=COORDINATOR, agency="unhcr", user="Amina Deng", at=at(1)
        ),
    )


def test_history_cannot_run_backwards_in_time(case: Case, network: Network) -> None:
    case.give_feedback(actor=FOCAL_POINT, message="m", channel=FeedbackChannel.SMS, at=at(5))
    refused(
        case,
        InvalidCommand,
        lambda: case.give_feedback(
            actor=FOCAL_POINT, message="m", channel=FeedbackChannel.SMS, at=at(4)
        ),
    )


def test_only_the_holding_agency_or_provider_follows_up_a_referral(
    case: Case, network: Network
) -> None:
    referral = make_referral(case, network)
    referral.accept(actor=CLINIC, at=at(5))
    referral.deliver(actor=CLINIC, at=at(6))
    refused(
        referral,
        ActionNotPermitted,
        lambda: referral.follow_up("unhcr", actor=OTHER_FOCAL_POINT, note=None, at=at(7)),
    )
    referral.follow_up("unhcr", actor=FOCAL_POINT, note=None, at=at(7))
