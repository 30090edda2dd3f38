"""The application's rules, on the library's in-memory store: what a command refuses, what
it changes and what it answers do not depend on the store (those that do are in
``tests/integration/test_application.py``, on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from domain.case import CaseStatus
from domain.errors import NotAnAllegation, NotFound, UnknownAgency, VersionConflict
from domain.feedback import Feedback
from domain.vocabulary import (
    AgencyType,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    FeedbackCategory,
    ReferralStatus,
    Sector,
    SharedItem,
    TransferReason,
)
from services.application.commands import expecting
from services.application.mechanism import ComplaintMechanism
from tests.conftest import T0
from tests.in_memory import in_memory_mechanism
from tests.scenario import accepted_referral, at, event_count, receive, walk_sea_case
from tests.world import COORDINATOR, FOCAL_POINT, establish


@pytest.fixture
def app() -> Iterator[ComplaintMechanism]:
    """The application on the in-memory store, with the test network."""
    application = in_memory_mechanism()
    establish(application, T0)
    yield application
    application.close()


def test_sea_case_walks_the_whole_workflow(app: ComplaintMechanism) -> None:
    case_id = walk_sea_case(app)
    case = app.get_case(case_id)
    assert case.is_closed and case.status is CaseStatus.SUBSTANTIATED
    assert case.version == 10
    referral = app.get_referral(case.assistance_referrals[0])
    assert referral.case_id == case_id and referral.provider == "clinic-1"


def test_state_at_any_earlier_version_can_be_read(app: ComplaintMechanism) -> None:
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


def test_refused_command_records_nothing(app: ComplaintMechanism) -> None:
    case_id = receive(app)
    before = event_count(app)
    with pytest.raises(NotAnAllegation):
        app.refer_for_investigation(
            case_id,
            actor=FOCAL_POINT,
            entity="ngo-a-oig",
            shared=(SharedItem.ALLEGATION_SUMMARY,),
            at=at(1),
        )
    assert event_count(app) == before


def test_unknown_ids_and_ids_of_other_kinds_are_not_found(app: ComplaintMechanism) -> None:
    case_id = receive(app)
    with pytest.raises(NotFound):
        app.get_case(uuid4())
    with pytest.raises(NotFound):
        app.get_referral(case_id)


def test_non_sensitive_complaint_is_forwarded_to_the_feedback_mechanism(
    app: ComplaintMechanism,
) -> None:
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


def test_withdrawing_assistance_consent_declines_the_open_referrals(
    app: ComplaintMechanism,
) -> None:
    # given a survivor referred to a clinic that accepted
    case_id = receive(app)
    referral_id = accepted_referral(app, case_id, given_by=ConsentGiver.SURVIVOR, hour=1)
    # when she withdraws her consent
    app.withdraw_consent(case_id, actor=FOCAL_POINT, kind=ConsentKind.ASSISTANCE_REFERRAL, at=at(4))
    # then the referral is declined by the survivor in the same step
    stopped = app.get_referral(referral_id)
    assert stopped.status is ReferralStatus.DECLINED_BY_SURVIVOR
    assert stopped.status_times[ReferralStatus.DECLINED_BY_SURVIVOR] == at(4)


def test_registry_changes_reach_the_next_command(app: ComplaintMechanism) -> None:
    case_id = receive(app)
    with pytest.raises(UnknownAgency):
        app.transfer_case(
            case_id,
            actor=FOCAL_POINT,
            to_agency="ngo-z",
            reason=TransferReason.CAPACITY,
            shared=(),
            at=at(1),
        )
    app.register_agency(
        actor=COORDINATOR, code="ngo-z", name="NGO Z", agency_type=AgencyType.UN_AGENCY, at=at(1)
    )
    app.transfer_case(
        case_id,
        actor=FOCAL_POINT,
        to_agency="ngo-z",
        reason=TransferReason.CAPACITY,
        shared=(),
        at=at(2),
    )
    assert app.get_case(case_id).custodian == "ngo-z"
