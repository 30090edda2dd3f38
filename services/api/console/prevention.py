"""Prevention work in the console (issue #22): training compliance per agency and year,
focal-point readiness, awareness coverage by area, risk assessments with their mitigation, the
work plan and the risk map ("risk high, coverage low"), each as a table (and a chart where a
chart helps); the forms that record them for the roles ``/v1/prevention`` lets record them;
and the quarterly report for the Humanitarian Coordinator (XLSX, or the printable page).

The reads are the API's (``services.prevention.reads.prevention_view``, the same view and the
same rules: account ids due for a refresher only to the coordinator and the agency's own
focal points); the risk map's allegation column is the statistics release's own cell.
Everything recorded here is codes and counts: no one is named but the focal points and
alternates, by account id.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Final
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from domain.actors import Actor, Role
from domain.prevention import DEFAULT_RISK_FACTORS, TrainedCounts, TrainingTarget, work_plan_id
from domain.vocabulary import (
    ActionStatus,
    AudienceCategory,
    AwarenessKind,
    Channel,
    CommunityAudience,
    MitigationMeasure,
    Sector,
    TrainingTopic,
    WorkPlanActivityKind,
)
from projections.prevention import PreventionView
from services.api.console.figures import numbers_chart
from services.api.console.recording import (
    FormProblem,
    as_list,
    holds,
    in_thread,
    matching,
    mechanism,
    parse,
    posted,
    record,
    role_in,
    translations,
)
from services.api.console.session import SignedIn, Staff
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.routes.prevention import READERS, RECORDERS, XLSX
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
from services.api.writes import calling, now
from services.application.commands import Written, expecting
from services.application.mechanism import ComplaintMechanism
from services.prevention.reads import latest_release, prevention_view, quarter_of
from services.prevention.report import gather, to_html, to_xlsx
from services.statistics.releases import ledger_place

router = APIRouter(prefix="/console")

NAV.append(("/console/prevention", N_("Prevention"), READERS))

PAGE: Final = "/console/prevention"
REPORT_READERS: Final = (Role.COORDINATOR, Role.STATISTICS_READER, Role.AUDITOR)
"""Who may take the quarterly report (as ``GET /v1/prevention/reports/{period}``)."""


def _today() -> date:
    return datetime.now(UTC).date()


async def _view(request: Request) -> PreventionView:
    app = mechanism(request)
    return await in_thread(lambda: prevention_view(app))


def _versions(app: ComplaintMechanism, ids: list[str]) -> dict[str, int]:
    """Each risk assessment's version, for the reassessment forms' ``expected_version``."""
    return {i: app.repository.get(UUID(i)).version for i in ids}


def _policy(app: ComplaintMechanism) -> dict[str, Any]:
    """The prevention policy as the form shows it, with the version it is read at (none
    while the defaults apply)."""
    policy = app.prevention_policy()
    if policy is None:
        return {
            "version": "",
            "refresher_every_days": 365,
            "risk_factors": " ".join(DEFAULT_RISK_FACTORS),
            "targets": "",
        }
    return {
        "version": policy.version,
        "refresher_every_days": policy.refresher_every.days,
        "risk_factors": " ".join(policy.risk_factors),
        "targets": "\n".join(f"{t.agency} {t.year} {t.personnel}" for t in policy.training_targets),
    }


async def _page(
    request: Request,
    staff: Staff,
    year: int,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    reader = role_in(staff, READERS)
    gettext = translations(request, staff)
    view = await _view(request)
    today = _today()
    quarter = quarter_of(today) if year == today.year else 4
    ledger = ledger_place(request.app.state.settings)
    release = await in_thread(lambda: latest_release(ledger, year, quarter))
    compliance = view.training_compliance(year)
    risks = view.risks(today)
    app = mechanism(request)
    versions = await in_thread(lambda: _versions(app, [r["risk_assessment_id"] for r in risks]))
    policy = await in_thread(lambda: _policy(app))
    coverage = view.coverage()
    risk_map = view.risk_map(today, release)
    # who is due for a refresher, by account id: the coordinator, and an agency's own focal
    # points for their agency (as GET /v1/prevention/readiness)
    people = [
        p
        for p in view.refreshers(today)
        if reader.role is Role.COORDINATOR
        or (Role.FOCAL_POINT in staff.principal.roles and p["agency"] == staff.principal.agency)
    ]
    recorder = holds(staff, RECORDERS)
    coordinator = holds(staff, (Role.COORDINATOR,))

    def mine(agency: str) -> bool:
        return recorder and (coordinator or agency == staff.principal.agency)

    # what this reader may withdraw as recorded in error: its agency's (the coordinator: all)
    recorded = [
        {
            "id": str(k),
            "what": "training",
            "agency": t.agency,
            "area": t.area,
            "detail": f"{t.audience}, {t.topic}",
            "count": t.trained,
        }
        for k, t in view.trainings.items()
        if not t.withdrawn and t.year == year and mine(t.agency)
    ] + [
        {
            "id": str(k),
            "what": "awareness",
            "agency": a.agency,
            "area": a.area,
            "detail": a.kind,
            "count": a.reach,
        }
        for k, a in view.awareness.items()
        if not a.withdrawn and mine(a.agency)
    ]
    agencies = sorted(set(view.agencies))
    own = [staff.principal.agency] if not coordinator else agencies
    return render(
        request,
        staff,
        "console/prevention.html",
        status_code=status,
        year=year,
        quarter=quarter,
        release=None if release is None else release.release.id,
        compliance=compliance,
        compliance_chart=numbers_chart(
            "chart-compliance",
            gettext("Personnel trained in %(year)s, per agency, against its target")
            % {"year": year},
            gettext("A bar per agency: people trained; a red mark: the policy's target."),
            [(r["agency"], r["personnel_trained"], r["target"]) for r in compliance],
            gettext,
        ),
        readiness=view.readiness(today),
        people=people,
        coverage=coverage,
        coverage_chart=numbers_chart(
            "chart-coverage",
            gettext("People reached by awareness activities, per area"),
            gettext("A bar per area: people reached (the table also gives people trained)."),
            [(r["area"], r["people_reached"], None) for r in coverage],
            gettext,
        ),
        risks=risks,
        versions=versions,
        policy=policy,
        risk_map=risk_map,
        risk_chart=numbers_chart(
            "chart-risk",
            gettext("Highest assessed SEA risk per area (1 low to 5 very high)"),
            gettext("A bar per area: the highest mean rating of its risk assessments."),
            [(r["area"], r["highest_score"], None) for r in risk_map],
            gettext,
        ),
        work_plan=view.work_plan(year, today),
        risk_factors=list(view.risk_factors or DEFAULT_RISK_FACTORS),
        recorded=recorded,
        recorder=recorder,
        coordinator=coordinator,
        report_reader=holds(staff, REPORT_READERS),
        agencies=own,
        all_agencies=agencies,
        today=today.isoformat(),
        vocab={
            "audience": [str(v) for v in AudienceCategory],
            "topic": [str(v) for v in TrainingTopic],
            "kind": [str(v) for v in AwarenessKind],
            "community": [str(v) for v in CommunityAudience],
            "channel": [str(v) for v in Channel],
            "sector": [str(v) for v in Sector],
            "measure": [str(v) for v in MitigationMeasure],
            "status": [str(v) for v in ActionStatus],
            "activity": [str(v) for v in WorkPlanActivityKind],
        },
        error=error,
        done=request.query_params.get("done") == "1",
    )


@router.get("/prevention")
async def prevention(request: Request, staff: SignedIn, year: str = "") -> Response:
    role_in(staff, READERS)
    if not year:
        return await _page(request, staff, _today().year)
    matching(staff, year, r"20[0-9]{2}|2100", N_("The year must be between 2000 and 2100."))
    return await _page(request, staff, int(year))


def _command(action: str, actor: Actor, fields: dict[str, Any], gettext: Any) -> Any:
    """The application call ``action`` stands for, with the form read by the API's schema
    (``FormProblem`` when it is not right)."""
    if action == "trainings":
        trained = {
            k: fields.pop(k, "0") or "0" for k in ("female", "male", "other_or_not_recorded")
        }
        counts = {}
        for k, v in trained.items():
            try:
                counts[k] = int(str(v).strip())
            except ValueError:
                raise FormProblem(
                    gettext("Please check the form: %(problems)s")
                    % {"problems": f"trained.{k}: not a whole number"}
                ) from None
        fields["trained"] = counts
        t = parse(TrainingIn, fields, gettext)
        return lambda app: app.record_training(
            actor=actor,
            agency=t.agency,
            held_on=t.held_on,
            area=t.area,
            audience=t.audience,
            topic=t.topic,
            trained=TrainedCounts(
                female=t.trained.female,
                male=t.trained.male,
                other_or_not_recorded=t.trained.other_or_not_recorded,
            ),
            at=now(),
        )
    if action == "awareness":
        fields["preferred_channels"] = as_list(fields.get("preferred_channels"))
        a = parse(AwarenessIn, fields, gettext)
        return calling(lambda app: app.record_awareness, a, actor=actor)
    if action == "focal-point-trainings":
        agency = str(fields.pop("agency", ""))
        f = parse(FocalPointTrainingIn, fields, gettext)
        return calling(lambda app: app.record_focal_point_training, f, actor=actor, agency=agency)
    if action in ("training-withdrawals", "awareness-withdrawals"):
        record_id = _uuid(fields.pop("record", ""), gettext)
        if action == "training-withdrawals":
            return lambda app: app.withdraw_training(record_id, actor=actor, at=now())
        return lambda app: app.withdraw_awareness(record_id, actor=actor, at=now())
    if action in ("alternates", "alternate-withdrawals"):
        agency = str(fields.pop("agency", ""))
        u = parse(AlternateIn, fields, gettext)
        if action == "alternates":
            return calling(lambda app: app.appoint_alternate, u, actor=actor, agency=agency)
        return calling(lambda app: app.withdraw_alternate, u, actor=actor, agency=agency)
    if action == "risk-assessments":
        fields["ratings"] = _ratings(fields, gettext)
        r = parse(RiskAssessmentIn, fields, gettext)
        return calling(lambda app: app.assess_risk, r, actor=actor)
    if action in ("reassessment", "policy"):
        return _changing(action, actor, fields, gettext)
    if action == "mitigation":
        assessment = _uuid(fields.pop("assessment", ""), gettext)
        m = parse(MitigationIn, fields, gettext)
        return calling(lambda app: app.agree_mitigation, m, assessment, actor=actor)
    if action == "mitigation-status":
        assessment = _uuid(fields.pop("assessment", ""), gettext)
        number = _number(fields.pop("action", ""), gettext)
        s = parse(StatusIn, fields, gettext)
        return calling(lambda app: app.report_mitigation, s, assessment, actor=actor, action=number)
    if action == "work-plans":
        w = parse(WorkPlanIn, fields, gettext)
        return calling(lambda app: app.open_work_plan, w, actor=actor)
    if action == "activities":
        year = _number(fields.pop("year", ""), gettext)
        p = parse(ActivityIn, fields, gettext)
        return calling(lambda app: app.plan_activity, p, work_plan_id(year), actor=actor)
    if action == "progress":
        year = _number(fields.pop("year", ""), gettext)
        number = _number(fields.pop("activity", ""), gettext)
        g = parse(ProgressIn, fields, gettext)
        return calling(
            lambda app: app.report_work_plan_progress,
            g,
            work_plan_id(year),
            actor=actor,
            activity=number,
        )
    raise AssertionError(action)


def _ratings(fields: dict[str, Any], gettext: Any) -> dict[str, int]:
    """The form's ``rating_<factor>`` fields as the API's ``ratings``."""
    ratings = {
        k.removeprefix("rating_"): fields.pop(k) for k in list(fields) if k.startswith("rating_")
    }
    try:
        # a field sent twice is a list: refused like any other rating that is not a number
        return {k: int(v) for k, v in ratings.items() if v != ""}
    except (TypeError, ValueError):
        raise FormProblem(
            gettext("Please check the form: %(problems)s") % {"problems": "ratings: 1 to 5"}
        ) from None


def _changing(action: str, actor: Actor, fields: dict[str, Any], gettext: Any) -> Any:
    """A reassessment or the prevention policy: each sends the version it was read at."""
    if action == "reassessment":
        assessment = _uuid(fields.pop("assessment", ""), gettext)
        fields["ratings"] = _ratings(fields, gettext)
        again = parse(ReassessmentIn, fields, gettext)
        if again.expected_version is None:
            raise FormProblem(gettext("The form lacks the version it was read at: reload it."))
        return calling(
            lambda app: app.reassess_risk,
            again,
            expecting(assessment, again.expected_version),
            actor=actor,
        )
    targets = []
    for line in str(fields.pop("training_targets", "")).splitlines():
        parts = line.split()
        if not parts:
            continue
        if (
            len(parts) != 3
            or not (parts[1] + parts[2]).isascii()
            or not parts[1].isdigit()
            or not parts[2].isdigit()
        ):
            raise FormProblem(
                gettext("Please check the form: %(problems)s")
                % {"problems": gettext("each target is a line: agency year personnel")}
            )
        targets.append({"agency": parts[0], "year": int(parts[1]), "personnel": int(parts[2])})
    fields["training_targets"] = targets
    fields["risk_factors"] = str(fields.get("risk_factors", "")).split()
    expected = str(fields.pop("expected_version", "")).strip()
    policy = parse(PreventionPolicyIn, fields, gettext)
    chosen = tuple(TrainingTarget(t.agency, t.year, t.personnel) for t in policy.training_targets)
    return lambda app: app.set_prevention_policy(
        actor=actor,
        refresher_every_days=policy.refresher_every_days,
        risk_factors=tuple(policy.risk_factors),
        training_targets=chosen,
        at=now(),
        # the version the form was read at (0: read before any policy was set), so a policy
        # set or changed meanwhile is a conflict, not a lost update
        expected_version=int(expected) if expected.isascii() and expected.isdigit() else 0,
    )


def _uuid(value: Any, gettext: Any) -> Any:
    try:
        return UUID(str(value))
    except ValueError:
        raise FormProblem(gettext("Not found. Nothing was recorded."), 404) from None


def _number(value: Any, gettext: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise FormProblem(gettext("Not found. Nothing was recorded."), 404) from None


ACTIONS: Final = (
    r"trainings|awareness|focal-point-trainings|alternates|alternate-withdrawals"
    r"|risk-assessments|reassessment|mitigation|mitigation-status|work-plans|activities"
    r"|progress|policy|training-withdrawals|awareness-withdrawals"
)
"""What the forms of the page record (the path after ``/console/prevention/``)."""

COORDINATOR_ONLY: Final = frozenset({"work-plans", "activities", "policy"})
"""What only the coordinator records (as ``/v1/prevention/work-plans`` and its activities)."""


@router.post("/prevention/{action}")
async def record_prevention(request: Request, staff: SignedIn, action: str) -> Response:
    """Records what the form says, for the roles the API lets record it."""
    role_in(staff, RECORDERS)
    matching(staff, action, ACTIONS)
    actor = role_in(staff, (Role.COORDINATOR,) if action in COORDINATOR_ONLY else RECORDERS)
    fields = await posted(request, staff)
    gettext = translations(request, staff)
    year = fields.pop("page_year", "")
    page_year = (
        int(year)
        if str(year).isascii() and str(year).isdigit() and 2000 <= int(year) <= 2100
        else _today().year
    )
    try:
        command = _command(action, actor, fields, gettext)

        def run(app: ComplaintMechanism) -> Written:
            written: Written = command(app)
            return written

        await record(request, run, gettext)
    except FormProblem as e:
        return await _page(request, staff, page_year, error=e.message, status=e.status)
    return RedirectResponse(f"{PAGE}?year={page_year}&done=1", status_code=303)


@router.get("/prevention/report/{period}")
async def report(request: Request, staff: SignedIn, period: str, format: str = "xlsx") -> Response:
    """The quarterly report for the Humanitarian Coordinator, as ``cbcm prevention report``
    and ``GET /v1/prevention/reports/{period}`` make it."""
    role_in(staff, REPORT_READERS)
    matching(staff, period, r"(20[0-9]{2}|2100)-Q[1-4]")
    matching(staff, format, r"xlsx|html")
    year, quarter = int(period[:4]), int(period[-1])
    view = await _view(request)
    ledger = ledger_place(request.app.state.settings)
    release = await in_thread(lambda: latest_release(ledger, year, quarter))
    made = gather(view, year=year, quarter=quarter, today=_today(), release=release)
    if format == "html":
        # the printable page inside the console's own layout and policy (its style sheet is
        # the console's): the report's body as the report module writes it, in English
        page = to_html(made)
        body = page[page.index("<main>") + len("<main>") : page.rindex("</main>")]
        return render(request, staff, "console/prevention_report.html", period=period, body=body)
    return Response(
        await in_thread(lambda: to_xlsx(made)),
        media_type=XLSX,
        headers={
            "Content-Disposition": f'attachment; filename="psea-report-{period.lower()}.xlsx"'
        },
    )
