"""Erasure of personal data in the domain: who may, when retention allows, what it blanks,
and whose data each personal field is (the subject that picks its data key)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.errors import ActionNotPermitted, InvalidCommand, RetentionNotDue
from domain.feedback import Feedback
from domain.network import Network
from domain.personal_data import ERASED, DataSubject, PersonDetails, personal_data_fields
from domain.vocabulary import (
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ErasureReason,
)
from tests.unit.conftest import COORDINATOR, FOCAL_POINT, OTHER_FOCAL_POINT, allegation, at


def _closed(case: Case, network: Network) -> Case:
    case.assess(
        network,
        actor=FOCAL_POINT,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=allegation(),
        at=at(1),
    )
    case.close(
        actor=FOCAL_POINT,
        reason=ClosureReason.INSUFFICIENT_INFORMATION,
        no_outcome_reason="nobody could be found",
        no_feedback_reason="no way to reach them",
        at=at(2),
    )
    return case


def test_every_personal_field_names_whose_data_it_is():
    # given the events that carry personal data
    # when their fields are read from the annotations
    received = dict(personal_data_fields(Case.Received))
    assessed = dict(personal_data_fields(Case.Assessed))

    # then each person's details are theirs, the account of the incident the survivor's
    assert received["complainant.name"] is DataSubject.COMPLAINANT
    assert received["survivor.phone"] is DataSubject.SURVIVOR
    assert received["narrative"] is DataSubject.SURVIVOR
    assert assessed["allegation.alleged_perpetrator"] is DataSubject.ALLEGED_PERPETRATOR
    assert assessed["allegation.incident_place_detail"] is DataSubject.SURVIVOR
    assert dict(personal_data_fields(Case.FeedbackGiven))["message"] is DataSubject.COMPLAINANT
    assert dict(personal_data_fields(Case.Transferred))["note"] is DataSubject.CASE
    assert dict(personal_data_fields(AssistanceReferral.FollowedUp))["note"] is DataSubject.SURVIVOR
    assert dict(personal_data_fields(Feedback.Received))["text"] is DataSubject.COMPLAINANT


def test_erasing_the_survivors_data_blanks_it_and_leaves_everything_else(network):
    # given a closed case a witness reported, with details of survivor, complainant and
    # alleged perpetrator
    case = Case.receive(
        actor=Actor("op-1", "unhcr", Role.INTAKE_OPERATOR),
        received_at=at(0),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative="what the survivor said",
        complainant=PersonDetails(name="Amina", phone="+211 900 000 001"),
        survivor=PersonDetails(name="Hawa", phone="+211 900 000 002"),
        network=network,
        at=at(0),
    )
    _closed(case, network)

    # when the survivor's data is erased on request
    case.erase_personal_data(
        network,
        actor=FOCAL_POINT,
        subjects=(DataSubject.SURVIVOR,),
        reason=ErasureReason.SURVIVOR_REQUEST,
        records=(),
        at=at(3),
    )

    # then the survivor's details, the account and the place are erased, nothing else
    assert case.narrative == ERASED
    assert case.survivor == PersonDetails(name=ERASED, phone=ERASED)
    assert case.assessment is not None and case.assessment.allegation is not None
    assert case.assessment.allegation.incident_place_detail == ERASED
    assert case.assessment.allegation.alleged_perpetrator == "driver called M."
    assert case.complainant == PersonDetails(name="Amina", phone="+211 900 000 001")
    assert case.closure is not None and case.closure.no_outcome_reason == "nobody could be found"
    assert case.erased_subjects == {DataSubject.SURVIVOR}
    assert case.status is not None  # the case's facts are untouched


def test_retention_erases_only_after_the_policys_period_since_closure(case, network):
    # given a case closed at hour 2 under the default retention (5 years)
    _closed(case, network)
    due = at(2) + network.policy.personal_data_retention
    version = case.version

    # when retention is applied a minute early, then it is refused and nothing is recorded
    with pytest.raises(RetentionNotDue):
        case.erase_personal_data(
            network,
            actor=COORDINATOR,
            subjects=tuple(DataSubject),
            reason=ErasureReason.RETENTION_EXPIRED,
            records=(),
            at=due - timedelta(minutes=1),
        )
    assert case.version == version

    # and when it is applied on time, everyone's data goes
    case.erase_personal_data(
        network,
        actor=COORDINATOR,
        subjects=tuple(DataSubject),
        reason=ErasureReason.RETENTION_EXPIRED,
        records=(),
        at=due,
    )
    assert case.closure is not None and case.closure.no_feedback_reason == ERASED
    assert case.complainant == PersonDetails(name=ERASED, phone=ERASED)


def test_an_open_case_is_never_erased_by_retention(case, network):
    with pytest.raises(RetentionNotDue):
        case.erase_personal_data(
            network,
            actor=COORDINATOR,
            subjects=tuple(DataSubject),
            reason=ErasureReason.RETENTION_EXPIRED,
            records=(),
            at=at(10**6),
        )


@pytest.mark.parametrize(
    ("actor", "reason"),
    [
        (OTHER_FOCAL_POINT, ErasureReason.SURVIVOR_REQUEST),
        (Actor("op-1", "unhcr", Role.INTAKE_OPERATOR), ErasureReason.NETWORK_DECISION),
        (FOCAL_POINT, ErasureReason.RETENTION_EXPIRED),
    ],
)
def test_only_the_holder_or_the_coordinator_erases_and_only_the_coordinator_by_retention(
    case, network, actor, reason
):
    _closed(case, network)
    version = case.version
    with pytest.raises(ActionNotPermitted):
        case.erase_personal_data(
            network,
            actor=actor,
            subjects=(DataSubject.SURVIVOR,),
            reason=reason,
            records=(),
            at=at(10**6),
        )
    assert case.version == version and case.narrative == "what the survivor said"


def test_an_erasure_names_whose_data_it_erases(case, network):
    with pytest.raises(InvalidCommand):
        case.erase_personal_data(
            network,
            actor=FOCAL_POINT,
            subjects=(),
            reason=ErasureReason.SURVIVOR_REQUEST,
            records=(),
            at=at(1),
        )


def test_a_survivor_who_complained_is_erased_as_one_person(case, network):
    # given a case whose complainant is the survivor (the conftest's case)
    # when the survivor's data is erased on request
    case.erase_personal_data(
        network,
        actor=FOCAL_POINT,
        subjects=(DataSubject.SURVIVOR,),
        reason=ErasureReason.SURVIVOR_REQUEST,
        records=(),
        at=at(3),
    )

    # then their details as complainant go too, and the erasure says so
    assert case.complainant == PersonDetails(name=ERASED, phone=ERASED)
    assert case.erased_subjects == {DataSubject.SURVIVOR, DataSubject.COMPLAINANT}
