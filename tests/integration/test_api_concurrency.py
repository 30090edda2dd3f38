"""Issue #4: "50 concurrent conflicting commands on one case: each is applied in order or
answered 409; none lost, none applied twice" - and retried writes (``Idempotency-Key``) take
effect once, however they race.

Everything goes through a real HTTP server (uvicorn on a free port, in a thread) and real
concurrent connections, on SQLite and on PostgreSQL.

The client shares this process (and its GIL) with the server: left alone, the server would take
the racing requests in one by one, each done before the next arrives, and nothing would race.
So the server's app is wrapped in a ``StartingGate``: the requests of a race are held (on the
server's event loop, before the API sees them) until all have arrived, then let go together.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from domain.case import Case
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import RECENTLY, World, make_world

RACERS = 50
PROBLEM_JSON = "application/problem+json"
REPLAYED = "Idempotent-Replayed"

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


RACE_HEADER = "X-Test-Race"


class StartingGate:
    """ASGI wrapper: requests with ``X-Test-Race: <race id>/<n>`` wait until ``n`` requests of
    that race have arrived, then all go on at once. Other requests pass straight through."""

    def __init__(self, app: FastAPI, timeout: float = 20) -> None:
        self.app = app
        self.timeout = timeout
        self.races: dict[str, tuple[asyncio.Event, list[int]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            race = headers.get(RACE_HEADER.lower().encode())
            if race is not None:
                await self._wait(race.decode())
        await self.app(scope, receive, send)

    async def _wait(self, race: str) -> None:
        race_id, n = race.rsplit("/", 1)
        gate, arrived = self.races.setdefault(race_id, (asyncio.Event(), [0]))
        arrived[0] += 1
        if arrived[0] == int(n):
            gate.set()
        # A request that never comes must not hang the test: the racers fail instead.
        await asyncio.wait_for(gate.wait(), self.timeout)


class Served:
    """A uvicorn server on a free port, in a thread of this process."""

    def __init__(self, api: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = StartingGate(api)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_until(
            lambda: self.server.started or not self.thread.is_alive(), 15, "uvicorn to start"
        )
        assert self.server.started, f"uvicorn did not start on port {self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Stack:
    world: World
    url: str

    def race(self, calls: list[Call]) -> list[httpx.Response]:
        """Send every call at once, to be let go together by the server; answers in order."""
        race = f"{uuid.uuid4()}/{len(calls)}"
        gated = [Call(c.method, c.path, c.body, {**c.headers, RACE_HEADER: race}) for c in calls]
        return asyncio.run(_race(self.url, gated))

    def send(self, call: Call) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.request(call.method, call.path, json=call.body, headers=call.headers)


async def _race(url: str, calls: list[Call]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(client.request(c.method, c.path, json=c.body, headers=c.headers) for c in calls)
            )
        )


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[Stack]:
    data_dir = tmp_path / "data"
    mechanism = complaint_mechanism(Settings(data_dir=data_dir, event_store=store_url))
    try:
        world = make_world(data_dir, mechanism)
        served = Served(world.api)
        served.start()
        try:
            yield Stack(world, served.url)
        finally:
            served.stop()
    finally:
        mechanism.close()


# ------------------------------------------------------------------ helpers


def complaint(narrative: str = "told the hotline operator", **extra: Any) -> dict[str, Any]:
    return {
        "received_at": RECENTLY,
        "channel": "hotline",
        "complainant_role": "anonymous",
        "narrative": narrative,
        **extra,
    }


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def intake(stack: Stack, body: dict[str, Any], key: str | None = None) -> Call:
    extra = {} if key is None else {"Idempotency-Key": key}
    return Call("POST", "/v1/cases", body, stack.world.headers("intake_operator", **extra))


def feedback(stack: Stack, case_id: str, body: dict[str, Any], key: str | None = None) -> Call:
    extra = {} if key is None else {"Idempotency-Key": key}
    return Call(
        "POST",
        f"/v1/cases/{case_id}/feedback",
        body,
        stack.world.headers("focal_point_own", **extra),
    )


def open_case(stack: Stack) -> tuple[str, int]:
    """A new case, and its version as its focal point reads it over HTTP."""
    created = stack.send(intake(stack, complaint()))
    assert created.status_code == 201, created.text
    case_id = created.json()["id"]
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        read = client.get(f"/v1/cases/{case_id}", headers=stack.world.headers("focal_point_own"))
    assert read.status_code == 200, read.text
    return case_id, int(read.json()["version"])


def feedback_events(stack: Stack, case_id: str) -> list[Case.FeedbackGiven]:
    history = stack.world.mechanism.case_history(uuid.UUID(case_id))
    return [e for e in history if isinstance(e, Case.FeedbackGiven)]


def topics(stack: Stack) -> Counter[str]:
    """How many stored events of each type (``module:Class.Event``)."""
    notifications = stack.world.mechanism.recorder.select_notifications(1, 10**6)
    return Counter(n.topic for n in notifications)


CASE_RECEIVED = "domain.case:Case.Received"
RECEIPT_ISSUED = "domain.receipt:Receipt.Issued"
KEY_RECORDED = "services.application.idempotency:IdempotentRequest.Recorded"


def statuses(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(a.status_code for a in answers)


def assert_conflict(answer: httpx.Response) -> int:
    """A 409 problem; its ``current_version``."""
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    problem = answer.json()
    assert problem["status"] == 409
    assert isinstance(problem["current_version"], int)
    return int(problem["current_version"])


def written(answer: httpx.Response) -> tuple[str, int, int, str | None]:
    body = answer.json()
    return body["id"], body["version"], body["position"], body["receipt_code"]


# ------------------------------------------------------------------ conflicting commands


def test_one_of_fifty_commands_on_the_same_version_wins_the_others_get_409(
    stack: Stack,
) -> None:
    # Given a case at version v, as its focal point read it
    case_id, version = open_case(stack)
    before = feedback_events(stack, case_id)

    # When 50 feedback commands all decided on version v arrive at once
    messages = [f"decided on v{version}, message {i}" for i in range(RACERS)]
    answers = stack.race(
        [
            feedback(
                stack, case_id, {"message": m, "channel": "phone", "expected_version": version}
            )
            for m in messages
        ]
    )

    # Then exactly one is applied, as version v+1; the 49 others are refused with 409 naming v+1
    assert statuses(answers) == {200: 1, 409: RACERS - 1}, statuses(answers)
    (winner,) = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert answers[winner].json()["id"] == case_id
    assert answers[winner].json()["version"] == version + 1
    for i, answer in enumerate(answers):
        if i != winner:
            assert assert_conflict(answer) == version + 1
    # and the case gained exactly one FeedbackGiven: the winner's message, at v+1
    gained = feedback_events(stack, case_id)[len(before) :]
    assert [(e.message, e.originator_version) for e in gained] == [(messages[winner], version + 1)]
    assert stack.world.mechanism.get_case(uuid.UUID(case_id)).version == version + 1


def test_fifty_commands_without_expected_version_are_each_applied_once_or_refused(
    stack: Stack, store_url: str
) -> None:
    # Given a case at version v
    case_id, version = open_case(stack)

    # When 50 feedback commands with distinct messages and no expected version arrive at once
    messages = [f"unconditional message {i}" for i in range(RACERS)]
    answers = stack.race(
        [feedback(stack, case_id, {"message": m, "channel": "sms"}) for m in messages]
    )

    # Then each is answered 200 or 409 (never a server error, never anything else)
    counts = statuses(answers)
    print(f"\n{store_url.split(':', 1)[0]}: answers {dict(counts)}")
    others = [a.text for a in answers if a.status_code not in (200, 409)]
    assert not others, f"{len(others)} answers neither 200 nor 409: {others}"

    # and the applied ones are exactly the case's new events: none lost, none twice
    final = stack.world.mechanism.get_case(uuid.UUID(case_id)).version
    events = {e.originator_version: e.message for e in feedback_events(stack, case_id)}
    gained = {v: m for v, m in events.items() if v > version}
    applied = {
        messages[i]: a.json()["version"] for i, a in enumerate(answers) if a.status_code == 200
    }
    assert sorted(gained.values()) == sorted(applied)
    # each in order: the version answered is the version its event has, the versions answered
    # are a contiguous run from v+1 to the case's final version
    assert {m: v for v, m in gained.items()} == applied
    assert sorted(applied.values()) == list(range(version + 1, final + 1))
    assert applied, "not one command was applied"
    # and every refusal is a problem; one naming the case's version names one another command
    # reached
    for answer in answers:
        if answer.status_code == 409:
            assert answer.headers["content-type"].startswith(PROBLEM_JSON), answer.text
            current = answer.json().get("current_version")
            assert current is None or version < current <= final, answer.text


# ------------------------------------------------------------------ retried writes


def test_fifty_concurrent_retries_of_an_intake_record_one_case(stack: Stack) -> None:
    # Given an intake with a receipt, under one Idempotency-Key
    key = new_key()
    call = intake(stack, complaint(issue_receipt=True), key)
    before = topics(stack)
    first_position = stack.world.event_count()

    # When it is sent 50 times at once
    answers = stack.race([call] * RACERS)

    # Then every answer is 201 with the same case, version, position and receipt code
    assert statuses(answers) == {201: RACERS}, [(a.status_code, a.text) for a in answers]
    assert len({written(a) for a in answers}) == 1, {written(a) for a in answers}
    case_id, version, position, code = written(answers[0])
    assert version == 1
    assert code is not None
    assert {a.headers["location"] for a in answers} == {f"/v1/cases/{case_id}"}
    # one of them recorded it, the others are replays
    replayed = [a.headers.get(REPLAYED) for a in answers]
    assert replayed.count(None) == 1, replayed
    assert replayed.count("true") == RACERS - 1, replayed
    # and the store gained one case, one receipt and one record of the key, nothing else
    gained = topics(stack) - before
    assert gained == {CASE_RECEIVED: 1, RECEIPT_ISSUED: 1, KEY_RECORDED: 1}, gained
    received = [
        n
        for n in stack.world.mechanism.recorder.select_notifications(first_position + 1, 10**6)
        if n.topic == CASE_RECEIVED
    ]
    assert [(str(n.originator_id), n.id) for n in received] == [(case_id, position)]


def test_fifty_concurrent_retries_of_a_case_command_apply_it_once(stack: Stack) -> None:
    # Given a case at version v and a feedback command under one Idempotency-Key
    case_id, version = open_case(stack)
    call = feedback(
        stack, case_id, {"message": "one message, sent 50 times", "channel": "email"}, new_key()
    )
    before = topics(stack)

    # When it is sent 50 times at once
    answers = stack.race([call] * RACERS)

    # Then every answer is 200 with version v+1 and the same position, one of them not a replay
    assert statuses(answers) == {200: RACERS}, [(a.status_code, a.text) for a in answers]
    assert {written(a) for a in answers} == {(case_id, version + 1, written(answers[0])[2], None)}
    replayed = [a.headers.get(REPLAYED) for a in answers]
    assert replayed.count(None) == 1, replayed
    # and the case gained exactly one FeedbackGiven
    gained = feedback_events(stack, case_id)
    assert [e.originator_version for e in gained if e.originator_version > version] == [version + 1]
    assert topics(stack) - before == {
        "domain.case:Case.FeedbackGiven": 1,
        KEY_RECORDED: 1,
    }


def test_fifty_concurrent_retries_of_a_once_only_command_all_get_its_answer(
    stack: Stack,
) -> None:
    # Given two cases, and "this one duplicates that one" (which can be done only once) under
    # one Idempotency-Key
    original, _ = open_case(stack)
    case_id, version = open_case(stack)
    body = {"original_case_id": original}
    headers = stack.world.headers("focal_point_own", **{"Idempotency-Key": new_key()})
    call = Call("POST", f"/v1/cases/{case_id}/duplicate-of", body, headers)
    before = topics(stack)

    # When it is sent 50 times at once
    answers = stack.race([call] * RACERS)

    # Then every answer is the one answer of the one recording (not "already a duplicate")
    assert statuses(answers) == {200: RACERS}, [(a.status_code, a.text) for a in answers]
    assert {written(a)[:2] for a in answers} == {(case_id, version + 1)}
    assert [a.headers.get(REPLAYED) for a in answers].count(None) == 1
    assert topics(stack) - before == {"domain.case:Case.MarkedAsDuplicate": 1, KEY_RECORDED: 1}


def test_a_key_reused_for_another_request_is_refused_and_records_nothing(stack: Stack) -> None:
    # Given an intake recorded under a key
    key = new_key()
    first = stack.send(intake(stack, complaint("the first complaint"), key))
    assert first.status_code == 201, first.text
    before, count = topics(stack), stack.world.event_count()

    # When the same key comes with another body
    reused = stack.send(intake(stack, complaint("another complaint"), key))

    # Then it is refused with 422 problem+json and nothing is recorded
    assert reused.status_code == 422, reused.text
    assert reused.headers["content-type"].startswith(PROBLEM_JSON)
    assert reused.json()["title"] == "Idempotency-Key reused"
    assert stack.world.event_count() == count
    assert topics(stack) == before
    # and the key still answers its own request with the first answer
    again = stack.send(intake(stack, complaint("the first complaint"), key))
    assert again.status_code == 201, again.text
    assert again.headers.get(REPLAYED) == "true"
    assert written(again) == written(first)


def test_fifty_different_requests_racing_under_one_key_record_one(stack: Stack) -> None:
    # Given 50 different complaints under one key
    key = new_key()
    narratives = [f"complaint number {i}" for i in range(RACERS)]
    before = topics(stack)

    # When they arrive at once
    answers = stack.race([intake(stack, complaint(n), key) for n in narratives])

    # Then one is recorded (201, not a replay), the 49 others are refused with 422
    assert statuses(answers) == {201: 1, 422: RACERS - 1}, statuses(answers)
    (winner,) = [i for i, a in enumerate(answers) if a.status_code == 201]
    assert REPLAYED not in answers[winner].headers
    for answer in answers:
        if answer.status_code == 422:
            assert answer.headers["content-type"].startswith(PROBLEM_JSON)
            assert answer.json()["title"] == "Idempotency-Key reused", answer.text
    # and the store holds that one complaint only
    assert topics(stack) - before == {CASE_RECEIVED: 1, KEY_RECORDED: 1}
    case = stack.world.mechanism.get_case(uuid.UUID(answers[winner].json()["id"]))
    assert case.narrative == narratives[winner]


@pytest.mark.parametrize("issue_receipt", [False, True], ids=["no-receipt", "receipt"])
def test_a_retry_after_success_gets_the_first_answer_again(
    stack: Stack, issue_receipt: bool
) -> None:
    # Given an intake recorded under a key, and the case moved on since
    key = new_key()
    call = intake(stack, complaint(issue_receipt=issue_receipt), key)
    first = stack.send(call)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    case_id = first.json()["id"]
    moved = stack.send(feedback(stack, case_id, {"message": "we are on it", "channel": "phone"}))
    assert moved.status_code == 200, moved.text
    count = stack.world.event_count()

    # When the client retries the intake with the same key and body
    retry = stack.send(call)

    # Then it gets the first answer (case, version, position, receipt code) as a replay
    assert retry.status_code == 201, retry.text
    assert retry.headers.get(REPLAYED) == "true"
    assert written(retry) == written(first)
    assert (first.json()["receipt_code"] is not None) is issue_receipt
    assert retry.headers["location"] == first.headers["location"] == f"/v1/cases/{case_id}"
    # and nothing is recorded
    assert stack.world.event_count() == count
