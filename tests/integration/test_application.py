"""The application on a real store, for what depends on it (round trips, stored form, the
store's own concurrency, positions, upcasting, restarts): each test runs on SQLite and on
PostgreSQL. Its rules are tested on the in-memory store
(``tests/unit/test_application_rules.py``)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain.case import Case
from domain.errors import VersionConflict
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    FeedbackChannel,
    ServiceType,
    SharedItem,
)
from services.application.mechanism import ComplaintMechanism
from services.event_store.config import persistence_env
from services.settings import Settings
from tests.conftest import T0
from tests.scenario import ALLEGATION, at, event_count, receive, walk_sea_case
from tests.world import COORDINATOR, FOCAL_POINT, FOCAL_POINTS, OPERATOR, establish


def test_case_replayed_from_the_store_has_the_same_state(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    establish(app, T0)
    case_id = walk_sea_case(app)
    live = app.get_case(case_id)
    replayed = reopen().get_case(case_id)
    assert vars(replayed) == vars(live)
    assert replayed.survivor == PersonDetails(name="Nyandeng", phone="+211 900 000 002")
    assert replayed.assessment is not None and replayed.assessment.allegation == ALLEGATION


def test_concurrent_writer_on_a_stale_copy_gets_a_conflict_not_an_overwrite(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given a second application whose cached copy of the case does not fast-forward
    establish(app, T0)
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


def test_writes_answer_with_the_store_position_of_their_last_event(
    app: ComplaintMechanism,
) -> None:
    establish(app, T0)
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


def test_events_are_stored_as_msgspec_json_and_decode_to_their_types(
    app: ComplaintMechanism,
) -> None:
    establish(app, T0)
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
    establish(app, T0)
    # given a case whose referral was stored by version 1 of the event class
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
            "entity": "ngo-a-oig",
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
        entity="ngo-a-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(2),
    )
    latest = app.recorder.select_events(other, desc=True, limit=1)[0]
    state = app.mapper.cipher.decrypt(latest.state) if app.mapper.cipher else latest.state
    assert msgspec.json.decode(state)["class_version"] == 2


def test_network_registry_survives_a_restart(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    establish(app, T0)
    network = reopen().network()
    assert network.investigating_entity_of("ngo-a") == "ngo-a-oig"
    assert network.agency("unhcr").focal_points == frozenset(FOCAL_POINTS["unhcr"])
    assert network.providers_of(ServiceType.MEDICAL, "SS0101") == ["clinic-1"]
    assert network.agency(COORDINATOR.agency).code == "ocha"
