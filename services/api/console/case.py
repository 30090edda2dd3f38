"""The case page (issue #21): what the reader may see of one case, and every workflow action
their role may take on it, as forms.

The case is read through ``services.api.routes.cases.read_case``, the function the API's
``GET /v1/cases/{id}`` answers from: the same need-to-know, the same redactions, and the
read of personal data recorded in the case's custody trail before the page leaves. Each
action is the API's command: the same body model (``services.api.schemas.cases``, so the
same checks), the same role rule (``acting_on``), the same application call. Each form sends
the ``expected_version`` the page showed: when someone else changed the case meanwhile, the
page comes back with the case as it is now, what was typed kept, and a message saying so;
nothing is recorded. Bad input comes back the same way, with the fields named in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError

from domain import errors
from domain.actors import Actor, Role
from domain.case import Case
from domain.need_to_know import best_case_access, case_access
from domain.personal_data import DataSubject
from domain.vocabulary import (
    AgeBand,
    AllegationSubtype,
    AllegationType,
    ClosureReason,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ContactMethod,
    ErasureReason,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from services.api.auth import first_seeing
from services.api.console.session import (
    PREFIX,
    ConsoleRefusal,
    SignedIn,
    Staff,
    check_form,
    read_form,
)
from services.api.console.site import render
from services.api.pages.i18n import N_
from services.api.problems import domain_problem
from services.api.routes.cases import (
    assessment_arguments,
    case_decision,
    erasure_arguments,
    read_case,
)
from services.api.schemas.cases import (
    AcknowledgementIn,
    AllegationIn,
    AssessmentIn,
    AssistanceReferralIn,
    ClosureIn,
    ConsentIn,
    ConsentWithdrawalIn,
    DuplicateIn,
    ErasureIn,
    FeedbackToComplainantIn,
    FocalPointsIn,
    InvestigationReferralIn,
    OutcomeIn,
    ReopeningIn,
    TransferIn,
)
from services.api.writes import Command, in_thread, mechanism, now
from services.application.commands import Written
from services.application.mechanism import ComplaintMechanism
from services.event_store.errors import EventStoreUnavailable

router = APIRouter(prefix=PREFIX, include_in_schema=False)

HANDLERS: Final = (Role.FOCAL_POINT, Role.COORDINATOR)
INVESTIGATORS: Final = (Role.INVESTIGATING_ENTITY, Role.COORDINATOR)
CASE_READERS: Final = (
    Role.FOCAL_POINT,
    Role.COORDINATOR,
    Role.INVESTIGATING_ENTITY,
    Role.SERVICE_PROVIDER,
    Role.AUDITOR,
)

NO_SUCH_CASE: Final = N_("There is no such case, or it is not yours to see.")
NOT_YOUR_ACTION: Final = N_("Your role may not do this on this case.")
CONFLICT: Final = N_(
    "Someone else changed this case while you were working on it: your form was for version "
    "%(yours)s, the case is now at version %(now)s. Nothing was recorded. The case is shown "
    "below as it is now, with what you typed: check it, then send your change again."
)
CONCURRENT: Final = N_(
    "The case changed while your change was being recorded. Nothing was recorded: please "
    "send it again."
)
INVALID: Final = N_("Please check these fields: %(fields)s. Nothing was recorded.")
REFUSED: Final = N_("This was refused: %(reason)s. Nothing was recorded.")
STORE_DOWN: Final = N_(
    "The case store cannot be reached right now. Nothing was recorded: please try again in a "
    "minute."
)


class ConsentWithdrawalForm(ConsentWithdrawalIn):
    kind: ConsentKind


@dataclass(frozen=True)
class Action:
    """One workflow action as a form: the API's body model, who may do it, the API's
    command (``services.api.routes.cases.case_decision``: the body's fields are its
    arguments, with what ``arguments(body)`` adds)."""

    name: str
    label: str
    roles: tuple[Role, ...]
    model: type[BaseModel]
    command: Command
    lists: tuple[str, ...] = ()
    shows: Callable[[Case], bool] = field(default=lambda case: case.closure is None)
    arguments: Callable[[Any], dict[str, Any]] | None = None

    def decide(
        self, app: ComplaintMechanism, actor: Actor, at: datetime, case_id: UUID, body: Any
    ) -> Written:
        return case_decision(case_id, body, self.command, self.arguments)(app, actor, at)


def _assessable(case: Case) -> bool:
    return case.closure is None and case.investigation is None


def _referable(case: Case) -> bool:
    return (
        case.closure is None
        and case.investigation is None
        and case.assessment is not None
        and case.assessment.category is ComplaintCategory.SEA_ALLEGATION
    )


def _acknowledgeable(case: Case) -> bool:
    inv = case.investigation
    return case.closure is None and inv is not None and inv.acknowledged_at is None


def _outcome_due(case: Case) -> bool:
    inv = case.investigation
    return case.closure is None and inv is not None and inv.outcome is None


ACTIONS: Final = {
    action.name: action
    for action in (
        Action(
            "assess",
            N_("Assess"),
            HANDLERS,
            AssessmentIn,
            lambda app: app.assess_case,
            shows=_assessable,
            arguments=assessment_arguments,
        ),
        Action(
            "assign",
            N_("Assign focal points"),
            HANDLERS,
            FocalPointsIn,
            lambda app: app.assign_focal_points,
            lists=("focal_points",),
        ),
        Action(
            "transfer",
            N_("Transfer to another agency"),
            HANDLERS,
            TransferIn,
            lambda app: app.transfer_case,
            lists=("shared",),
        ),
        Action(
            "consent",
            N_("Record a consent"),
            HANDLERS,
            ConsentIn,
            lambda app: app.give_consent,
            lists=("contact_methods",),
        ),
        Action(
            "withdraw_consent",
            N_("Record a withdrawal of consent"),
            HANDLERS,
            ConsentWithdrawalForm,
            lambda app: app.withdraw_consent,
        ),
        Action(
            "investigation_referral",
            N_("Refer for investigation"),
            HANDLERS,
            InvestigationReferralIn,
            lambda app: app.refer_for_investigation,
            lists=("shared",),
            shows=_referable,
        ),
        Action(
            "acknowledge",
            N_("Acknowledge the investigation referral"),
            INVESTIGATORS,
            AcknowledgementIn,
            lambda app: app.acknowledge_investigation,
            shows=_acknowledgeable,
        ),
        Action(
            "outcome",
            N_("Record the investigation's outcome"),
            INVESTIGATORS,
            OutcomeIn,
            lambda app: app.record_investigation_outcome,
            shows=_outcome_due,
        ),
        Action(
            "assistance_referral",
            N_("Refer for assistance"),
            HANDLERS,
            AssistanceReferralIn,
            lambda app: app.refer_for_assistance,
        ),
        Action(
            "feedback",
            N_("Give feedback to the complainant"),
            HANDLERS,
            FeedbackToComplainantIn,
            lambda app: app.give_feedback,
        ),
        Action(
            "duplicate",
            N_("Mark as a duplicate"),
            HANDLERS,
            DuplicateIn,
            lambda app: app.mark_as_duplicate,
        ),
        Action(
            "closure",
            N_("Close the case"),
            HANDLERS,
            ClosureIn,
            lambda app: app.close_case,
        ),
        Action(
            "reopening",
            N_("Reopen the case"),
            HANDLERS,
            ReopeningIn,
            lambda app: app.reopen_case,
            shows=lambda case: case.closure is not None,
        ),
        Action(
            "erasure",
            N_("Erase personal data"),
            HANDLERS,
            ErasureIn,
            lambda app: app.erase_personal_data,
            lists=("subjects",),
            shows=lambda case: True,
            arguments=erasure_arguments,
        ),
    )
}

FIELD_WORDS: Final = {
    "expected_version": N_("version of the case"),
    "category": N_("category"),
    "allegation": N_("allegation"),
    "allegation_type": N_("type of allegation"),
    "subtype": N_("finer type"),
    "child_involved": N_("a child is involved"),
    "implicated_agency": N_("implicated agency"),
    "personnel_category": N_("personnel category"),
    "incident_date": N_("date of the incident"),
    "incident_area": N_("area of the incident"),
    "victim_sex": N_("victim's sex"),
    "victim_age_band": N_("victim's age"),
    "incident_place_detail": N_("place of the incident"),
    "alleged_perpetrator": N_("alleged perpetrator"),
    "focal_points": N_("focal points"),
    "to_agency": N_("agency"),
    "reason": N_("reason"),
    "shared": N_("what is shared"),
    "note": N_("note"),
    "kind": N_("consent"),
    "given_by": N_("given by"),
    "contact_methods": N_("contact methods"),
    "entity": N_("investigating entity"),
    "outcome": N_("outcome"),
    "service_type": N_("service"),
    "provider": N_("provider"),
    "area": N_("area"),
    "share_contact": N_("share contact details"),
    "message": N_("message"),
    "channel": N_("channel"),
    "original_case_id": N_("original case"),
    "no_outcome_reason": N_("why there is no outcome"),
    "no_feedback_reason": N_("why no feedback was given"),
    "subjects": N_("whose data"),
}

CHOICES: Final = {
    "category": [c.value for c in ComplaintCategory],
    "allegation_type": [c.value for c in AllegationType],
    "subtype": [c.value for c in AllegationSubtype],
    "personnel_category": [c.value for c in PersonnelCategory],
    "victim_sex": [c.value for c in Sex],
    "victim_age_band": [c.value for c in AgeBand],
    "transfer_reason": [c.value for c in TransferReason],
    "shared": [c.value for c in SharedItem],
    "consent_kind": [c.value for c in ConsentKind],
    "given_by": [c.value for c in ConsentGiver],
    "contact_methods": [c.value for c in ContactMethod],
    "outcome": [c.value for c in InvestigationOutcome],
    "service_type": [c.value for c in ServiceType],
    "feedback_channel": [c.value for c in FeedbackChannel],
    "closure_reason": [c.value for c in ClosureReason],
    "subjects": [c.value for c in DataSubject],
    "erasure_reason": [c.value for c in ErasureReason if c is not ErasureReason.RETENTION_EXPIRED],
}

# ----------------------------------------------------------------------------- forms


def _flag(model: type[BaseModel], name: str) -> bool:
    return model.model_fields[name].annotation is bool


def form_body(action: Action, form: Any) -> dict[str, Any]:
    """The form's fields as the API's body: lists from repeated fields (focal points also
    from one field, separated by commas or spaces), checkboxes as flags, the allegation's
    fields (``allegation.*``) nested when the category is an SEA allegation, blank fields
    left out."""
    data: dict[str, Any] = {}
    for name in action.model.model_fields:
        if name == "allegation":
            if form.get("category") == ComplaintCategory.SEA_ALLEGATION.value:
                nested: dict[str, Any] = {}
                for inner in AllegationIn.model_fields:
                    if _flag(AllegationIn, inner):
                        nested[inner] = f"allegation.{inner}" in form
                    else:
                        value = str(form.get(f"allegation.{inner}", "")).strip()
                        if value:
                            nested[inner] = value
                data["allegation"] = nested
            continue
        if name in action.lists:
            values = [str(v).strip() for v in form.getlist(name)]
            if name == "focal_points":
                values = [part for v in values for part in v.replace(",", " ").split()]
            data[name] = [v for v in values if v]
        elif _flag(action.model, name):
            data[name] = name in form
        elif name == "expected_version":
            # every console form sends the version it showed; none is no version at all
            value = str(form.get(name, "")).strip()
            data[name] = (
                int(value) if value.isascii() and value.isdigit() and len(value) < 12 else value
            )
        else:
            value = str(form.get(name, "")).strip()
            if value:
                data[name] = value
    return data


def invalid_fields(error: ValidationError) -> list[str]:
    """The fields a validation error names, as their English msgids (never the values)."""
    names: list[str] = []
    for item in error.errors():
        for part in reversed(item.get("loc", ())):
            if isinstance(part, str) and part in FIELD_WORDS:
                if FIELD_WORDS[part] not in names:
                    names.append(FIELD_WORDS[part])
                break
    return names or [N_("the form")]


# ----------------------------------------------------------------------------- pages


async def _page(
    request: Request,
    staff: Staff,
    case_id: UUID,
    *,
    status_code: int = 200,
    failed: str | None = None,
    values: Any = None,
    message: str | None = None,
    message_args: dict[str, Any] | None = None,
) -> Response:
    app = mechanism(request)
    try:
        view, case, access = await read_case(
            app, staff.principal, case_id, purpose="console case page"
        )
    except errors.NotFound:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff) from None
    except EventStoreUnavailable:
        raise ConsoleRefusal(503, STORE_DOWN, staff) from None
    policy = await in_thread(lambda: app.network().policy)
    network = await in_thread(app.network)
    actions = []
    for action in ACTIONS.values():
        if not action.shows(case):
            continue
        actor = first_seeing(
            staff.principal,
            action.roles,
            lambda candidate: case_access(candidate, case, policy) is not None,
        )
        if actor is not None:
            actions.append(action)
    sees_trail = first_seeing(
        staff.principal,
        (Role.FOCAL_POINT, Role.COORDINATOR, Role.AUDITOR),
        lambda candidate: case_access(candidate, case, policy) is not None,
    )
    return render(
        request,
        staff,
        "console/case.html",
        status_code=status_code,
        case=view,
        reader_role=access.reader.role.value,
        actions=actions,
        choices=CHOICES,
        agencies=sorted(network.agencies),
        providers=sorted(network.providers.values(), key=lambda p: p.code),
        focal_points_here=sorted(
            network.agencies[case.custodian].focal_points
            if case.custodian in network.agencies
            else ()
        ),
        failed=failed,
        values=values if values is not None else {},
        message=message,
        message_args=message_args or {},
        done=request.query_params.get("done", ""),
        trail=sees_trail is not None,
    )


@router.get("/cases/{case_id:uuid}", response_class=HTMLResponse)
async def case_page(request: Request, staff: SignedIn, case_id: UUID) -> Response:
    """The case as the reader may see it, and the actions their role may take."""
    return await _page(request, staff, case_id)


@router.post("/cases/{case_id:uuid}/{name}", response_class=HTMLResponse)
async def case_action(request: Request, staff: SignedIn, case_id: UUID, name: str) -> Response:
    """One workflow action, sent from the case page's form."""
    form = await read_form(request)
    check_form(request, staff, form)
    action = ACTIONS.get(name)
    if action is None:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff)
    app = mechanism(request)

    async def again(status_code: int, message: str, **message_args: Any) -> Response:
        """The case page again, with this form as it was sent and ``message``."""
        return await _page(
            request,
            staff,
            case_id,
            status_code=status_code,
            failed=name,
            values=form,
            message=message,
            message_args=message_args,
        )

    def load() -> tuple[Case, Any]:
        return app.get_case(case_id), app.network().policy

    try:
        case, policy = await in_thread(load)
    except errors.NotFound:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff) from None
    except EventStoreUnavailable:
        raise ConsoleRefusal(503, STORE_DOWN, staff) from None
    principal = staff.principal
    if best_case_access(principal.user, principal.agency, principal.roles, case, policy) is None:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff)
    actor = first_seeing(
        principal,
        action.roles,
        lambda candidate: case_access(candidate, case, policy) is not None,
    )
    if actor is None:
        raise ConsoleRefusal(403, NOT_YOUR_ACTION, staff)
    try:
        body = action.model.model_validate(form_body(action, form))
    except ValidationError as e:
        return await again(422, INVALID, fields=invalid_fields(e))
    if isinstance(body, DuplicateIn):
        # the original must be visible to the reader too: a link must not probe for cases
        try:
            original = await in_thread(lambda: app.get_case(body.original_case_id))
        except errors.NotFound:
            original = None
        if (
            original is None
            or best_case_access(principal.user, principal.agency, principal.roles, original, policy)
            is None
        ):
            return await again(422, INVALID, fields=[FIELD_WORDS["original_case_id"]])
    try:
        written = await in_thread(lambda: action.decide(app, actor, now(), case_id, body))
    except errors.VersionConflict as e:
        return await again(409, CONFLICT, yours=form.get("expected_version", "?"), now=e.current)
    except errors.EarlierThanLastStep:
        return await again(409, CONCURRENT)
    except errors.NotFound:
        raise ConsoleRefusal(404, NO_SUCH_CASE, staff) from None
    except errors.ActionNotPermitted:
        raise ConsoleRefusal(403, NOT_YOUR_ACTION, staff) from None
    except errors.DomainError as e:
        return await again(domain_problem(e).status, REFUSED, reason=str(e))
    except EventStoreUnavailable:
        raise ConsoleRefusal(503, STORE_DOWN, staff) from None
    # After a transfer the reader may no longer see the case: back to their inbox then.
    after = await in_thread(lambda: app.get_case(case_id))
    if best_case_access(principal.user, principal.agency, principal.roles, after, policy) is None:
        # the inbox waits (bounded) until its read model has applied the transfer
        return RedirectResponse(
            f"{PREFIX}/inbox?done={name}&after={written.position}", status_code=303
        )
    return RedirectResponse(f"{PREFIX}/cases/{case_id}?done={name}", status_code=303)
