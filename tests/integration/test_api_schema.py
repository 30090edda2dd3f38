"""Schemathesis against ``/openapi.json`` (issue #4): every operation, authenticated.

Every operation of the published schema is called with generated requests, valid and
invalid ones (schemathesis' examples, coverage and fuzzing phases, positive and negative
modes), as the coordinator, a focal point and an auditor (the public and operations
endpoints without a token), over a network with two real cases, an assistance referral, a
feedback item and a receipt code, at which about half of the valid requests are aimed. Every
answer must:

- not be a server error (5xx), but the documented 503 of the endpoints that read the read
  models (none exists in this world: no projector runs);
- have a documented status, its documented content type, and its documented body;
- when it is a 4xx, be ``application/problem+json`` with ``status`` (the HTTP status),
  ``title`` and ``detail``;
- when it is not a success, have recorded nothing (the event store's position is unchanged);
- when the request was generated invalid, be a 4xx.

The examples and the coverage phase do not depend on a seed: every caller would send the same
requests in them. The fuzzing phase is derandomised, its seed derived from the test's source
and, Hypothesis' pytest plugin adds it, the test's id (operation and caller): each caller's 20
requests are their own, the same in every run. So the default suite divides the work
(docs/testing.md):

- ``test_every_operation``: every operation as the coordinator (the caller who passes the
  authorisation of most operations, so whose requests reach the handlers), in all three
  phases: schemathesis' examples, its coverage phase (every boundary and every invalid
  variant of every parameter and body field, deterministic) and fuzzing; the operations
  without a token once, without one (the callers' examples and coverage requests of them
  were identical);
- ``test_every_operation_as_the_others``: every authenticated operation as a focal point and
  as an auditor (the refusals and the need-to-know-filtered answers), in the examples and
  fuzzing phases (20 fuzzed requests of each caller's own);
- ``tests/fuzz/test_api_schema_coverage.py`` (``make fuzz``, marker ``fuzz``): the coverage
  phase as the focal point and the auditor, the last part of the full matrix.
"""

from __future__ import annotations

import tempfile
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests import lazy_schemathesis
from tests.api_world import World, make_world

PROBLEM_JSON = "application/problem+json"

CALLERS = ("coordinator", "focal_point_own", "auditor")
"""The callers every authenticated operation is exercised as."""

WITHOUT_TOKEN = ("/v1/public/", "/healthz", "/readyz", "/status")
"""Operations that take no token: called without one (once, not once per caller)."""

READ_MODEL_ENDPOINTS = ("/v1/inbox/", "/v1/assistance/", "/v1/stats")
"""Operations answered from the read models. No projector runs in this world, so none
exists: they answer their documented 503 ("read model not ready", problem+json with
Retry-After). That is the contract, not a server bug; any other 5xx is."""
REGISTER_ENDPOINTS = ("/v1/cases", "/v1/cases/export")
"""The case register's list and export (#21), answered from its read model likewise."""

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# ------------------------------------------------------------------ the world


@pytest.fixture(autouse=True)
def _built_test_released(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test's built schemathesis test is let go once it has run
    (``lazy_schemathesis.release``): the collector's full passes do not walk it again."""
    yield
    lazy_schemathesis.release(request.node)


@pytest.fixture(scope="module", autouse=True)
def _clients_ignore_the_environment() -> Iterator[None]:
    """Schemathesis calls the app through a ``requests`` session made for each request, which
    reads the process's environment twice per request for proxies (and ``~/.netrc`` for
    credentials): about 0.3 ms of every call's CPU here, nearly a fifth of it. No proxy, CA
    bundle or netrc entry reaches an application called in-process (the ASGI adapter ignores
    proxies and TLS settings; an entry for ``testserver`` would only add credentials nobody
    meant to send), so the sessions are made not to read them: the same requests."""
    made = schemathesis_asgi.get_client

    def get_client(app: Any, **kwargs: Any) -> schemathesis_asgi.ASGIClient:
        client = made(app, **kwargs)
        client.trust_env = False
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schemathesis_asgi, "get_client", get_client)
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("api-schema")
    store = f"sqlite:///{data_dir / 'events.sqlite3'}"
    mechanism: ComplaintMechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=store)
    )
    try:
        yield make_world(
            data_dir,
            mechanism,
            event_store=store,
            # generous throttles: generated look-ups and web-form complaints must not all
            # end up as 429
            receipt_failures_per_client=10**6,
            receipt_failures_per_locator=10**6,
            public_intake_per_client=10**6,
            # how long a read waits for the (absent) read models before its 503
            read_wait_seconds=0.01,
        )
    finally:
        mechanism.close()


@pytest.fixture(scope="module")
def existing(world: World) -> dict[str, list[str]]:
    """Real resources, created through the API: values by path-parameter name."""
    client = TestClient(world.api)

    def post(path: str, caller: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(path, json=body, headers=world.headers(caller))
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    complaint = {
        "received_at": datetime.now(UTC).isoformat(),
        "channel": "hotline",
        "complainant_role": "survivor",
        "narrative": "A distribution worker asked for sex in exchange for food.",
        "survivor": {"name": "A. Survivor", "phone": "+252 61 000 0000"},
    }
    first = post("/v1/cases", "intake_operator", {**complaint, "issue_receipt": True})
    second = post("/v1/cases", "intake_operator", complaint)
    case_id = first["id"]
    post(
        f"/v1/cases/{case_id}/assessment",
        "focal_point_own",
        {
            "category": "sea_allegation",
            "allegation": {
                "allegation_type": "sexual_exploitation",
                "subtype": "transactional_sex",
                "child_involved": False,
                "implicated_agency": "wfp",
                "personnel_category": "implementing_partner_personnel",
                "victim_sex": "female",
                "victim_age_band": "18+",
                "incident_area": "SO22",
            },
        },
    )
    for consent in (
        {"kind": "assistance_referral", "given_by": "survivor"},
        {"kind": "contact", "given_by": "survivor", "contact_methods": ["phone"]},
    ):
        post(f"/v1/cases/{case_id}/consents", "focal_point_own", consent)
    referral = post(
        f"/v1/cases/{case_id}/assistance-referrals",
        "focal_point_own",
        {"service_type": "medical", "provider": "med-a", "area": "SO22", "share_contact": True},
    )
    post(
        f"/v1/cases/{case_id}/feedback",
        "focal_point_own",
        {"message": "Your complaint is being looked into.", "channel": "receipt_code"},
    )
    feedback = post(
        "/v1/feedback",
        "intake_operator",
        {
            "channel": "hotline",
            "category": "service_complaint",
            "sector": "food_security",
            "concerned_agency": "unhcr",
            "text": "The distribution started two hours late.",
        },
    )
    return {
        "case_id": [case_id, second["id"]],
        "referral_id": [referral["id"]],
        "feedback_id": [feedback["id"]],
        "code": [first["receipt_code"]],
        "agency": ["unhcr", "wfp"],
        "user": ["fp-unhcr"],
    }


def published_schema(
    *, phases: tuple[str, ...], api: FastAPI | None = None
) -> schemathesis.BaseSchema:
    """What the API serves at ``/openapi.json``, tested in the schemathesis ``phases`` named
    (of examples, coverage, fuzzing): it depends on the code only, so it is read from an API
    of its own at collection (``api``, or a new one); every request goes to the world's API."""
    with tempfile.TemporaryDirectory(prefix="cbcm-openapi-") as tmp:
        loaded = schemathesis.openapi.from_asgi(
            "/openapi.json", api or create_app(Settings(data_dir=tmp))
        )
    for name in ("examples", "coverage", "fuzzing"):
        if name not in phases:
            loaded.config.phases.get_by_name(name=name).enabled = False
    return loaded


WITHOUT_TOKEN_PATHS = "^(" + "|".join(WITHOUT_TOKEN) + ")"

# one API generates the document for both (FastAPI keeps it once generated: a second API
# cost about 1 s of CPU in every worker's collection); each schema parses its own copy
with tempfile.TemporaryDirectory(prefix="cbcm-openapi-") as _data_dir:
    _api = create_app(Settings(data_dir=_data_dir))
    schema = published_schema(phases=("examples", "coverage", "fuzzing"), api=_api)
    authenticated_schema = published_schema(phases=("examples", "fuzzing"), api=_api).exclude(
        path_regex=WITHOUT_TOKEN_PATHS
    )

FUZZ_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# ------------------------------------------------------------------ the test


def _aim_at_existing(case: schemathesis.Case, existing: dict[str, list[str]]) -> None:
    """Point about half of the valid requests' path parameters at real resources; the others
    keep their generated values (mostly ids of nothing). The choice is a function of the
    generated value, so a run is as repeatable as the generation."""
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative or not case.path_parameters:
        return
    for name, value in list(case.path_parameters.items()):
        choices = existing.get(name)
        pick = zlib.crc32(str(value).encode()) % 4
        if not choices or pick >= len(choices):
            continue
        if name.endswith("_id"):
            try:
                uuid.UUID(str(value))
            except ValueError:
                continue
        case.path_parameters[name] = choices[pick]


def _content_type(response: schemathesis.Response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0].split(";")[0].strip()


def _assert_problem(response: schemathesis.Response, label: str) -> None:
    content_type = _content_type(response)
    assert content_type == PROBLEM_JSON, f"{label}: {content_type!r}, not {PROBLEM_JSON}"
    body = response.json()
    assert isinstance(body, dict), f"{label}: {body!r}"
    assert body.get("status") == response.status_code, f"{label}: {body!r}"
    assert isinstance(body.get("title"), str), f"{label}: {body!r}"
    assert body["title"], f"{label}: {body!r}"
    assert isinstance(body.get("detail"), str), f"{label}: {body!r}"


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation(
    case: schemathesis.Case, world: World, existing: dict[str, list[str]], caller: str
) -> None:
    path = case.operation.path
    if path.startswith(WITHOUT_TOKEN):
        # no token whoever the caller is: each caller's run is one more batch of inputs
        headers: dict[str, str] = {}
        if case.headers:
            case.headers.pop("Authorization", None)
    else:
        headers = world.headers(caller)
    _aim_at_existing(case, existing)

    before = world.event_count()
    response = case.call(headers=headers, app=world.api)
    recorded = world.event_count() - before
    status = response.status_code
    label = f"{status} from {case.method} {case.formatted_path} as {caller}"

    if status >= 500:
        from_read_model = path.startswith(READ_MODEL_ENDPOINTS) or path in REGISTER_ENDPOINTS
        if from_read_model and status == 503:
            _assert_problem(response, label)
            assert response.headers.get("retry-after"), label
        else:
            assert path in ("/readyz", "/status") and status == 503, label
    checks = CHECKS
    case.validate_response(response, checks=checks, headers=headers)
    if 400 <= status < 500:
        _assert_problem(response, label)
    if status >= 400:
        assert recorded == 0, f"{label} recorded {recorded} event(s)"


# The coordinator's test above keeps its source to the character: Hypothesis derives the
# derandomised inputs from it, so an edit of it is a different sample of requests.


@pytest.fixture(params=("coordinator",))
def caller(request: pytest.FixtureRequest) -> str:
    """``test_every_operation``'s caller (the other two: ``test_every_operation_as_the_others``
    and ``make fuzz``)."""
    return str(request.param)


@authenticated_schema.parametrize()
@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "coordinator"])
@FUZZ_SETTINGS
def test_every_operation_as_the_others(
    case: schemathesis.Case, world: World, existing: dict[str, list[str]], caller: str
) -> None:
    check_operation(case, world, existing, caller)


def check_operation(
    case: schemathesis.Case, world: World, existing: dict[str, list[str]], caller: str
) -> None:
    """Call ``case`` as ``caller`` and check the answer (the module's docstring)."""
    path = case.operation.path
    if path.startswith(WITHOUT_TOKEN):
        # no token: these operations are run once, as nobody
        headers: dict[str, str] = {}
        if case.headers:
            case.headers.pop("Authorization", None)
    else:
        headers = world.headers(caller)
    _aim_at_existing(case, existing)

    before = world.event_count()
    response = case.call(headers=headers, app=world.api)
    recorded = world.event_count() - before
    status = response.status_code
    label = f"{status} from {case.method} {case.formatted_path} as {caller}"

    if status >= 500:
        from_read_model = path.startswith(READ_MODEL_ENDPOINTS) or path in REGISTER_ENDPOINTS
        if from_read_model and status == 503:
            _assert_problem(response, label)
            assert response.headers.get("retry-after"), label
        else:
            assert path in ("/readyz", "/status") and status == 503, label
    checks = CHECKS
    case.validate_response(response, checks=checks, headers=headers)
    if 400 <= status < 500:
        _assert_problem(response, label)
    if status >= 400:
        assert recorded == 0, f"{label} recorded {recorded} event(s)"
