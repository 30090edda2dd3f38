"""Every form of the console's views, posted with whatever Hypothesis finds (text, numbers,
dates, codes, missing and repeated fields): the answer is a page (a redirect after
recording, or a readable refusal), never a server error or a problem document, and a
refusal records nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import CALLERS, World, make_world
from tests.console_signing import ON_THIS_MACHINE, sign_in

FORMS = {
    "/console/registry/agencies": ("code", "name", "agency_type"),
    "/console/registry/focal-points": ("agency", "user"),
    "/console/registry/focal-points/withdrawal": ("agency", "user"),
    "/console/registry/investigating-entity": ("agency", "entity"),
    "/console/registry/service-providers": ("code", "name", "service_types", "areas"),
    "/console/registry/policy": ("suppression_threshold", "assess_within", "expected_version"),
    "/console/prevention/trainings": ("agency", "held_on", "area", "audience", "topic", "female"),
    "/console/prevention/awareness": ("agency", "held_on", "area", "kind", "reach"),
    "/console/prevention/risk-assessments": ("agency", "area", "sector", "assessed_on", "rating_x"),
    "/console/prevention/reassessment": ("assessment", "assessed_on", "expected_version"),
    "/console/prevention/mitigation": ("assessment", "measure", "owner_agency", "due_on"),
    "/console/prevention/mitigation-status": ("assessment", "action", "status"),
    "/console/prevention/work-plans": ("year",),
    "/console/prevention/activities": ("year", "kind", "owner_agency", "target", "due_on"),
    "/console/prevention/progress": ("year", "activity", "status", "achieved"),
    "/console/prevention/policy": ("refresher_every_days", "risk_factors", "training_targets"),
    "/console/prevention/alternates": ("agency", "user"),
    "/console/prevention/alternate-withdrawals": ("agency", "user"),
    "/console/prevention/training-withdrawals": ("record",),
    "/console/prevention/awareness-withdrawals": ("record",),
}

VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["unhcr", "wfp", "staff", "SO2201", "P1D", "", "true", "0", "2026"]),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data: Path = tmp_path_factory.mktemp("console-fuzz")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    yield make_world(data, mechanism)
    mechanism.close()


@pytest.fixture(scope="module")
def coordinator(world: World) -> tuple[TestClient, str]:
    user, agency, role = CALLERS["coordinator"]
    client = TestClient(
        world.api, follow_redirects=False, raise_server_exceptions=False, client=ON_THIS_MACHINE
    )
    return client, sign_in(client, user, agency, role)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(sorted(FORMS)),
    data=st.data(),
)
def test_any_form_answers_a_page_and_a_refusal_records_nothing(
    world: World, coordinator: tuple[TestClient, str], path: str, data: st.DataObject
) -> None:
    client, csrf = coordinator
    names = FORMS[path]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    fields: list[tuple[str, str]] = [("csrf", csrf)]
    for name in chosen:
        fields += [(name, v) for v in data.draw(st.lists(VALUES, min_size=1, max_size=2))]
    events = world.event_count()
    answer = client.post(
        path,
        content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code in (303, 403, 404, 409, 422), (path, fields, answer.text[-500:])
    if answer.status_code == 303:
        assert answer.headers["location"].startswith("/console/")
    else:
        assert answer.headers["content-type"].startswith("text/html"), (path, answer.text)
        assert world.event_count() == events, (path, fields)
