"""The demo walks cases through the real application, on SQLite and on PostgreSQL.

The tests that only read what one walk of thirty cases (seed 11) left share that walk, one per
store (``walked``); those that walk differently walk on a fresh store of their own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from domain.case import Case
from domain.network import Network
from domain.vocabulary import FeedbackChannel
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.demo.walk import (
    DEMO_RUN_ON,
    DEMO_SPAN,
    PATHS,
    WalkResult,
    build_demo_network,
    walk_cases,
)
from services.settings import Settings
from tests.conftest import fresh_schema
from tests.in_memory import in_memory_mechanism

START = datetime(2025, 9, 1, tzinfo=UTC)
CASES = 30


def _walk(app: ComplaintMechanism, n: int = CASES, seed: int = 11) -> WalkResult:
    build_demo_network(app, START)
    return walk_cases(app, n, random.Random(seed), START)


def _count(app: ComplaintMechanism, event_class: type) -> int:
    topic = get_topic(event_class)
    return len(app.recorder.select_notifications(1, 1_000_000, topics=[topic]))


@dataclass(frozen=True)
class Walked:
    app: ComplaintMechanism
    settings: Settings
    result: WalkResult


def _walked(data_dir: Path, store: str) -> Iterator[Walked]:
    settings = Settings(data_dir=data_dir, event_store=store)
    app = complaint_mechanism(settings)
    try:
        yield Walked(app, settings, _walk(app))
    finally:
        app.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def walked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Walked]:
    """One walk of ``CASES`` cases (seed 11) on a fresh store of each kind, only read after."""
    tmp = tmp_path_factory.mktemp(f"demo-{request.param}")
    if request.param == "sqlite":
        yield from _walked(tmp / "data", f"sqlite:///{tmp / 'events.sqlite3'}")
        return
    with fresh_schema(request.getfixturevalue("postgres_server_url")) as url:
        yield from _walked(tmp / "data", url)


def test_a_walk_of_thirty_cases_takes_every_workflow_path(walked: Walked) -> None:
    app, result = walked.app, walked.result

    assert len(result.cases) == CASES
    assert set(PATHS) - {"in_progress"} <= set(result.by_path)
    assert _count(app, Case.Received) == CASES


def test_closed_sea_cases_have_an_outcome_or_a_reason_and_feedback_or_a_reason(
    walked: Walked,
) -> None:
    app, result = walked.app, walked.result

    closed_sea = [
        case
        for case in map(app.get_case, result.cases)
        if case.is_closed and case.is_sea_allegation and case.duplicate_of is None
    ]
    assert closed_sea
    for case in closed_sea:
        assert case.closure is not None
        has_outcome = case.investigation is not None and case.investigation.outcome is not None
        assert has_outcome or case.closure.no_outcome_reason
        assert case.feedback_given_at or case.closure.no_feedback_reason


def test_anonymous_complainants_get_feedback_through_their_receipt_code(walked: Walked) -> None:
    app, result = walked.app, walked.result

    anonymous = [case_id for case_id, path in result.cases.items() if path == "anonymous"]
    assert anonymous
    for case_id in anonymous:
        feedback = [e for e in app.case_history(case_id) if isinstance(e, Case.FeedbackGiven)]
        assert feedback
        assert {e.channel for e in feedback} == {FeedbackChannel.RECEIPT_CODE}


def test_non_sensitive_feedback_reaches_the_concerned_agencys_cfm(walked: Walked) -> None:
    app, result = walked.app, walked.result

    assert result.feedback_items
    items = [app.get_feedback(feedback_id) for feedback_id in result.feedback_items]
    assert {item.source_case_id for item in items} <= set(result.cases)
    assert any(item.loop_closed_at is not None for item in items)


def test_cases_read_back_by_a_fresh_application_equal_the_walked_ones(walked: Walked) -> None:
    app, result = walked.app, walked.result

    fresh = complaint_mechanism(walked.settings)
    try:
        for case_id in result.cases:
            assert vars(fresh.get_case(case_id)) == vars(app.get_case(case_id))
        for referral_id in result.referrals:
            assert vars(fresh.get_referral(referral_id)) == vars(app.get_referral(referral_id))
        for feedback_id in result.feedback_items:
            assert vars(fresh.get_feedback(feedback_id)) == vars(app.get_feedback(feedback_id))
    finally:
        fresh.close()


def test_running_the_demo_again_adds_cases_to_the_same_network(
    app: ComplaintMechanism, reopen: Callable[[], ComplaintMechanism]
) -> None:
    _walk(app, n=12, seed=1)
    network_version = app.network().version

    again = reopen()
    _walk(again, n=12, seed=2)

    assert again.network().version == network_version
    assert _count(again, Network.Established) == 1
    assert _count(again, Case.Received) == 24


def test_simulated_time_never_runs_past_the_end_of_the_demo_period(walked: Walked) -> None:
    app, result = walked.app, walked.result

    end = START + DEMO_SPAN + DEMO_RUN_ON
    for case_id in result.cases:
        history = app.case_history(case_id)
        times = [e.timestamp for e in history]
        assert times == sorted(times)
        assert times[-1] <= end
        received = history[0]
        assert isinstance(received, Case.Received)
        assert received.received_at <= received.timestamp


def test_the_same_seed_walks_the_same_paths(app: ComplaintMechanism) -> None:
    in_memory = in_memory_mechanism()

    first = _walk(app, seed=5)
    second = _walk(in_memory, seed=5)
    in_memory.close()

    assert list(first.cases.values()) == list(second.cases.values())
