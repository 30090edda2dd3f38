"""Statistics are built off the event loop (attack review of issue #12): building every report
of a large network takes a second or more, and done inline it held up every request of the
API, /healthz included, so that a statistics reader could freeze it with a few requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from projections import stats
from projections.stats import StatisticsProjection
from services.bootstrap import complaint_mechanism
from services.projector.runner import open_projection, read_model_path
from services.settings import Settings
from services.statistics.releases import ledger_path, open_ledger, release_due
from tests.api_world import World, make_world
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    open_projection(StatisticsProjection(), read_model_path(tmp_path, "stats")).close()
    yield make_world(tmp_path, mechanism)
    mechanism.close()


async def test_other_requests_are_answered_while_the_statistics_are_built(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given building the reports takes a while (until the test lets it finish)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    real = stats.reports

    def slow_reports(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(timeout=10)
        order.append("statistics built")
        return real(*args, **kwargs)

    monkeypatch.setattr(stats, "reports", slow_reports)
    transport = httpx.ASGITransport(app=world.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://cbcm") as client:
        # when the coordinator asks for the live reports
        reading = asyncio.ensure_future(
            client.get("/v1/stats", headers=world.headers("coordinator"))
        )
        assert await asyncio.to_thread(started.wait, 10)
        # then the API still answers others meanwhile
        health = await client.get("/healthz")
        order.append("healthz answered")
        release.set()
        answer = await reading
    assert health.status_code == 200
    assert answer.status_code == 200, answer.text
    assert order == ["healthz answered", "statistics built"]


async def test_the_reports_are_built_once_while_the_read_model_stays_where_it_is(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a count of the builds
    builds: list[int] = []
    real = stats.reports

    def counted(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stats, "reports", counted)
    transport = httpx.ASGITransport(app=world.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://cbcm") as client:
        # when many readers ask at once, for all reports and for one
        headers = world.headers("coordinator")
        answers = await asyncio.gather(
            *(client.get("/v1/stats", headers=headers) for _ in range(5)),
            client.get("/v1/stats/channel_by_quarter", headers=headers),
        )
    # then they all get them, from one build
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert answers[-1].json() == answers[0].json()["channel_by_quarter"]
    assert len(builds) == 1


# ----------------------------------------------------------------------------- issue #14


def test_the_live_reports_are_the_coordinators_alone(world: World) -> None:
    """Live reports change with every case: comparing two gives that case away."""
    client = TestClient(world.api)
    for role in ("statistics_reader", "focal_point_own", "auditor"):
        answer = client.get("/v1/stats", headers=world.headers(role))
        assert answer.status_code == 403, (role, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert (
            client.get("/v1/stats/channel_by_quarter", headers=world.headers(role)).status_code
            == 403
        )
    assert client.get("/v1/stats", headers=world.headers("coordinator")).status_code == 200


def _release_some(data_dir: Path) -> None:
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(data_dir)) as led:
        release_due(db, led, POLICY, datetime(2026, 8, 15, tzinfo=UTC))


def test_releases_are_listed_and_read_by_every_statistics_reader(world: World) -> None:
    client = TestClient(world.api)
    headers = world.headers("statistics_reader")
    # before any release: an empty list, and a 404 problem for one
    assert client.get("/v1/stats/releases", headers=headers).json() == {"releases": []}
    missing = client.get("/v1/stats/releases/2026-q1-v1", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    _release_some(world.settings.data_dir)
    listed = client.get("/v1/stats/releases", headers=headers).json()["releases"]
    assert [(r["id"], r["latest"]) for r in listed] == [("2026-q1-v1", True), ("2026-q2-v1", True)]
    one = client.get("/v1/stats/releases/2026-q1-v1", headers=headers)
    assert one.status_code == 200
    assert one.json()["release"]["id"] == "2026-q1-v1"
    assert client.get("/v1/stats/releases/2026-q2", headers=headers).json()["release"]["id"] == (
        "2026-q2-v1"
    )
    as_csv = client.get("/v1/stats/releases/2026-q1-v1?format=csv", headers=headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.splitlines()[1].startswith("#meta+id,")
    as_xlsx = client.get("/v1/stats/releases/2026-q1-v1?format=xlsx", headers=headers)
    assert as_xlsx.content[:2] == b"PK"  # a zip: the XLSX container
    # bad input is a problem, and changes nothing
    for bad in ("2026-q5-v1", "x" * 30, "2026-q1-v0"):
        answer = client.get(f"/v1/stats/releases/{bad}", headers=headers)
        assert answer.status_code in (404, 422), (bad, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    bad_format = client.get("/v1/stats/releases/2026-q1-v1?format=pdf", headers=headers)
    assert bad_format.status_code == 422
    assert len(client.get("/v1/stats/releases", headers=headers).json()["releases"]) == 2
