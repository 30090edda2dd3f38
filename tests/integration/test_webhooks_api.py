"""``/v1/webhooks`` (issue #19): the coordinator's registry of agencies' endpoints over HTTP.
Every change is an event in the log; the secret is sealed at rest and never answered."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.webhooks import WEBHOOK_REGISTRY_ID, WebhookRegistry
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world

RECEIVED = "org.psea.cbcm.case.received.v1"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    yield make_world(tmp_path, mechanism)
    mechanism.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


def body(secret: str, **changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "agency": "wfp",
        "url": "https://cfm.wfp.example/cbcm",
        "secret": secret,
        "event_types": [RECEIVED],
    }
    return {**given, **changes}


def test_the_coordinator_registers_an_endpoint_whose_secret_is_never_answered_nor_stored_in_clear(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    secret = new_secret()
    answer = client.post("/v1/webhooks", json=body(secret), headers=world.headers("coordinator"))
    assert answer.status_code == 201, answer.text
    endpoint = answer.json()["endpoint_id"]
    assert answer.headers["location"] == f"/v1/webhooks/{endpoint}"
    listed = client.get("/v1/webhooks", headers=world.headers("coordinator"))
    (row,) = listed.json()
    assert row["endpoint_id"] == endpoint and row["enabled"] and row["event_types"] == [RECEIVED]
    raw = secret.removeprefix("whsec_")
    for text in (answer.text, listed.text):
        assert raw not in text
    stored = (tmp_path / "events.sqlite3").read_bytes()
    assert raw.encode() not in stored and base64.b64decode(raw) not in stored
    # ... and the application opens it for the deliverer
    assert world.mechanism.webhook_endpoint(UUID(endpoint)).secret == secret
    events = list(world.mechanism.events.get(WEBHOOK_REGISTRY_ID))
    registered = [e for e in events if isinstance(e, WebhookRegistry.EndpointRegistered)]
    assert registered[0].actor.role == "coordinator" and registered[0].agency == "wfp"


def test_a_registration_sent_again_with_its_idempotency_key_registers_once(
    world: World, client: TestClient
) -> None:
    headers = world.headers("coordinator", **{"Idempotency-Key": "register-wfp-0001-abcdef"})
    sent = body(new_secret())
    first = client.post("/v1/webhooks", json=sent, headers=headers)
    assert first.status_code == 201
    again = client.post("/v1/webhooks", json=body(new_secret()), headers=headers)
    assert again.status_code == 422  # another request under the key: refused, not recorded
    same = client.post("/v1/webhooks", json=sent, headers=headers)
    assert same.status_code == 201 and same.json()["endpoint_id"] == first.json()["endpoint_id"]
    assert len(client.get("/v1/webhooks", headers=world.headers("coordinator")).json()) == 1


@pytest.mark.parametrize(
    "caller", ["focal_point_own", "intake_service", "auditor", "investigator_own"]
)
def test_only_the_coordinator_sees_or_changes_endpoints(
    world: World, client: TestClient, caller: str
) -> None:
    headers = world.headers(caller)
    assert client.post("/v1/webhooks", json=body(new_secret()), headers=headers).status_code == 403
    assert client.get("/v1/webhooks", headers=headers).status_code == 403


@pytest.mark.parametrize(
    "changes",
    [
        {"event_types": ["org.psea.cbcm.network.agency_registered.v1"]},  # not an agency's
        {"event_types": ["org.psea.cbcm.case.invented.v1"]},
        {"event_types": []},
        {"agency": "not-a-member"},
        {"url": "http://cfm.wfp.example/cbcm"},
        {"url": "https://user:pw@cfm.wfp.example/cbcm"},
        {"secret": "whsec_c2hvcnQ="},
        {"secret": "hunter2"},
    ],
)
def test_a_registration_that_does_not_fit_is_refused_and_records_nothing(
    world: World, client: TestClient, changes: dict[str, object]
) -> None:
    events = world.event_count()
    answer = client.post(
        "/v1/webhooks",
        json={**body(new_secret()), **changes},
        headers=world.headers("coordinator"),
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in answer.text and "pw@" not in answer.text
    assert world.event_count() == events


def test_disable_enable_rotate_and_remove_are_each_an_event(
    world: World, client: TestClient
) -> None:
    coordinator = world.headers("coordinator")
    made = client.post("/v1/webhooks", json=body(new_secret()), headers=coordinator)
    endpoint = made.json()["endpoint_id"]
    for method, path, payload in (
        ("POST", "disable", None),
        ("POST", "enable", None),
        ("PUT", "secret", {"secret": new_secret()}),
        ("PUT", "event-types", {"event_types": [RECEIVED, "org.psea.cbcm.case.closed.v1"]}),
    ):
        answer = client.request(
            method, f"/v1/webhooks/{endpoint}/{path}", json=payload, headers=coordinator
        )
        assert answer.status_code == 200, (path, answer.text)
    got = client.get(f"/v1/webhooks/{endpoint}", headers=coordinator).json()
    assert got["secret_version"] == 2 and len(got["event_types"]) == 2 and got["enabled"]
    assert client.delete(f"/v1/webhooks/{endpoint}", headers=coordinator).status_code == 200
    assert client.get(f"/v1/webhooks/{endpoint}", headers=coordinator).status_code == 404
    kinds = [type(e).__name__ for e in world.mechanism.events.get(WEBHOOK_REGISTRY_ID)]
    assert kinds == [
        "Started",
        "EndpointRegistered",
        "EndpointDisabled",
        "EndpointEnabled",
        "EndpointSecretRotated",
        "EndpointEventTypesSet",
        "EndpointRemoved",
    ]
