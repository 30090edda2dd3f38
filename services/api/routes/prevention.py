"""The network's prevention work (issue #22): trainings, awareness and consultations, the
focal-point network's readiness, risk assessments, the work plan and the prevention policy;
the reads (compliance, refreshers, coverage, risks, the risk map) and the quarterly report for
the Humanitarian Coordinator (XLSX or a printable page).

An agency's focal points record their agency's work, the coordinator the network's (and may
record any agency's returns). Everything is codes and counts; the only identifiers are the
account ids of focal points and alternates, shown to the coordinator and to their own
agency's focal points only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from domain.actors import Role
from domain.prevention import TrainedCounts, TrainingTarget, work_plan_id
from services.api.auth import CurrentPrincipal, require_role
from services.api.problems import Problem
from services.api.schemas.common import PROBLEM_RESPONSES, EmptyIn, WrittenOut
from services.api.schemas.prevention import (
    ActivityIn,
    AlternateIn,
    AwarenessIn,
    FocalPointTrainingIn,
    MitigationIn,
    PreventionPolicyIn,
    ProgressIn,
    ReassessmentIn,
    RiskAssessmentIn,
    StatusIn,
    TrainingIn,
    WorkPlanIn,
)
from services.api.writes import Command, in_thread, mechanism, now, perform, perform_command
from services.application.commands import expecting
from services.identity.tokens import Principal
from services.prevention.reads import latest_release, prevention_view
from services.prevention.report import gather, to_html, to_xlsx
from services.statistics.releases import LedgerPlace

RECORDERS = (Role.FOCAL_POINT, Role.COORDINATOR)
COORDINATOR = (Role.COORDINATOR,)
READERS = (Role.COORDINATOR, Role.FOCAL_POINT, Role.STATISTICS_READER, Role.AUDITOR)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NO_STORE = {"Cache-Control": "no-store"}

RecordId = Annotated[UUID, Path(description="the record")]
Year = Annotated[int, Path(ge=2000, le=2100, description="the work plan's year")]
Agency = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="agency code")]


router = APIRouter(prefix="/v1/prevention", tags=["prevention"], responses=PROBLEM_RESPONSES)
"""The prevention writes and the reads that need only the event store."""


# ----------------------------------------------------------------- writes


async def _record(
    request: Request,
    principal: Principal,
    command: Command,
    body: BaseModel,
    *on: object,
    roles: Iterable[Role] = RECORDERS,
    status: int = 200,
    **extra: object,
) -> JSONResponse:
    """``perform_command`` for the recorders of prevention work (or ``roles``)."""
    return await perform_command(
        request, principal, roles, command, body, *on, status=status, **extra
    )


@router.post("/trainings", status_code=201, response_model=WrittenOut)
async def record_training(
    request: Request, principal: CurrentPrincipal, body: TrainingIn
) -> JSONResponse:
    """Record a PSEA training session (counts by sex; no participant is named)."""
    actor = require_role(principal, RECORDERS)
    trained = body.trained
    return await perform(
        request,
        principal,
        lambda app: app.record_training(
            actor=actor,
            agency=body.agency,
            held_on=body.held_on,
            area=body.area,
            audience=body.audience,
            topic=body.topic,
            trained=TrainedCounts(
                female=trained.female,
                male=trained.male,
                other_or_not_recorded=trained.other_or_not_recorded,
            ),
            at=now(),
        ),
        status=201,
    )


@router.post("/trainings/{record_id}/withdrawal", response_model=WrittenOut)
async def withdraw_training(
    request: Request, principal: CurrentPrincipal, record_id: RecordId, body: EmptyIn
) -> JSONResponse:
    """Withdraw a training session recorded in error."""
    return await _record(request, principal, lambda app: app.withdraw_training, body, record_id)


@router.post("/awareness", status_code=201, response_model=WrittenOut)
async def record_awareness(
    request: Request, principal: CurrentPrincipal, body: AwarenessIn
) -> JSONResponse:
    """Record an awareness activity or community consultation, with the reporting
    channels the community said it would use."""
    return await _record(request, principal, lambda app: app.record_awareness, body, status=201)


@router.post("/awareness/{record_id}/withdrawal", response_model=WrittenOut)
async def withdraw_awareness(
    request: Request, principal: CurrentPrincipal, record_id: RecordId, body: EmptyIn
) -> JSONResponse:
    return await _record(request, principal, lambda app: app.withdraw_awareness, body, record_id)


@router.post("/readiness/{agency}/alternates", response_model=WrittenOut)
async def appoint_alternate(
    request: Request, principal: CurrentPrincipal, agency: Agency, body: AlternateIn
) -> JSONResponse:
    """Name an alternate focal point of ``agency`` (an account identifier)."""
    return await _record(request, principal, lambda app: app.appoint_alternate, body, agency=agency)


@router.post("/readiness/{agency}/alternate-withdrawals", response_model=WrittenOut)
async def withdraw_alternate(
    request: Request, principal: CurrentPrincipal, agency: Agency, body: AlternateIn
) -> JSONResponse:
    return await _record(
        request, principal, lambda app: app.withdraw_alternate, body, agency=agency
    )


@router.post("/readiness/{agency}/trainings", response_model=WrittenOut)
async def record_focal_point_training(
    request: Request, principal: CurrentPrincipal, agency: Agency, body: FocalPointTrainingIn
) -> JSONResponse:
    """Record that a focal point or alternate of ``agency`` completed PSEA training."""
    return await _record(
        request, principal, lambda app: app.record_focal_point_training, body, agency=agency
    )


@router.post("/risk-assessments", status_code=201, response_model=WrittenOut)
async def assess_risk(
    request: Request, principal: CurrentPrincipal, body: RiskAssessmentIn
) -> JSONResponse:
    """Rate SEA risk in an area and sector on the policy's template (each factor 1-5)."""
    return await _record(request, principal, lambda app: app.assess_risk, body, status=201)


@router.post("/risk-assessments/{record_id}/reassessment", response_model=WrittenOut)
async def reassess_risk(
    request: Request, principal: CurrentPrincipal, record_id: RecordId, body: ReassessmentIn
) -> JSONResponse:
    return await _record(
        request,
        principal,
        lambda app: app.reassess_risk,
        body,
        expecting(record_id, body.expected_version),
    )


@router.post("/risk-assessments/{record_id}/mitigation", response_model=WrittenOut)
async def agree_mitigation(
    request: Request, principal: CurrentPrincipal, record_id: RecordId, body: MitigationIn
) -> JSONResponse:
    """Agree a mitigation action with an owner agency and a due date."""
    return await _record(request, principal, lambda app: app.agree_mitigation, body, record_id)


@router.post("/risk-assessments/{record_id}/mitigation/{action}/status", response_model=WrittenOut)
async def report_mitigation(
    request: Request,
    principal: CurrentPrincipal,
    record_id: RecordId,
    action: Annotated[int, Path(ge=1, le=100)],
    body: StatusIn,
) -> JSONResponse:
    return await _record(
        request, principal, lambda app: app.report_mitigation, body, record_id, action=action
    )


@router.post("/work-plans", status_code=201, response_model=WrittenOut)
async def open_work_plan(
    request: Request, principal: CurrentPrincipal, body: WorkPlanIn
) -> JSONResponse:
    """Open the network's collective work plan of a year (the coordinator)."""
    return await _record(
        request, principal, lambda app: app.open_work_plan, body, roles=COORDINATOR, status=201
    )


@router.post("/work-plans/{year}/activities", response_model=WrittenOut)
async def plan_activity(
    request: Request, principal: CurrentPrincipal, year: Year, body: ActivityIn
) -> JSONResponse:
    return await _record(
        request,
        principal,
        lambda app: app.plan_activity,
        body,
        work_plan_id(year),
        roles=COORDINATOR,
    )


@router.post("/work-plans/{year}/activities/{activity}/progress", response_model=WrittenOut)
async def report_progress(
    request: Request,
    principal: CurrentPrincipal,
    year: Year,
    activity: Annotated[int, Path(ge=1, le=500)],
    body: ProgressIn,
) -> JSONResponse:
    """The owner agency reports an activity's status and what it achieved so far."""
    return await _record(
        request,
        principal,
        lambda app: app.report_work_plan_progress,
        body,
        work_plan_id(year),
        activity=activity,
    )


@router.put("/policy", response_model=WrittenOut)
async def set_policy(
    request: Request, principal: CurrentPrincipal, body: PreventionPolicyIn
) -> JSONResponse:
    """Set the prevention policy: refresher interval, risk template, training targets."""
    actor = require_role(principal, (Role.COORDINATOR,))
    targets = tuple(TrainingTarget(t.agency, t.year, t.personnel) for t in body.training_targets)
    return await perform(
        request,
        principal,
        lambda app: app.set_prevention_policy(
            actor=actor,
            refresher_every_days=body.refresher_every_days,
            risk_factors=tuple(body.risk_factors),
            training_targets=targets,
            at=now(),
            expected_version=body.expected_version,
        ),
    )


# ----------------------------------------------------------------- reads


async def _view(request: Request) -> Any:
    app = mechanism(request)
    return await in_thread(lambda: prevention_view(app))


def _json(payload: object) -> JSONResponse:
    return JSONResponse(payload, headers=NO_STORE)


def _only(request: Request, *names: str) -> None:
    """422 for a query parameter the read does not take, or one given twice: a misspelt
    ``quater=2`` must not quietly give the whole year."""
    given = request.query_params
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise Problem(422, "this read takes only the query parameters " + ", ".join(names))
    if any(len(given.getlist(name)) > 1 for name in names):
        raise Problem(422, "a query parameter is given more than once")


@router.get("/compliance")
async def compliance(
    request: Request,
    principal: CurrentPrincipal,
    year: Annotated[int, Query(ge=2000, le=2100)],
) -> JSONResponse:
    """Personnel trained per agency in ``year`` against the policy's targets."""
    _only(request, "year")
    require_role(principal, READERS)
    view = await _view(request)
    return _json({"year": year, "agencies": view.training_compliance(year)})


@router.get("/readiness")
async def readiness(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Per agency: focal points and alternates, trained and due for a refresher (counts).
    The coordinator and an agency's own focal points also get the list of accounts due."""
    reader = require_role(principal, READERS)
    view = await _view(request)
    today = now().date()
    people = [
        p
        for p in view.refreshers(today)
        if reader.role is Role.COORDINATOR
        or (reader.role is Role.FOCAL_POINT and p["agency"] == reader.agency)
    ]
    return _json({"agencies": view.readiness(today), "people": people})


@router.get("/coverage")
async def coverage(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Per area: awareness activities and reach, trainings, preferred channels."""
    require_role(principal, READERS)
    return _json({"areas": (await _view(request)).coverage()})


@router.get("/risks")
async def risks(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Every risk assessment, highest first, with its mitigation."""
    require_role(principal, READERS)
    return _json({"assessments": (await _view(request)).risks(now().date())})


def prevention_reports_router(ledger: LedgerPlace) -> APIRouter:
    """The risk map and the quarterly report: they take allegation counts from the
    statistics release ledger at ``ledger``."""
    reports = APIRouter(prefix="/v1/prevention", tags=["prevention"], responses=PROBLEM_RESPONSES)

    @reports.get("/risk-map")
    async def risk_map(
        request: Request,
        principal: CurrentPrincipal,
        year: Annotated[int, Query(ge=2000, le=2100)],
        quarter: Annotated[int | None, Query(ge=1, le=4)] = None,
    ) -> JSONResponse:
        """Per area: assessed risk, open mitigation, training and awareness coverage, and the
        SEA allegations of the latest statistics release of the period (its own cells:
        withheld ones stay withheld)."""
        _only(request, "year", "quarter")
        require_role(principal, READERS)
        view = await _view(request)
        release = await in_thread(lambda: latest_release(ledger, year, quarter))
        return _json(
            {
                "release": None if release is None else release.release.id,
                "areas": view.risk_map(now().date(), release),
            }
        )

    @reports.get("/work-plans/{year}")
    async def work_plan(request: Request, principal: CurrentPrincipal, year: Year) -> JSONResponse:
        require_role(principal, READERS)
        view = await _view(request)
        return _json({"year": year, "activities": view.work_plan(year, now().date())})

    @reports.get(
        "/reports/{period}",
        responses={200: {"content": {XLSX: {}, "text/html": {}}}},
    )
    async def quarterly_report(
        request: Request,
        principal: CurrentPrincipal,
        period: Annotated[
            str,
            Path(pattern=r"^(20[0-9]{2}|2100)-Q[1-4]$", description="the quarter, e.g. 2026-Q3"),
        ],
        format: Annotated[Literal["xlsx", "html"], Query()] = "xlsx",
    ) -> Response:
        """The quarterly report for the Humanitarian Coordinator: the statistics release,
        training compliance, focal points, coverage, the risk map and the work plan; as XLSX
        or as a printable page (``?format=html``)."""
        _only(request, "format")
        year, quarter = int(period[:4]), int(period[-1])
        require_role(principal, (Role.COORDINATOR, Role.STATISTICS_READER, Role.AUDITOR))
        view = await _view(request)
        release = await in_thread(lambda: latest_release(ledger, year, quarter))
        report = gather(view, year=year, quarter=quarter, today=now().date(), release=release)
        if format == "html":
            return HTMLResponse(to_html(report), headers=NO_STORE)
        return Response(
            await in_thread(lambda: to_xlsx(report)),
            media_type=XLSX,
            headers={
                **NO_STORE,
                "Content-Disposition": f'attachment; filename="psea-report-{period.lower()}.xlsx"',
            },
        )

    return reports
