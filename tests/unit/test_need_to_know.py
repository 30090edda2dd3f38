"""The API's list of a case's personal fields follows the domain's marks, so a personal field
added to the domain cannot reach a reader without a redaction rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.assistance import AssistanceReferral
from domain.case import Allegation, Case, Closure
from domain.need_to_know import (
    CASE_PERSONAL_FIELDS,
    PERSON_FIELDS,
    case_access,
    referral_contact_fields,
)
from domain.personal_data import PersonDetails, personal_data_paths
from domain.vocabulary import (
    IDENTIFYING_ITEMS,
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    ServiceType,
    SharedItem,
    TransferReason,
)
from tests.conftest import T0
from tests.unit.conftest import CLINIC, FOCAL_POINT, OPERATOR, OTHER_FOCAL_POINT, allegation, at
from tests.world import network_aggregate


def test_every_personal_field_the_domain_marks_is_redactable() -> None:
    marked = {
        *(f"allegation.{p}" for p in personal_data_paths(Allegation)),
        *(f"complainant.{p}" for p in personal_data_paths(PersonDetails)),
        *(f"survivor.{p}" for p in personal_data_paths(PersonDetails)),
        *(
            p
            for p in personal_data_paths(Case.Received)
            if not p.startswith(("complainant", "survivor"))
        ),
    }
    assert marked <= set(CASE_PERSONAL_FIELDS)
    assert set(PERSON_FIELDS) == set(personal_data_paths(PersonDetails))


def test_closure_reasons_typed_by_users_are_redactable() -> None:
    free_text = {"no_outcome_reason", "no_feedback_reason"}
    assert free_text <= set(Closure.__dataclass_fields__)
    assert {f"closure.{f}" for f in free_text} <= set(CASE_PERSONAL_FIELDS)


# ------------------------------------------------------------- referrals and transfers
# Attack (review of #21, F1): the case is transferred to wfp sharing only part of it; wfp's
# focal point opens an assistance referral of the case and reads the survivor's name and
# phone there, which the transfer did not share. A referral must show the holding agency's
# focal points no more of the survivor than the case itself shows them.

SHARED_ITEMS = st.sets(st.sampled_from(list(SharedItem)))


@settings(max_examples=60)
@given(shared=SHARED_ITEMS, disclosure=st.booleans(), contact=st.booleans())
def test_a_referral_shows_the_holding_agency_no_more_of_the_survivor_than_its_case(
    shared: set[SharedItem], disclosure: bool, contact: bool
) -> None:
    network = network_aggregate(T0)
    case = Case.receive(
        actor=OPERATOR,
        received_at=T0,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=False,
        narrative="what the survivor said",
        complainant=PersonDetails(name="Amina", phone="+211 900 000 001"),
        survivor=PersonDetails(name="Amina", phone="+211 900 000 001"),
        network=network,
        at=T0,
    )
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=allegation(),
        at=at(1),
    )
    if disclosure:
        case.give_consent(
            actor=FOCAL_POINT,
            kind=ConsentKind.IDENTITY_DISCLOSURE,
            given_by=ConsentGiver.SURVIVOR,
            at=at(2),
        )
    if contact:
        case.give_consent(
            actor=FOCAL_POINT,
            kind=ConsentKind.CONTACT,
            given_by=ConsentGiver.SURVIVOR,
            contact_methods=(ContactMethod.PHONE,),
            at=at(2.5),
        )
    referral = AssistanceReferral.make(
        actor=FOCAL_POINT,
        case_id=case.id,
        service_type=ServiceType.MEDICAL,
        provider=CLINIC.agency,
        area="SS0101",
        contact_shared=contact,
        at=at(3),
    )
    # before the transfer, the agency that received the complaint sees all of the survivor
    before = referral_contact_fields(FOCAL_POINT, referral, case)
    assert {"survivor.name", "survivor.phone"} <= set(before)

    if not disclosure:  # identifying items cannot be shared without the survivor's consent
        shared -= {*IDENTIFYING_ITEMS, SharedItem.COMPLAINANT_IDENTITY}
    case.transfer(
        network,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=tuple(shared),
        note=None,
        at=at(4),
    )
    access = case_access(OTHER_FOCAL_POINT, case, network.policy)
    assert access is not None
    on_referral = set(referral_contact_fields(OTHER_FOCAL_POINT, referral, case))
    assert on_referral <= access.personal
    # and the agency that handed the case over sees nothing of it any more
    assert referral_contact_fields(FOCAL_POINT, referral, case) == ()
