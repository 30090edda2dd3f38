"""``PUT /v1/network/agencies/{agency}/share-key`` (issue #6): the coordinator registers and
replaces an agency's share key; a bad key or an unknown agency is refused as problem+json and
records nothing; every member reads the key and its id in the registry."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from domain.network import share_key_id
from tests.api_world import World, make_world
from tests.in_memory import in_memory_mechanism


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The network behind the API on the in-memory store: registering a key is a rule of the
    application, the same on every store."""
    mechanism = in_memory_mechanism()
    yield make_world(tmp_path, mechanism)
    mechanism.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


def new_key() -> str:
    return base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()


def test_the_coordinator_registers_and_replaces_a_key_every_member_reads_it(
    world: World, client: TestClient
) -> None:
    url = "/v1/network/agencies/wfp/share-key"
    coordinator = world.headers("coordinator")
    first, second = new_key(), new_key()

    # when the coordinator registers a key, then replaces it
    answers = [
        client.put(url, json={"public_key": k}, headers=coordinator) for k in (first, second)
    ]

    # then both are recorded, and the registry shows the last with its id
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[1].json()["version"] == answers[0].json()["version"] + 1
    registry = client.get("/v1/network", headers=world.headers("focal_point_other")).json()
    agencies = {a["code"]: a for a in registry["agencies"]}
    assert agencies["wfp"]["share_key"] == {
        "public_key": second,
        "key_id": share_key_id(base64.b64decode(second)),
    }
    assert agencies["unhcr"]["share_key"] is None


@pytest.mark.parametrize(
    ("agency", "key", "kind"),
    [
        ("wfp", base64.b64encode(bytes(32)).decode(), "malformed-share-key"),
        ("wfp", base64.b64encode(b"\x01" + bytes(31)).decode(), "malformed-share-key"),
        ("ghost", new_key(), "unknown-agency"),
    ],
    ids=["zero point", "point of order one", "unknown agency"],
)
def test_a_bad_key_or_an_unknown_agency_is_refused_and_records_nothing(
    world: World, client: TestClient, agency: str, key: str, kind: str
) -> None:
    before = world.event_count()
    answer = client.put(
        f"/v1/network/agencies/{agency}/share-key",
        json={"public_key": key},
        headers=world.headers("coordinator"),
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == f"urn:cbcm:problem:{kind}"
    assert key not in answer.text
    assert world.event_count() == before


def test_a_key_that_is_not_base64_of_32_bytes_is_refused_by_the_schema(
    world: World, client: TestClient
) -> None:
    before = world.event_count()
    for body in ({"public_key": "short"}, {"public_key": new_key(), "extra": 1}, {}):
        answer = client.put(
            "/v1/network/agencies/wfp/share-key", json=body, headers=world.headers("coordinator")
        )
        assert answer.status_code == 422, answer.text
    assert world.event_count() == before
