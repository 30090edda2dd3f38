"""With the read models' PostgreSQL out of reach, every page and API answer that reads it is
a 503 the caller can retry, never a 500 (an attack review found the console's statistics and
prevention pages, and the prevention reports, answering 500 when the release ledger's
database could not be reached)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domain.actors import Role
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import World, make_world
from tests.console_signing import ON_THIS_MACHINE, sign_in


@pytest.fixture
def away(tmp_path: Path) -> Iterator[World]:
    mechanism = complaint_mechanism(
        Settings(data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}")
    )
    # a PostgreSQL address where nothing listens
    url = f"postgresql://cbcm@127.0.0.1:{free_port()}/cbcm"
    try:
        yield make_world(tmp_path, mechanism, read_model_store=url)
    finally:
        mechanism.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/stats/releases",
        "/v1/stats/releases/2026-q1-v1",
        "/v1/prevention/risk-map?year=2026&quarter=1",
        "/v1/prevention/reports/2026-Q1",
    ],
)
def test_an_api_read_of_an_unreachable_database_is_a_503_to_retry(away: World, path: str) -> None:
    with TestClient(away.api, raise_server_exceptions=False) as client:
        answer = client.get(path, headers=away.headers("coordinator"))
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"]
    assert "127.0.0.1" not in answer.text  # the driver's message names hosts: not repeated


@pytest.mark.parametrize(
    "path",
    ["/console/statistics", "/console/statistics/2026-q1-v1", "/console/prevention?year=2026"],
)
def test_a_console_page_over_an_unreachable_database_is_a_503_to_retry(
    away: World, path: str
) -> None:
    with TestClient(away.api, raise_server_exceptions=False, client=ON_THIS_MACHINE) as client:
        sign_in(client, "coord-1", "ocha", Role.COORDINATOR)
        answer = client.get(path)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert "127.0.0.1" not in answer.text
