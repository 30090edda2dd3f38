"""The console's views (issue #21, #22): statistics releases, the network registry, the
auditor's view, referrals and prevention work, through the real app, for each role: what each
role sees, what it may not see or do, and that personal data shows only where the API would
show it."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.console.session import Session
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from services.statistics.releases import ledger_path, open_ledger, release_due
from tests.api_world import World, make_world
from tests.integration.test_api_access import project
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY


def sign_in(world: World, caller: str, lang: str = "en") -> tuple[TestClient, str]:
    """A browser-like client signed in to the console as ``caller`` (the session cookie the
    sign-in would set), and its form token."""
    sessions = world.api.state.console_sessions
    session = Session(
        sid=secrets.token_urlsafe(18),
        token=world.tokens[caller],
        lang=lang,
        expires=int(time.time()) + 3600,
        via="development",
    )
    client = TestClient(world.api, base_url="http://testserver", follow_redirects=False)
    client.cookies.set(
        "cbcm-console",
        sessions.seal(
            "session",
            {"sid": session.sid, "tok": session.token, "lang": lang, "exp": session.expires,
             "via": "development"},
        ),
    )
    return client, sessions.csrf(session)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("console-views")
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    world = make_world(data_dir, mechanism)
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(data_dir)) as ledger:
        release_due(db, ledger, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
    project(world)
    yield world
    mechanism.close()


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# ------------------------------------------------------------------ statistics releases


def test_a_statistics_reader_sees_every_release_with_its_files(world: World) -> None:
    client, _ = sign_in(world, "statistics_reader")
    page = client.get("/console/statistics")
    assert page.status_code == 200, page.text
    assert "2026-q1-v1" in page.text and "2026-q2-v1" in page.text
    one = client.get("/console/statistics/2026-q1-v1")
    assert one.status_code == 200, one.text
    assert "<svg" in one.text


def test_smoke_every_page(world: World) -> None:
    for caller, path in [
        ("coordinator", "/console/registry"),
        ("provider_own", "/console/registry"),
        ("coordinator", "/console/prevention"),
        ("focal_point_own", "/console/prevention"),
        ("provider_own", "/console/referrals"),
        ("investigator_own", "/console/referrals"),
        ("auditor", "/console/audit"),
    ]:
        client, _ = sign_in(world, caller)
        page = client.get(path)
        assert page.status_code == 200, (caller, path, page.text[-3000:])
