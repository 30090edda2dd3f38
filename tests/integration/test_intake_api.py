"""Intake from KoboToolbox, RapidPro/TextIt and a hotline log (issue #19): each submission
becomes the case or feedback ``POST /v1/cases`` / ``/v1/feedback`` would record, once; what
does not fit is a 422 problem that records nothing, is counted, and names no value.

The payloads are the tools' own shapes: Kobo's REST Services JSON (question names with their
group path, ``_uuid``, ``meta/instanceID``, ``end``, ``_submission_time``, ``_attachments``...),
RapidPro's default "Call webhook" body (``contact``, ``flow``, ``path``, ``results`` with
``value``/``category``, ``run``, ``input``, ``channel``) and a hotline log as CSV and as JSON
lines.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import structlog
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from domain.vocabulary import Channel, ComplainantRole
from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.api_world import World, make_world

CANARY_NAME = "Zyxwvut Canaryname"
CANARY_TEXT = "canary-narrative-7f3c: a worker at the food distribution asked for sex"
NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - timedelta(hours=3)


def kobo_submission(**answers: Any) -> dict[str, Any]:
    """A submission as KoboToolbox REST Services post it, for the documented form."""
    uuid = answers.pop("_uuid", "4e1c5e3a-1f2b-4c3d-9e8f-0a1b2c3d4e5f")
    body: dict[str, Any] = {
        "_id": 187423119,
        "formhub/uuid": "b1f6ec4b0c7d4d39a0b5b1b2f64e1c11",
        "start": (RECENT - timedelta(minutes=6)).isoformat(timespec="milliseconds"),
        # Kobo writes the device's offset in hours only ("+03"), as in its API's examples
        "end": RECENT.astimezone(timezone(timedelta(hours=3))).strftime("%Y-%m-%dT%H:%M:%S.000+03"),
        "today": RECENT.date().isoformat(),
        "deviceid": "collect:Xy12AbCdEfGhIjKl",
        "grp_intake/kind": "complaint",
        "grp_intake/complainant_role": "witness",
        "grp_intake/immediate_safety_risk": "no",
        "grp_intake/narrative": CANARY_TEXT,
        "__version__": "vP8iQmBZ8bXyCfDn9yZ4wG",
        "meta/instanceID": f"uuid:{uuid}",
        "_xform_id_string": "aFT9hGpW6q4mS3nW2bXkYz",
        "_uuid": uuid,
        "_attachments": [],
        "_status": "submitted_via_web",
        "_geolocation": [None, None],
        "_submission_time": (RECENT + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "_tags": [],
        "_notes": [],
        "_validation_status": {},
        "_submitted_by": None,
    }
    body.update(answers)
    return body


DEFAULT_RESULTS = {
    "kind": {"value": "1", "category": "Complaint"},
    "complainant_role": {"value": "2", "category": "Survivor"},
    "immediate_safety_risk": {"value": "no", "category": "No"},
    "narrative": {"value": CANARY_TEXT, "category": "All Responses"},
    "receipt": {"value": "yes", "category": "Yes"},
}


def rapidpro_run(
    results: dict[str, Any] | None = None, run_uuid: str | None = None
) -> dict[str, Any]:
    """What the flow editor's default "Call webhook" POST body gives (contact, flow, results as
    value and category), with the line the integrator guide adds: the run's uuid and time."""
    return {
        "contact": {
            "uuid": "0b5d6a6e-6d4f-4a0b-8a3e-2c1f1a9c7d21",
            "name": CANARY_NAME,
            "urn": "tel:+252612345678",
        },
        "flow": {"uuid": "9de3663f-c5c5-4c92-9f45-ecbc09abcc85", "name": "PSEA complaint"},
        "run": {
            "uuid": run_uuid or "7a0c4f1e-2d3b-4c5a-9e8f-6b7a8c9d0e1f",
            "created_on": RECENT.isoformat().replace("+00:00", "Z"),
        },
        "results": copy.deepcopy(DEFAULT_RESULTS) if results is None else results,
    }


def rapidpro_legacy_run() -> dict[str, Any]:
    """The legacy webhook payload (goflow's ``legacyWebhookPayload``): the flow, its path,
    every field of each result, the run and the last input."""
    created = RECENT.isoformat().replace("+00:00", "Z")
    results = {
        key: {
            "category": value["category"],
            "category_localized": value["category"],
            "created_on": created,
            "input": value["value"],
            "name": key.replace("_", " ").title(),
            "node_uuid": "e2b7c1d0-9a8f-4e6d-b5c4-a3b2c1d0e9f8",
            "value": value["value"],
        }
        for key, value in DEFAULT_RESULTS.items()
        if key != "receipt"
    }
    return {
        "contact": {
            "uuid": "0b5d6a6e-6d4f-4a0b-8a3e-2c1f1a9c7d21",
            "name": CANARY_NAME,
            "urn": "tel:+252612345678",
        },
        "flow": {
            "uuid": "9de3663f-c5c5-4c92-9f45-ecbc09abcc85",
            "name": "PSEA complaint",
            "revision": 12,
        },
        "path": [
            {
                "uuid": "c3e5a1f2-5b7f-4d0e-8f2a-1b3c5d7e9f01",
                "node_uuid": "e2b7c1d0-9a8f-4e6d-b5c4-a3b2c1d0e9f8",
                "arrived_on": created,
                "exit_uuid": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
            }
        ],
        "results": results,
        "run": {"uuid": "5f4e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c", "created_on": created},
        "input": {
            "attachments": [],
            "channel": {"uuid": "58e9b092-fe42-4173-876c-ff45a14a24fe", "name": "SMS"},
            "created_on": created,
            "text": "no",
            "type": "msg",
            "urn": {"display": "", "path": "+252612345678", "scheme": "tel"},
            "uuid": "f0e1d2c3-b4a5-4968-8776-655443322110",
        },
        "channel": {"uuid": "58e9b092-fe42-4173-876c-ff45a14a24fe", "name": "SMS"},
    }


HOTLINE_CSV = (
    "call_id,received_at,kind,complainant_role,immediate_safety_risk,narrative,"
    "feedback_category,sector,concerned_agency,feedback_text\n"
    f"HL-2026-0001,{RECENT.isoformat()},complaint,anonymous,yes,{CANARY_TEXT},,,,\n"
    f"HL-2026-0002,{RECENT.isoformat()},feedback,,,,service_complaint,food_security,wfp,"
    "The queue at the distribution is too long\n"
    f"HL-2026-0003,{RECENT.isoformat()},complaint,witness,no,Another complaint heard,,,,\n"
)


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


def post(client: TestClient, world: World, tool: str, body: Any, **kw: Any) -> Any:
    headers = world.headers("intake_service", **kw.pop("headers", {}))
    if isinstance(body, bytes | str):
        return client.post(f"/v1/intake/{tool}", content=body, headers=headers, **kw)
    return client.post(f"/v1/intake/{tool}", json=body, headers=headers, **kw)


def intake_counts(world: World) -> dict[tuple[str, str, str], float]:
    counts = {}
    for metric in world.api.state.metrics.registry.collect():
        if metric.name == "cbcm_intake_submissions":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["tool"], labels["outcome"], labels["reason"])] = sample.value
    return counts


# ------------------------------------------------------------------ KoboToolbox


def test_a_kobo_submission_becomes_a_case_held_by_the_service_accounts_agency(
    world: World, client: TestClient
) -> None:
    answer = post(client, world, "kobo", kobo_submission())
    assert answer.status_code == 201, answer.text
    assert answer.json()["kind"] == "complaint"
    case = world.mechanism.get_case(UUID(answer.json()["id"]))
    assert case.custodian == "unhcr"
    assert case.channel is Channel.IN_PERSON
    assert case.complainant_role is ComplainantRole.WITNESS
    assert case.received_at == RECENT  # Kobo's `end`, with its zone
    assert case.narrative == CANARY_TEXT
    assert answer.headers["location"] == f"/v1/cases/{case.id}"


def test_kobo_sending_a_submission_again_records_nothing_twice(
    world: World, client: TestClient
) -> None:
    first = post(client, world, "kobo", kobo_submission())
    events = world.event_count()
    again = post(client, world, "kobo", kobo_submission(), params={})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    assert world.event_count() == events


def test_kobo_channel_comes_from_the_rest_service_url_and_feedback_goes_to_the_cfm(
    world: World, client: TestClient
) -> None:
    feedback = kobo_submission(
        _uuid="0d7c1a22-3b44-4c55-8d66-7e8899aabbcc",
        **{
            "grp_intake/kind": "feedback",
            "grp_fb/feedback_category": "suggestion",
            "grp_fb/sector": "wash",
            "grp_fb/concerned_agency": "wfp",
            "grp_fb/feedback_text": "More latrines near block C",
        },
    )
    answer = post(client, world, "kobo", feedback, params={"channel": "complaint_box"})
    assert answer.status_code == 201, answer.text
    item = world.mechanism.get_feedback(UUID(answer.json()["id"]))
    assert item.channel is Channel.COMPLAINT_BOX and item.concerned_agency == "wfp"


def test_the_same_kobo_submission_with_other_answers_is_refused_and_records_nothing(
    world: World, client: TestClient
) -> None:
    post(client, world, "kobo", kobo_submission())
    events = world.event_count()
    edited = kobo_submission(**{"grp_intake/complainant_role": "survivor"})
    answer = post(client, world, "kobo", edited)
    assert answer.status_code == 422
    assert world.event_count() == events


def test_only_an_intake_service_account_may_post_to_intake(
    world: World, client: TestClient
) -> None:
    for caller in ("intake_operator", "focal_point_own", "coordinator"):
        answer = client.post(
            "/v1/intake/kobo", json=kobo_submission(), headers=world.headers(caller)
        )
        assert answer.status_code == 403, caller
    assert client.post("/v1/intake/kobo", json=kobo_submission()).status_code == 401


# ------------------------------------------------------------------ RapidPro


def test_a_rapidpro_run_becomes_a_case_and_its_receipt_code_is_answered_again_on_a_resend(
    world: World, client: TestClient
) -> None:
    first = post(client, world, "rapidpro", rapidpro_run())
    assert first.status_code == 201, first.text
    code = first.json()["receipt_code"]
    assert code
    case = world.mechanism.get_case(UUID(first.json()["id"]))
    assert case.channel is Channel.SMS_MESSAGING
    assert case.complainant_role is ComplainantRole.SURVIVOR
    assert case.narrative == CANARY_TEXT
    assert case.complainant is None  # the contact's URN is kept only when the flow asks
    events = world.event_count()
    again = post(client, world, "rapidpro", rapidpro_run())
    assert again.status_code == 200 and again.json()["receipt_code"] == code
    assert world.event_count() == events


def test_a_rapidpro_run_that_asks_to_be_contacted_keeps_the_number_as_personal_data(
    world: World, client: TestClient
) -> None:
    results = copy.deepcopy(DEFAULT_RESULTS)
    results["contact_me"] = {"value": "yes", "category": "Yes"}
    del results["receipt"]
    answer = post(client, world, "rapidpro", rapidpro_run(results, run_uuid="1" * 8 + "-x"))
    assert answer.status_code == 201, answer.text
    case = world.mechanism.get_case(UUID(answer.json()["id"]))
    assert case.complainant is not None and case.complainant.phone == "+252612345678"
    assert answer.json()["receipt_code"] is None


def test_the_legacy_rapidpro_webhook_payload_is_taken_too(world: World, client: TestClient) -> None:
    answer = post(client, world, "rapidpro", rapidpro_legacy_run())
    assert answer.status_code == 201, answer.text
    case = world.mechanism.get_case(UUID(answer.json()["id"]))
    assert case.complainant_role is ComplainantRole.SURVIVOR and case.narrative == CANARY_TEXT


def test_the_editors_default_body_without_the_run_is_refused_saying_what_to_add(
    world: World, client: TestClient
) -> None:
    events = world.event_count()
    default = rapidpro_run()
    del default["run"]
    answer = post(client, world, "rapidpro", default)
    assert answer.status_code == 422
    assert answer.json()["type"] == "urn:cbcm:problem:intake-missing-id"
    assert 'object("uuid", run.uuid' in answer.json()["detail"]
    assert world.event_count() == events


# ------------------------------------------------------------------ hotline log


def test_a_hotline_csv_log_records_each_call_once_and_a_resend_only_the_new_calls(
    world: World, client: TestClient
) -> None:
    answer = post(client, world, "hotline", HOTLINE_CSV, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["recorded"], answer.json()["replayed"]) == (3, 0)
    kinds = [r["kind"] for r in answer.json()["records"]]
    assert kinds == ["complaint", "feedback", "complaint"]
    events = world.event_count()
    more = HOTLINE_CSV + f"HL-2026-0004,{RECENT.isoformat()},complaint,other,no,A fourth,,,,\n"
    again = post(client, world, "hotline", more, headers={"Content-Type": "text/csv"})
    assert (again.json()["recorded"], again.json()["replayed"]) == (1, 3)
    assert [r["id"] for r in again.json()["records"][:3]] == [
        r["id"] for r in answer.json()["records"]
    ]
    assert world.event_count() > events
    case = world.mechanism.get_case(UUID(again.json()["records"][0]["id"]))
    assert case.channel is Channel.HOTLINE and case.immediate_safety_risk is True


def test_a_hotline_log_in_json_lines_is_the_same_log(world: World, client: TestClient) -> None:
    lines = "\n".join(
        json.dumps(
            {
                "call_id": f"HL-J-{n}",
                "received_at": RECENT.isoformat(),
                "kind": "complaint",
                "complainant_role": "anonymous",
                "narrative": f"call {n}",
            }
        )
        for n in range(3)
    )
    answer = post(client, world, "hotline", lines, headers={"Content-Type": "application/jsonl"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["recorded"] == 3


def test_a_hotline_log_with_one_bad_record_records_nothing_and_names_its_line(
    world: World, client: TestClient
) -> None:
    events = world.event_count()
    bad = HOTLINE_CSV + f"HL-2026-0009,{RECENT.isoformat()},complaint,boss,no,{CANARY_TEXT},,,,\n"
    answer = post(client, world, "hotline", bad, headers={"Content-Type": "text/csv"})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"].startswith("line 5:")
    assert answer.json()["fields"] == ["complainant_role"]
    assert CANARY_TEXT not in answer.text and "boss" not in answer.text
    assert world.event_count() == events


# ------------------------------------------------------------------ malformed: always 422


_JUNK = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)


def _broken_kobo(draw: Any) -> dict[str, Any]:
    body = kobo_submission(_uuid=str(draw(st.uuids())))
    how = draw(st.sampled_from(["no_id", "kind", "role", "narrative", "risk", "time", "twice"]))
    if how == "no_id":
        del body["_uuid"], body["meta/instanceID"]
    elif how == "kind":
        body["grp_intake/kind"] = draw(
            st.text(max_size=12).filter(
                lambda t: t.strip().lower() not in ("complaint", "feedback")
            )
        )
    elif how == "role":
        body["grp_intake/complainant_role"] = draw(
            st.text(min_size=1, max_size=12).filter(
                lambda t: t.strip() not in {r.value for r in ComplainantRole}
            )
        )
    elif how == "narrative":
        body["grp_intake/narrative"] = draw(st.sampled_from([None, "", "   ", [1], {"a": 1}, True]))
    elif how == "risk":
        body["grp_intake/immediate_safety_risk"] = draw(
            st.sampled_from(["maybe", "2", "yes please", [True]])
        )
    elif how == "time":
        body["end"] = draw(st.sampled_from(["yesterday", "2026-13-45", "12:00"]))
    else:
        body["grp_other/narrative"] = "twice"
    return body


def _broken_rapidpro(draw: Any) -> dict[str, Any]:
    run = rapidpro_run(run_uuid=str(draw(st.uuids())))
    how = draw(st.sampled_from(["no_run", "no_results", "kind", "role", "risk"]))
    if how == "no_run":
        del run["run"]
    elif how == "no_results":
        run["results"] = draw(st.sampled_from([None, [], "x"]))
    elif how == "kind":
        run["results"]["kind"] = {"value": "x", "category": "Other"}
    elif how == "role":
        run["results"]["complainant_role"] = {"value": "9", "category": "Chief"}
    else:
        run["results"]["immediate_safety_risk"] = {"value": "perhaps", "category": "Other"}
    return run


@st.composite
def malformed(draw: Any) -> tuple[str, bytes, str]:
    tool = draw(st.sampled_from(["kobo", "rapidpro", "hotline"]))
    if draw(st.booleans()):
        return tool, draw(_JUNK), "application/json"
    if tool == "kobo":
        return tool, json.dumps(_broken_kobo(draw)).encode(), "application/json"
    if tool == "rapidpro":
        return tool, json.dumps(_broken_rapidpro(draw)).encode(), "application/json"
    lines = HOTLINE_CSV.splitlines()
    row = draw(st.integers(1, len(lines) - 1))
    cells = lines[row].split(",")
    column = draw(st.sampled_from([0, 1, 2, 3]))
    cells[column] = {0: "", 1: "not a time", 2: "neither", 3: "boss"}[column]
    if cells[2] == "feedback" and column in (1, 3):
        cells[6] = "nonsense"
    lines[row] = ",".join(cells)
    return tool, ("\n".join(lines) + "\n").encode(), "text/csv"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=malformed())
def test_malformed_submissions_are_refused_with_422_counted_and_record_nothing(
    world: World, client: TestClient, case: tuple[str, bytes, str]
) -> None:
    tool, body, content_type = case
    events = world.event_count()
    before = sum(v for (t, o, _), v in intake_counts(world).items() if (t, o) == (tool, "refused"))
    answer = post(client, world, tool, body, headers={"Content-Type": content_type})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert world.event_count() == events
    after = sum(v for (t, o, _), v in intake_counts(world).items() if (t, o) == (tool, "refused"))
    assert after == before + 1


# ------------------------------------------------------------------ no personal data


def test_intake_puts_no_personal_data_in_logs_metrics_or_problems(
    world: World, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        answers = [
            post(client, world, "kobo", kobo_submission()),
            post(client, world, "rapidpro", rapidpro_run()),
            post(client, world, "hotline", HOTLINE_CSV, headers={"Content-Type": "text/csv"}),
            # refused ones, with the canaries in the fields at fault
            post(client, world, "kobo", kobo_submission(**{"grp_intake/kind": CANARY_NAME})),
            post(
                client,
                world,
                "rapidpro",
                rapidpro_run({"kind": {"value": CANARY_TEXT, "category": CANARY_NAME}}, "r-2"),
            ),
        ]
    assert [a.status_code for a in answers] == [201, 201, 200, 422, 422]
    metrics = generate_latest(world.api.state.metrics.registry).decode()
    seen = "\n".join([repr(logs), caplog.text, metrics, *(a.text for a in answers[3:])])
    for canary in (CANARY_NAME, CANARY_TEXT, "canary-narrative", "+252612345678"):
        assert canary not in seen
    counts = intake_counts(world)
    assert counts[("kobo", "recorded", "")] == 1
    assert counts[("kobo", "refused", "unknown_kind")] == 1
    assert counts[("hotline", "recorded", "")] == 3


def test_kobo_idempotency_keys_derive_from_the_submission_through_the_intake_key(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    """The store holds neither the key nor anything a submission id alone would give: a
    record saved by one intake key is not found through another (a new key file)."""
    post(client, world, "kobo", kobo_submission())
    key_file = tmp_path / "keys" / "intake.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    world.api.state.intake_key = b"\x01" * 32
    events = world.event_count()
    other = post(client, world, "kobo", copy.deepcopy(kobo_submission()))
    assert other.status_code == 201  # another key: not recognised as the same submission
    assert world.event_count() > events


@pytest.mark.parametrize(
    ("tool", "content_type"),
    [
        ("kobo", "application/json"),
        ("rapidpro", "application/json"),
        ("hotline", "application/x-ndjson"),
    ],
)
def test_a_body_nested_thousands_deep_is_a_422_not_a_server_error(
    world: World, client: TestClient, tool: str, content_type: str
) -> None:
    """Attack review of #19: ``[`` 3,000 deep made json.loads raise RecursionError: a 500."""
    before = world.event_count()
    answer = client.post(
        f"/v1/intake/{tool}",
        content=b"[" * 3000 + b"]" * 3000,
        headers={**world.headers("intake_service"), "Content-Type": content_type},
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert world.event_count() == before
