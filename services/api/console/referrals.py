"""Referrals in the console (issue #21), as the API offers them:

- a **service provider**'s assistance referrals (``GET /v1/assistance/referrals``: the
  assistance read model, its own referrals only), each opened as ``GET /v1/referrals/{id}``
  shows it (the survivor's contact only as the survivor consented, the read recorded in the
  case's custody trail), with the provider's actions: accept, decline, delivered;
- an **investigating entity**'s investigation referral of a case whose id it was sent
  (the API lists none: the entity learns of a referral from its notification), with its
  actions: acknowledge, record the outcome, each sending the case's version it was read at.
  This page shows the referral's state and no personal data (what was shared is read on the
  case's page, where the read is recorded).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from domain.actors import Actor, Role
from domain.case import Case
from domain.errors import NotFound
from domain.need_to_know import (
    READ_PRIORITY,
    can_see_referral,
    case_access,
    referral_contact_fields,
)
from domain.policy import NetworkPolicy
from domain.vocabulary import InvestigationOutcome
from projections.assistance import provider_referrals
from services.api.auth import first_seeing
from services.api.console.recording import (
    FormProblem,
    in_thread,
    matching,
    mechanism,
    parse,
    posted,
    record,
    role_in,
    translations,
    uuid_of,
)
from services.api.console.session import ConsoleRefusal, SignedIn, Staff
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.problems import Problem
from services.api.read_models import query
from services.api.routes.cases import INVESTIGATORS
from services.api.routes.referrals import PROVIDER, SURVIVOR_SIDE
from services.api.schemas.cases import AcknowledgementIn, OutcomeIn
from services.api.schemas.common import CaseCommand, EmptyIn
from services.api.schemas.referrals import FollowUpIn, ProviderDeclineIn
from services.api.views import case_view, referral_view
from services.api.writes import Command, calling, now
from services.application.commands import expecting
from services.projector.storage import ReadModelStore, read_model_store

router = APIRouter(prefix="/console")

NAV.append(("/console/referrals", N_("Referrals"), (*PROVIDER, Role.INVESTIGATING_ENTITY)))

NO_REFERRAL: Final = N_("There is no such referral, or it is not yours to see.")
NOT_READY: Final = N_(
    "The list of referrals is not available right now (it is being brought up to date). "
    "Please try again in a minute."
)
NO_CASE: Final = N_("There is no such case, or no investigation referral of it is yours to see.")


def assistance_store(request: Request) -> ReadModelStore:
    """The assistance read model, as the API's reads use it (one per app, opened on first
    use)."""
    state = request.app.state
    store: ReadModelStore | None = getattr(state, "console_assistance", None)
    if store is None:
        store = read_model_store(state.settings, "assistance")
        state.console_assistance = store
    return store


@router.get("/referrals")
async def referrals(request: Request, staff: SignedIn, all: str = "") -> Response:
    """A provider's referrals (open ones, or all: ``?all=true``); an investigating entity's
    look-up."""
    role_in(staff, (*PROVIDER, Role.INVESTIGATING_ENTITY))
    every = all == "true"
    items: list[dict[str, Any]] | None = None
    provider = first_seeing(staff.principal, PROVIDER, lambda _: True)
    if provider is not None:
        moment = datetime.now(UTC)
        try:
            found = await query(
                assistance_store(request),
                lambda db: provider_referrals(db, provider.agency, now=moment, open_only=not every),
            )
        except Problem:
            raise ConsoleRefusal(503, NOT_READY, staff) from None
        items = [
            {
                "referral_id": str(v.referral_id),
                "service_type": str(v.service_type),
                "area": v.area,
                "status": str(v.status),
                "referred_at": v.referred_at,
                "overdue": v.acceptance_overdue,
            }
            for _, v in found
        ]
    return render(
        request,
        staff,
        "console/referrals.html",
        items=items,
        all=every,
        investigator=Role.INVESTIGATING_ENTITY in staff.principal.roles,
    )


# ------------------------------------------------------------------ assistance referrals


async def _referral_page(
    request: Request,
    staff: Staff,
    referral_id: UUID,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    app = mechanism(request)

    def load() -> tuple[Any, Any, Actor | None]:
        try:
            referral = app.get_referral(referral_id)
            case = app.get_case(referral.case_id)
        except NotFound:
            return None, None, None
        reader = first_seeing(
            staff.principal, READ_PRIORITY, lambda a: can_see_referral(a, referral, case)
        )
        return referral, case, reader

    referral, case, reader = await in_thread(load)
    if reader is None:
        raise ConsoleRefusal(404, NO_REFERRAL, staff)
    view, revealed = referral_view(referral, case, referral_contact_fields(reader, referral, case))
    if revealed:
        # as GET /v1/referrals/{id}: the read is in the case's custody trail before the page
        await in_thread(
            lambda: app.record_personal_data_read(
                case.id, actor=reader, fields=revealed, purpose="assistance referral", at=now()
            )
        )
    acts = reader.role is Role.SERVICE_PROVIDER
    survivor_side = (
        first_seeing(staff.principal, SURVIVOR_SIDE, lambda a: can_see_referral(a, referral, case))
        is not None
    )
    return render(
        request,
        staff,
        "console/referral.html",
        status_code=status,
        referral=view,
        as_provider=reader.role is Role.SERVICE_PROVIDER,
        acts=acts,
        survivor_side=survivor_side,
        error=error,
        done=request.query_params.get("done") == "1",
    )


@router.get("/referrals/{referral_id}")
async def referral(request: Request, staff: SignedIn, referral_id: str) -> Response:
    return await _referral_page(request, staff, uuid_of(staff, referral_id, NO_REFERRAL))


REFERRAL_COMMANDS: Final[dict[str, Command]] = {
    "acceptance": lambda app: app.accept_referral,
    "provider-decline": lambda app: app.decline_referral_by_provider,
    "delivery": lambda app: app.deliver_referral,
    "survivor-decline": lambda app: app.decline_referral_by_survivor,
    "follow-up": lambda app: app.follow_up_referral,
}
"""The referral's actions (as ``POST /v1/referrals/{id}/<action>``) and their commands."""
REFERRAL_BODIES: Final[dict[str, type[BaseModel]]] = {
    "acceptance": EmptyIn,
    "provider-decline": ProviderDeclineIn,
    "delivery": EmptyIn,
    "survivor-decline": EmptyIn,
    "follow-up": FollowUpIn,
}
SURVIVOR_SIDE_ACTIONS: Final = frozenset({"survivor-decline", "follow-up"})
"""What the survivor's side does (the others are the provider's)."""


@router.post("/referrals/{referral_id}/{action}")
async def referral_action(
    request: Request,
    staff: SignedIn,
    referral_id: str,
    action: str,
) -> Response:
    """The provider's actions, as ``POST /v1/referrals/{id}/acceptance``, ``.../provider-
    decline`` and ``.../delivery`` (only on a referral the provider sees, as the provider),
    and the survivor's side, ``.../survivor-decline`` and ``.../follow-up`` (the referring
    focal points, the coordinator, the provider, as the API lets them)."""
    matching(staff, action, r"acceptance|provider-decline|delivery|survivor-decline|follow-up")
    rid = uuid_of(staff, referral_id, NO_REFERRAL)
    fields = await posted(request, staff)
    gettext = translations(request, staff)
    app = mechanism(request)

    def load() -> tuple[Any, Any]:
        try:
            referral = app.get_referral(rid)
            return referral, app.get_case(referral.case_id)
        except NotFound:
            return None, None

    referral, case = await in_thread(load)
    if (
        referral is None
        or first_seeing(
            staff.principal, READ_PRIORITY, lambda a: can_see_referral(a, referral, case)
        )
        is None
    ):
        raise ConsoleRefusal(404, NO_REFERRAL, staff)
    roles = SURVIVOR_SIDE if action in SURVIVOR_SIDE_ACTIONS else PROVIDER
    actor = first_seeing(staff.principal, roles, lambda a: can_see_referral(a, referral, case))
    if actor is None:
        raise ConsoleRefusal(403, N_("Your role may not do this. Nothing was recorded."), staff)
    try:
        model = REFERRAL_BODIES[action]
        # a blank field is no value (the note and the reason are optional)
        body = parse(
            model,
            {name: str(fields.get(name) or "").strip() or None for name in model.model_fields},
            gettext,
        )
        await record(request, calling(REFERRAL_COMMANDS[action], body, rid, actor=actor), gettext)
    except FormProblem as e:
        return await _referral_page(request, staff, rid, error=e.message, status=e.status)
    return RedirectResponse(f"/console/referrals/{rid}?done=1", status_code=303)


# ------------------------------------------------------------------ investigation referrals


async def _investigated_case(
    request: Request, staff: Staff, case_id: UUID, roles: tuple[Role, ...]
) -> tuple[Case, NetworkPolicy, Actor]:
    """The case, the network's policy and the reader in the first of ``roles`` who sees the
    case; a 404 page when there is no such case or none of them does."""
    app = mechanism(request)

    def load() -> tuple[Any, Any]:
        try:
            return app.get_case(case_id), app.network().policy
        except NotFound:
            return None, None

    case, policy = await in_thread(load)
    reader = (
        None
        if case is None
        else first_seeing(
            staff.principal, roles, lambda a: case_access(a, case, policy) is not None
        )
    )
    if reader is None:
        raise ConsoleRefusal(404, NO_CASE, staff)
    return case, policy, reader


async def _investigation_page(
    request: Request,
    staff: Staff,
    case_id: UUID,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    role_in(staff, (Role.INVESTIGATING_ENTITY,))
    case, policy, reader = await _investigated_case(
        request, staff, case_id, (Role.INVESTIGATING_ENTITY,)
    )
    access = case_access(reader, case, policy)
    assert access is not None
    view, _ = case_view(case, access)  # only the referral's state is shown: no personal data
    if view.investigation is None:
        raise ConsoleRefusal(404, NO_CASE, staff)
    return render(
        request,
        staff,
        "console/investigation.html",
        status_code=status,
        case_id=str(case_id),
        version=view.version,
        investigation=view.investigation,
        outcomes=[str(o) for o in InvestigationOutcome],
        error=error,
        done=request.query_params.get("done") == "1",
    )


@router.get("/investigations")
async def find_investigation(request: Request, staff: SignedIn, case: str = "") -> Response:
    """The look-up form's target: the case id given, checked, then its page."""
    role_in(staff, (Role.INVESTIGATING_ENTITY,))
    try:
        case_id = UUID(case.strip())
    except ValueError:
        raise ConsoleRefusal(404, NO_CASE, staff) from None
    return RedirectResponse(f"/console/investigations/{case_id}", status_code=303)


@router.get("/investigations/{case_id}")
async def investigation(request: Request, staff: SignedIn, case_id: str) -> Response:
    role_in(staff, (Role.INVESTIGATING_ENTITY,))
    return await _investigation_page(request, staff, uuid_of(staff, case_id, NO_CASE))


INVESTIGATION_COMMANDS: Final[dict[str, Command]] = {
    "acknowledgement": lambda app: app.acknowledge_investigation,
    "outcome": lambda app: app.record_investigation_outcome,
}


@router.post("/investigations/{case_id}/{action}")
async def investigation_action(
    request: Request,
    staff: SignedIn,
    case_id: str,
    action: str,
) -> Response:
    """As ``POST /v1/cases/{id}/investigation-referral/acknowledgement`` and ``.../outcome``,
    with the version the page was read at."""
    role_in(staff, INVESTIGATORS)
    matching(staff, action, r"acknowledgement|outcome")
    return await _investigation_action(request, staff, uuid_of(staff, case_id, NO_CASE), action)


async def _investigation_action(
    request: Request, staff: Staff, case_id: UUID, action: str
) -> Response:
    fields = await posted(request, staff)
    gettext = translations(request, staff)
    _, _, actor = await _investigated_case(request, staff, case_id, INVESTIGATORS)
    try:
        if not str(fields.get("expected_version", "")).strip():
            # the page always sends the version it was read at: without it two people
            # acting at once would not be told (a lost update)
            raise FormProblem(gettext("The form lacks the version it was read at: reload it."))
        model: type[CaseCommand] = AcknowledgementIn if action == "acknowledgement" else OutcomeIn
        body = parse(model, fields, gettext)
        target = expecting(case_id, body.expected_version)
        await record(
            request, calling(INVESTIGATION_COMMANDS[action], body, target, actor=actor), gettext
        )
    except FormProblem as e:
        return await _investigation_page(request, staff, case_id, error=e.message, status=e.status)
    return RedirectResponse(f"/console/investigations/{case_id}?done=1", status_code=303)
