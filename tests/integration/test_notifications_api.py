"""``/v1/me/notifications`` and ``/v1/network/staff/{user}/notifications`` (issue #18): the
person and the coordinator register addresses and preferences; bad input is problem+json
and records nothing; someone else's record cannot be touched; an erasure destroys the
addresses for good, and the published messages never carry them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from domain.notification import contact_id
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.relay.translation import encode, to_cloud_event
from services.settings import Settings
from tests.api_world import World, make_world

MINE = {
    "email": "fp.unhcr@example.org",
    "phone": "+243810000009",
    "channels": ["email", "sms"],
    "quiet_hours": {"start": "22:00", "end": "06:00", "zone": "Africa/Kinshasa"},
    "delivery": "immediate",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("notifications-api")
    store = f"sqlite:///{tmp / 'events.sqlite3'}"
    mechanism = complaint_mechanism(Settings(data_dir=tmp, event_store=store))
    yield make_world(tmp, mechanism, event_store=store)
    mechanism.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


def test_a_focal_point_registers_reads_and_erases_their_own_addresses(
    world: World, client: TestClient
) -> None:
    me = world.headers("focal_point_own")
    # when the focal point registers their addresses and preferences
    put = client.put("/v1/me/notifications", json=MINE, headers=me)
    assert put.status_code == 200, put.text

    # then they read them back, for the organisation and role they act in
    got = client.get("/v1/me/notifications", headers=me).json()
    assert got["user"] == "fp-unhcr" and got["organisation"] == "unhcr"
    assert got["role"] == "focal_point"
    assert got["email"] == MINE["email"] and got["phone"] == MINE["phone"]
    assert got["quiet_hours"] == {"start": "22:00:00", "end": "06:00:00", "zone": "Africa/Kinshasa"}
    # ... no one else does
    other = client.get("/v1/me/notifications", headers=world.headers("focal_point_other"))
    assert other.status_code == 404

    # when they erase them
    erased = client.delete("/v1/me/notifications", headers=me)
    assert erased.status_code == 200

    # then the addresses are gone for good, from the record and from the stored events
    after = client.get("/v1/me/notifications", headers=me).json()
    assert after["erased"] is True and after["email"] is None and after["phone"] is None
    history = world.mechanism.recorder.select_events(contact_id("fp-unhcr"))
    opened = "\n".join(repr(world.mechanism.mapper.to_domain_event(e)) for e in history)
    assert MINE["email"] not in opened and MINE["phone"] not in opened
    # and no published message ever carried them
    wire = b"".join(
        encode(to_cloud_event(e, source="urn:t"))
        for n in history
        if is_published(e := world.mechanism.mapper.to_domain_event(n))
    )
    assert b"example.org" not in wire and b"+2438" not in wire
    assert b'"has_email":true' in wire


def test_the_coordinator_registers_an_investigator_and_nobody_else_may(
    world: World, client: TestClient
) -> None:
    body = {
        "email": "oig@wfp.example.org",
        "channels": ["email"],
        "organisation": "wfp",
        "role": "investigating_entity",
    }
    url = "/v1/network/staff/inv-wfp/notifications"
    # when a focal point tries, then the coordinator does
    refused = client.put(url, json=body, headers=world.headers("focal_point_own"))
    done = client.put(url, json=body, headers=world.headers("coordinator"))

    # then only the coordinator's is recorded
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert done.status_code == 200
    mine = client.get("/v1/me/notifications", headers=world.headers("investigator_own")).json()
    assert mine["organisation"] == "wfp" and mine["email"] == body["email"]
    # and the coordinator can erase it
    gone = client.delete(url, headers=world.headers("coordinator"))
    assert gone.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {**MINE, "email": "not an address"},
        {**MINE, "phone": "0812345678"},
        {**MINE, "channels": []},
        {**MINE, "channels": ["sms"], "phone": None},
        {**MINE, "channels": ["pigeon"]},
        {**MINE, "quiet_hours": {"start": "22:00", "end": "22:00"}},
        {**MINE, "quiet_hours": {"start": "22:00", "end": "06:00", "zone": "Mars/Olympus"}},
        {**MINE, "delivery": "weekly"},
        {**MINE, "unexpected": 1},
    ],
    ids=[
        "email",
        "phone",
        "no-channel",
        "sms-without-phone",
        "channel",
        "quiet",
        "zone",
        "delivery",
        "extra",
    ],
)
def test_bad_preferences_are_refused_as_problems_and_record_nothing(
    world: World, client: TestClient, body: dict[str, object]
) -> None:
    before = world.event_count()
    answer = client.put(
        "/v1/me/notifications", json=body, headers=world.headers("focal_point_other")
    )
    assert 400 <= answer.status_code < 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "example.org" not in answer.text and "0812345678" not in answer.text
    assert world.event_count() == before


def test_an_intake_operator_has_no_notifications(world: World, client: TestClient) -> None:
    answer = client.put("/v1/me/notifications", json=MINE, headers=world.headers("intake_operator"))
    assert answer.status_code == 403
