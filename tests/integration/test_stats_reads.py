"""Statistics are built off the event loop (attack review of issue #12): building every report
of a large network takes a second or more, and done inline it held up every request of the
API, /healthz included, so that a statistics reader could freeze it with a few requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from projections import stats
from projections.stats import StatisticsProjection
from services.bootstrap import complaint_mechanism
from services.projector.runner import open_projection, read_model_path
from services.settings import Settings
from tests.api_world import World, make_world


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
        # when a statistics reader asks for them
        reading = asyncio.ensure_future(
            client.get("/v1/stats", headers=world.headers("statistics_reader"))
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
        headers = world.headers("statistics_reader")
        answers = await asyncio.gather(
            *(client.get("/v1/stats", headers=headers) for _ in range(5)),
            client.get("/v1/stats/channel_by_quarter", headers=headers),
        )
    # then they all get them, from one build
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert answers[-1].json() == answers[0].json()["channel_by_quarter"]
    assert len(builds) == 1
