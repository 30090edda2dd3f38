"""``GET /v1/inbox/{agency}`` a page at a time (issue #16), over HTTP.

- Following ``next`` from the first page lists the whole inbox once, in its order, pages of
  ``limit``; the last page's ``next`` and ``next_cursor`` are ``null``; 50 a page unless
  asked, 200 at most.
- A cursor holds the last case's place in the order (times and its id), nothing else.
- A bad ``cursor`` or ``limit`` is refused with problem+json naming it (422, as
  ``GET /v1/cases`` refuses its filters); any text given as a cursor is refused or read as a
  place, never a server error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.inbox import InboxCursor, InboxProjection
from services.api.paging import BadFilter, encode_inbox_cursor, parse_inbox_cursor
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world, project_into
from tests.integration.test_api_access import Clock, received

CASES = 53
ONE_OCLOCK = "2026-01-01T01:00:00+01:00"
"""a time not in UTC, as no cursor of the inbox holds"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("inbox")
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    made = make_world(data_dir, mechanism)
    clock = Clock()
    for _ in range(CASES):
        received(mechanism, clock)
    project(made)
    yield made
    mechanism.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


def project(world: World) -> None:
    """Bring the inbox up to the store, as relay and projector would."""
    project_into(world, InboxProjection())


def walk(client: TestClient, world: World, first: str) -> list[list[str]]:
    pages = []
    address: str | None = first
    while address is not None:
        answer = client.get(address, headers=world.headers("focal_point_own"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["agency"] == "unhcr"
        pages.append([i["case_id"] for i in body["items"]])
        address = body["next"]
        assert (address is None) == (body["next_cursor"] is None)
    return pages


def order_key(item: dict[str, object]) -> tuple[bool, str, str, str]:
    due = item["due_at"]
    return (due is None, str(due or ""), str(item["since"]), str(item["case_id"]))


def test_following_next_lists_the_inbox_once_in_its_order(world: World, client: TestClient) -> None:
    pages = walk(client, world, "/v1/inbox/unhcr?limit=7")
    assert [len(p) for p in pages] == [7] * (CASES // 7) + [CASES % 7]
    listed = [c for p in pages for c in p]
    assert len(listed) == len(set(listed)) == CASES
    whole = client.get("/v1/inbox/unhcr?limit=200", headers=world.headers("focal_point_own"))
    items = whole.json()["items"]
    assert [i["case_id"] for i in items] == listed
    assert items == sorted(items, key=order_key)
    assert whole.json()["next"] is None
    assert [len(p) for p in walk(client, world, "/v1/inbox/unhcr")] == [50, CASES - 50]


def test_a_cursor_holds_times_and_a_case_id_only(world: World, client: TestClient) -> None:
    body = client.get("/v1/inbox/unhcr?limit=1", headers=world.headers("focal_point_own")).json()
    cursor = body["next_cursor"]
    due_at, since, case_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    [item] = body["items"]
    assert case_id == item["case_id"]
    assert datetime.fromisoformat(due_at) == datetime.fromisoformat(item["due_at"])
    assert datetime.fromisoformat(since) == datetime.fromisoformat(item["since"])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WyIyMDI1IiwieCJd", "cursor"),  # ["2025","x"]
        ("cursor=" + encode_inbox_cursor(InboxCursor(ONE_OCLOCK, "x", "y")), "cursor"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=%C2%B2", "limit"),  # a digit to str.isdigit, not to int()
        ("limit=ten", "limit"),
        ("limit=5&limit=6", "limit"),
    ],
)
def test_a_bad_cursor_or_limit_is_refused_naming_it(
    world: World, client: TestClient, query: str, parameter: str
) -> None:
    before = world.event_count()
    answer = client.get(f"/v1/inbox/unhcr?{query}", headers=world.headers("focal_point_own"))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["parameter"] == parameter
    assert world.event_count() == before


@settings(max_examples=300)
@given(st.text(max_size=400) | st.binary(max_size=250).map(
    lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
))  # fmt: skip
def test_any_text_is_refused_or_read_as_a_place(value: str) -> None:
    try:
        cursor = parse_inbox_cursor({"cursor": [value]})
    except BadFilter as e:
        assert e.field == "cursor"
        return
    if cursor is not None:
        assert str(UUID(cursor.case_id)) == cursor.case_id
        assert datetime.fromisoformat(cursor.since).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@given(
    st.none() | st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
)
def test_a_cursor_reads_back_as_the_place_it_holds(
    due: datetime | None, since: datetime, case_id: UUID
) -> None:
    cursor = InboxCursor(
        None if due is None else due.isoformat(timespec="microseconds"),
        since.isoformat(timespec="microseconds"),
        str(case_id),
    )
    assert parse_inbox_cursor({"cursor": [encode_inbox_cursor(cursor)]}) == cursor
