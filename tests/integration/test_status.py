"""Readiness apart from the deep status, and reads of a stalled read model (issue #12).

``/readyz`` is what a load balancer asks: can this process serve? It does not ask the event
store, which every instance shares: while PostgreSQL restarts, every instance would be taken
out at once, reads included. ``/status`` is the deep view: the store, each read model's
position and lag, every worker's stall; 503 when anything is wrong. A read waiting for a
position at or past the one its read model stalled at is answered at once with
``urn:cbcm:problem:read-model-stalled``, without Retry-After; earlier positions are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from projections.base import set_position
from services.api.app import create_app
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.projector import PROJECTIONS, projection_named
from services.projector.runner import open_projection, read_model_path
from services.runtime.worker_status import record_stall
from services.settings import Settings
from tests.api_world import RECENTLY, World, make_world

STALLED_TYPE = "org.psea.cbcm.case.received.v1"


def read_models_at(data_dir: Path, positions: dict[str, int]) -> None:
    """Each read model created (as its projector does) and at ``positions[name]``."""
    for name in PROJECTIONS:
        db = open_projection(projection_named(name), read_model_path(data_dir, name))
        try:
            db.execute("BEGIN IMMEDIATE")
            set_position(db, positions.get(name, 0))
            db.execute("COMMIT")
        finally:
            db.close()


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> Iterator[World]:
    data_dir = tmp_path / "data"
    mechanism: ComplaintMechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=store_url)
    )
    try:
        yield make_world(data_dir, mechanism, event_store=store_url, read_wait_seconds=3.0)
    finally:
        mechanism.close()


def test_readyz_stays_ready_while_the_event_store_is_down_and_status_says_so(
    tmp_path: Path,
) -> None:
    # given an API whose PostgreSQL does not answer, and its read models in place
    data_dir = tmp_path / "data"
    read_models_at(data_dir, {"inbox": 7})
    down = f"postgresql://cbcm:cbcm@127.0.0.1:{free_port()}/cbcm"
    client = TestClient(create_app(Settings(data_dir=data_dir, event_store=down)))
    # then it is ready (it can serve its reads) ...
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "read_models_missing": []}
    # ... and the deep status says what is wrong, and still lists the rest
    status = client.get("/status")
    assert status.status_code == 503
    body = status.json()
    assert body["status"] == "degraded"
    assert body["event_store"] == {"reachable": False, "head_position": None}
    assert body["read_models"]["inbox"] == {
        "applied_position": 7,
        "lag": None,
        "stalled_position": None,
    }


def test_readyz_waits_for_the_read_models_this_instance_answers_from(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    client = TestClient(create_app(Settings(data_dir=data_dir, event_store=store)))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "starting", "read_models_missing": list(PROJECTIONS)}
    read_models_at(data_dir, {})
    assert client.get("/readyz").status_code == 200


def test_status_lists_each_read_models_lag_and_every_stall(world: World) -> None:
    client = TestClient(world.api)
    head = world.event_count()
    read_models_at(world.settings.data_dir, {"inbox": head, "assistance": head, "stats": 1})
    # given all is well: 200, every read model with its position and lag
    status = client.get("/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["status"] == "ok" and body["stalls"] == []
    assert body["event_store"] == {"reachable": True, "head_position": head}
    assert body["read_models"]["inbox"] == {
        "applied_position": head,
        "lag": 0,
        "stalled_position": None,
    }
    assert body["read_models"]["stats"]["lag"] == head - 1
    # when the stats projector and the relay record stalls
    record_stall(
        world.settings.data_dir,
        "project-stats",
        position=2,
        message_type=STALLED_TYPE,
        error="OverflowError",
    )
    record_stall(
        world.settings.data_dir,
        "relay",
        position=head + 1,
        message_type="cbcm.case.Case.Received",
        error="ValueError",
    )
    # then 503, naming each worker, the position and the type of the message
    status = client.get("/status")
    assert status.status_code == 503
    body = status.json()
    assert body["status"] == "degraded"
    assert body["read_models"]["stats"]["stalled_position"] == 2
    named = [(s["worker"], s["position"], s["message_type"], s["error"]) for s in body["stalls"]]
    assert named == [
        ("project-stats", 2, STALLED_TYPE, "OverflowError"),
        ("relay", head + 1, "cbcm.case.Case.Received", "ValueError"),
    ]
    # and readiness is not affected: the instance still serves
    assert client.get("/readyz").status_code == 200


def test_a_read_past_the_stall_is_answered_at_once_with_the_stalled_problem(
    world: World,
) -> None:
    client = TestClient(world.api)
    read_models_at(world.settings.data_dir, {"stats": 41})
    record_stall(
        world.settings.data_dir,
        "project-stats",
        position=42,
        message_type=STALLED_TYPE,
        error="OverflowError",
    )
    headers = world.headers("coordinator")
    # a read of a position before the stall is answered
    before = client.get("/v1/stats", params={"after": 41}, headers=headers)
    assert before.status_code == 200, before.text
    assert before.headers["X-Cbcm-Position"] == "41"
    # a read at or past the stall is not made to wait out the bound (3 s here)
    for after in (42, 500):
        answer = client.get("/v1/stats", params={"after": after}, headers=headers)
        assert answer.status_code == 503
        assert answer.elapsed.total_seconds() < 1.0
        assert answer.headers["content-type"] == "application/problem+json"
        assert "retry-after" not in answer.headers
        problem = answer.json()
        assert problem["type"] == "urn:cbcm:problem:read-model-stalled"
        assert (problem["read_model"], problem["worker"]) == ("stats", "project-stats")
        assert problem["stalled_position"] == 42
        assert problem["applied_position"] == 41
        assert "stats" in problem["detail"] and "42" in problem["detail"]
    # another read model is not concerned by it
    inbox = client.get("/v1/inbox/unhcr", params={"after": 0}, headers=headers)
    assert inbox.status_code == 200, inbox.text


def test_a_read_past_where_the_relay_stalled_is_answered_at_once_too(world: World) -> None:
    # given the read models up to date, and the relay stopped at the next event: nothing
    # past it will reach any read model until a fix is deployed
    client = TestClient(world.api)
    head = world.event_count()
    read_models_at(world.settings.data_dir, {"inbox": head, "assistance": head, "stats": head})
    record_stall(
        world.settings.data_dir,
        "relay",
        position=head + 1,
        message_type="cbcm.case.Case.Received",
        error="ValueError",
    )
    headers = world.headers("coordinator")
    assert client.get("/v1/stats", params={"after": head}, headers=headers).status_code == 200
    answer = client.get("/v1/stats", params={"after": head + 1}, headers=headers)
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert answer.elapsed.total_seconds() < 1.0
    problem = answer.json()
    assert problem["type"] == "urn:cbcm:problem:read-model-stalled"
    assert (problem["worker"], problem["read_model"]) == ("relay", "stats")
    assert (problem["stalled_position"], problem["applied_position"]) == (head + 1, head)
    assert "relay" in problem["detail"]


def test_readiness_and_status_are_documented_as_operations(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    schema = create_app(Settings(data_dir=tmp_path / "data", event_store=store)).openapi()
    for path in ("/readyz", "/status"):
        operation = schema["paths"][path]["get"]
        assert operation["tags"] == ["operations"]
        assert {"200", "503"} <= set(operation["responses"])
        assert operation["responses"]["503"]["content"]["application/json"]["schema"]
    read = json.dumps(schema["paths"]["/v1/stats"]["get"]["responses"]["503"])
    assert "urn:cbcm:problem:read-model-stalled" in read


def test_a_read_model_at_the_last_published_event_has_no_lag_behind_the_stores_own_records(
    world: World,
) -> None:
    # given a complaint whose receipt the store keeps after its events (never published)
    client = TestClient(world.api)
    written = client.post(
        "/v1/cases",
        json={
            "received_at": RECENTLY,
            "channel": "hotline",
            "complainant_role": "anonymous",
            "narrative": "said at the help desk",
            "issue_receipt": True,
        },
        headers=world.headers("intake_operator"),
    )
    assert written.status_code == 201, written.text
    position = written.json()["position"]
    assert world.event_count() > position
    # when every read model has applied everything published
    read_models_at(world.settings.data_dir, dict.fromkeys(PROJECTIONS, position))
    # then none lags: an alert on lag > 0 must not fire on an idle network
    body = client.get("/status").json()
    assert {name: rm["lag"] for name, rm in body["read_models"].items()} == dict.fromkeys(
        PROJECTIONS, 0
    )
    assert body["event_store"]["head_position"] == world.event_count()
