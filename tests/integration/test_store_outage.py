"""The event store's server going away during a command, on a real PostgreSQL (issue #7).

The fault is injected where it happens in production: the connection fails right after the
database committed the command's transaction (the answer lost on the way back), or before
any statement reaches the server. The library retries a call that failed on its
connection; ``ComplaintMechanism`` then tells what was recorded, and the API says it:
recorded (2xx), nothing recorded (503), or not known yet (503, outcome unknown: a retry with
the same Idempotency-Key settles it and records nothing twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from fastapi.testclient import TestClient

from domain.actors import Actor, Role
from domain.case import Case
from domain.errors import VersionConflict
from domain.vocabulary import Channel, ComplainantRole, FeedbackChannel
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.event_store.config import EventStoreUnreachable, OutageGuard
from services.event_store.errors import EventStoreUnavailable, OutcomeUnknown
from services.settings import Settings
from tests.api_world import build_network, make_world

pytestmark = pytest.mark.postgres

OPERATOR = Actor("op-unhcr", "unhcr", Role.INTAKE_OPERATOR)


@pytest.fixture
def app(postgres_url: str, tmp_path: Path) -> Iterator[ComplaintMechanism]:
    application = complaint_mechanism(Settings(data_dir=tmp_path, event_store=postgres_url))
    yield application
    application.close()


def guard_of(app: ComplaintMechanism) -> OutageGuard:
    guard = app.store_connections
    assert isinstance(guard, OutageGuard)
    return guard


@contextmanager
def answer_lost_after_commit(
    app: ComplaintMechanism, *, then_server_down: bool = False
) -> Iterator[list[int]]:
    """The next insert's connection fails right after its transaction committed (once);
    with ``then_server_down`` the server also refuses connections from then on, until the
    block ends. Yields a list that gets one item per failure injected."""
    guard = guard_of(app)
    real_connection: Callable[[], AbstractContextManager[Any]] = guard._get_connection
    real_insert = app.recorder.insert_events
    real_probe = guard._probe
    armed: list[bool] = []
    injected: list[int] = []

    @contextmanager
    def connection() -> Iterator[Any]:
        with real_connection() as conn:
            yield conn
        if armed:
            armed.clear()
            injected.append(1)
            if then_server_down:
                guard._probe = lambda: False  # type: ignore[method-assign]
            raise OperationalError("consuming input failed: server closed the connection")

    def insert(*args: Any, **kwargs: Any) -> Any:
        armed.append(True)
        return real_insert(*args, **kwargs)

    guard._get_connection = connection  # type: ignore[method-assign]
    app.recorder.insert_events = insert  # type: ignore[method-assign]
    try:
        yield injected
    finally:
        guard._get_connection = real_connection  # type: ignore[method-assign]
        app.recorder.insert_events = real_insert  # type: ignore[method-assign]
        server_back(guard, real_probe)


def server_back(guard: OutageGuard, probe: Callable[[], bool]) -> None:
    """The server answers again: the guard's next probe (made at once) connects."""
    guard._probe = probe  # type: ignore[method-assign]
    guard._probed_at = 0.0


def complaint(app: ComplaintMechanism, narrative: str) -> Any:
    now = datetime.now(UTC)
    return app.receive_complaint(
        actor=OPERATOR,
        at=now,
        received_at=now - timedelta(minutes=5),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=False,
        narrative=narrative,
    )


def complaints(app: ComplaintMechanism, narrative: str) -> int:
    found = 0
    for notification in app.recorder.select_notifications(1, 100_000):
        event = app.mapper.to_domain_event(notification)
        found += isinstance(event, Case.Received) and event.narrative == narrative
    return found


def test_a_command_whose_commit_answer_was_lost_is_answered_as_recorded(
    app: ComplaintMechanism,
) -> None:
    build_network(app)
    # given the answer of the commit lost, the library retries: the retry collides with it
    with answer_lost_after_commit(app) as injected:
        written = complaint(app, "answer lost")
    assert injected == [1]
    # then the command is answered as what it is: recorded, once, at its position
    assert complaints(app, "answer lost") == 1
    assert app.get_case(written.id).version == written.version == 1
    assert written.position == app.position_of(written.id, 1)


def test_a_race_lost_to_another_writer_is_still_a_conflict(app: ComplaintMechanism) -> None:
    """Only a try that failed on its connection can have landed: a command that lost a race
    is refused, even against an event equal to its own."""
    build_network(app)
    case = complaint(app, "raced")
    focal_point = Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
    at = datetime.now(UTC)
    first, second = app.get_case(case.id), app.get_case(case.id)
    for loaded in (first, second):
        loaded.give_feedback(
            actor=focal_point, message="same", channel=FeedbackChannel.PHONE, at=at
        )
    app._commit(first)
    with pytest.raises(VersionConflict):
        app._commit(second)


def test_a_command_whose_outcome_cannot_be_asked_is_answered_outcome_unknown(
    app: ComplaintMechanism,
) -> None:
    build_network(app)
    # given the commit's answer lost and the server gone before it can be asked
    with answer_lost_after_commit(app, then_server_down=True), pytest.raises(OutcomeUnknown):
        complaint(app, "unknown outcome")
    # then (the server back) it had been recorded, once
    assert complaints(app, "unknown outcome") == 1


def test_a_command_refused_before_reaching_the_server_recorded_nothing_and_says_so(
    app: ComplaintMechanism,
) -> None:
    build_network(app)
    guard = guard_of(app)
    real_probe = guard._probe
    guard._probe = lambda: False  # type: ignore[method-assign]
    guard._suspect = True  # a call failed on its connection: the next ones probe first
    began = time.monotonic()
    with pytest.raises(EventStoreUnavailable) as refused:
        complaint(app, "refused")
    # at once, not after the library's retries each waited out the pool's timeout
    assert time.monotonic() - began < 1.0
    assert isinstance(refused.value, EventStoreUnreachable)
    assert not isinstance(refused.value, OutcomeUnknown)
    server_back(guard, real_probe)
    assert complaints(app, "refused") == 0


def test_the_api_says_outcome_unknown_and_a_retry_with_the_key_records_nothing_twice(
    app: ComplaintMechanism, tmp_path: Path
) -> None:
    world = make_world(tmp_path / "api", app)
    client = TestClient(world.api)
    body = {
        "received_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "channel": "hotline",
        "complainant_role": "anonymous",
        "narrative": "sent twice",
    }
    headers = world.headers("intake_operator", **{"Idempotency-Key": "k-" + "7" * 30})
    with answer_lost_after_commit(app, then_server_down=True):
        first = client.post("/v1/cases", json=body, headers=headers)
    assert first.status_code == 503, first.text
    assert first.headers["content-type"] == "application/problem+json"
    assert first.headers["retry-after"] == "2"
    assert first.json()["type"] == "urn:cbcm:problem:outcome-unknown"
    again = client.post("/v1/cases", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert complaints(app, "sent twice") == 1
