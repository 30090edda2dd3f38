"""The network's registry in the console (issue #21): agencies with their focal points and
alternates, the investigating entities, the service providers of the referral pathway and the
network policy; readable by every member of the network (as ``GET /v1/network``), changed by
the coordinator alone through forms that call what ``/v1/network`` calls.

Alternates are account ids the prevention reads show only to the coordinator and to the
agency's own focal points (``/v1/prevention/readiness``): the page does the same; others see
how many there are. The policy form sends the network's version it was read at
(``expected_version``): two coordinators changing it at once get a conflict, not a lost
update.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, TypeAdapter

from domain.actors import Role
from domain.errors import NotFound
from domain.network import Network
from domain.vocabulary import AgencyType, ServiceType
from services.api.console.recording import (
    FormProblem,
    as_list,
    holds,
    in_thread,
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
from services.api.routes.network import COORDINATOR, MEMBERS, _policy
from services.api.schemas.network import (
    AgencyIn,
    EntityIn,
    FocalPointIn,
    PolicyIn,
    ServiceProviderIn,
)
from services.api.writes import Command, calling, now
from services.prevention.reads import prevention_view

router = APIRouter(prefix="/console")

NAV.append(("/console/registry", N_("Network registry"), MEMBERS))

PAGE: Final = "/console/registry"
DURATIONS: Final = TypeAdapter(timedelta)
POLICY_FIELDS: Final = tuple(f for f in PolicyIn.model_fields if f != "expected_version")


POLICY_WORDS: Final = {
    "assess_within": N_("Assess a complaint within"),
    "offer_assistance_within": N_("Offer assistance within"),
    "refer_for_investigation_within": N_("Refer for investigation within"),
    "acknowledge_within": N_("Investigating entity acknowledges within"),
    "feedback_every": N_("Feedback to the complainant at least every"),
    "assistance_acceptance_within": N_("A provider accepts a referral within"),
    "suppression_threshold": N_("Statistics: smallest count published"),
    "personal_data_retention": N_("Personal data kept for"),
    "coordinator_sees_personal_data": N_("The coordinator sees personal data"),
    "complaints_recorded_within": N_(
        "A complaint is recorded at most this long after it was received"
    ),
    "incidents_reported_within": N_("An incident is reported at most this long after it happened"),
}
"""The policy's fields in words (the form still names them by their API field)."""


def _iso(value: Any) -> str:
    if isinstance(value, timedelta):
        return str(DURATIONS.dump_python(value, mode="json"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _load(request: Request) -> tuple[Network | None, dict[str, frozenset[str]]]:
    app = mechanism(request)
    try:
        network = app.network()
    except NotFound:
        return None, {}
    alternates = {a: frozenset(users) for a, users in prevention_view(app).alternates.items()}
    return network, alternates


async def _page(
    request: Request,
    staff: Staff,
    *,
    error: str | None = None,
    status: int = 200,
    form: dict[str, Any] | None = None,
) -> Response:
    role_in(staff, MEMBERS)
    network, alternates = await in_thread(lambda: _load(request))
    coordinator = holds(staff, COORDINATOR)
    agencies = []
    if network is not None:
        for a in sorted(network.agencies.values(), key=lambda a: a.code):
            theirs = alternates.get(a.code, frozenset())
            own_focal_point = (
                Role.FOCAL_POINT in staff.principal.roles and staff.principal.agency == a.code
            )
            agencies.append(
                {
                    "code": a.code,
                    "name": a.name,
                    "type": str(a.agency_type),
                    "entity": a.investigating_entity,
                    "focal_points": sorted(a.focal_points),
                    # account ids of alternates: the coordinator and the agency's own only
                    "alternates": sorted(theirs) if coordinator or own_focal_point else None,
                    "alternates_count": len(theirs),
                    "share_key": None if a.share_key is None else a.share_key.key_id,
                }
            )
    providers = (
        []
        if network is None
        else [
            {
                "code": p.code,
                "name": p.name,
                "services": sorted(str(s) for s in p.service_types),
                "areas": sorted(p.areas),
            }
            for p in sorted(network.providers.values(), key=lambda p: p.code)
        ]
    )
    policy = (
        []
        if network is None
        else [
            (name, POLICY_WORDS.get(name, name), _iso(getattr(network.policy, name)))
            for name in POLICY_FIELDS
        ]
    )
    return render(
        request,
        staff,
        "console/registry.html",
        status_code=status,
        network=network,
        agencies=agencies,
        providers=providers,
        policy=policy,
        coordinator=coordinator,
        error=error,
        done=request.query_params.get("done") == "1",
        form=form or {},
        agency_types=[str(t) for t in AgencyType],
        service_types=[str(t) for t in ServiceType],
    )


@router.get("/registry")
async def registry(request: Request, staff: SignedIn) -> Response:
    return await _page(request, staff)


def _done() -> Response:
    return RedirectResponse(f"{PAGE}?done=1", status_code=303)


async def _act(request: Request, staff: Staff, handle: Any) -> Response:
    """Checks the form, then runs ``handle(fields, gettext)``; a refusal re-renders the page
    with the message (nothing recorded)."""
    actor = role_in(staff, COORDINATOR)
    fields = await posted(request, staff)
    gettext = translations(request, staff)
    try:
        await handle(actor, fields, gettext)
    except FormProblem as e:
        return await _page(request, staff, error=e.message, status=e.status, form=fields)
    return _done()


async def _recording(
    request: Request,
    staff: Staff,
    model: type[BaseModel],
    command: Command,
    *,
    of_agency: bool = False,
) -> Response:
    """The form of ``command``, read as the API reads its body (``model``); with
    ``of_agency``, the form's ``agency`` names the agency it is about (the API's path)."""

    async def handle(actor: Any, fields: dict[str, Any], gettext: Any) -> None:
        agency = {"agency": str(fields.pop("agency", ""))} if of_agency else {}
        body = parse(model, fields, gettext)
        await record(request, calling(command, body, actor=actor, **agency), gettext)

    return await _act(request, staff, handle)


@router.post("/registry/agencies")
async def register_agency(request: Request, staff: SignedIn) -> Response:
    return await _recording(request, staff, AgencyIn, lambda app: app.register_agency)


@router.post("/registry/focal-points")
async def appoint_focal_point(request: Request, staff: SignedIn) -> Response:
    return await _recording(
        request, staff, FocalPointIn, lambda app: app.appoint_focal_point, of_agency=True
    )


@router.post("/registry/focal-points/withdrawal")
async def withdraw_focal_point(request: Request, staff: SignedIn) -> Response:
    return await _recording(
        request, staff, FocalPointIn, lambda app: app.withdraw_focal_point, of_agency=True
    )


@router.post("/registry/investigating-entity")
async def designate_entity(request: Request, staff: SignedIn) -> Response:
    return await _recording(
        request, staff, EntityIn, lambda app: app.designate_investigating_entity, of_agency=True
    )


@router.post("/registry/service-providers")
async def register_provider(request: Request, staff: SignedIn) -> Response:
    async def handle(actor: Any, fields: dict[str, Any], gettext: Any) -> None:
        fields["service_types"] = as_list(fields.get("service_types"))
        fields["areas"] = [
            a for line in as_list(fields.get("areas")) for a in line.replace(",", " ").split()
        ]
        body = parse(ServiceProviderIn, fields, gettext)
        command = calling(lambda app: app.register_service_provider, body, actor=actor)
        await record(request, command, gettext)

    return await _act(request, staff, handle)


@router.post("/registry/policy")
async def set_policy(request: Request, staff: SignedIn) -> Response:
    async def handle(actor: Any, fields: dict[str, Any], gettext: Any) -> None:
        # an unticked box is not sent: the flag is then off
        fields.setdefault("coordinator_sees_personal_data", "false")
        body = parse(PolicyIn, fields, gettext)
        if body.expected_version is None:
            raise FormProblem(gettext("The form lacks the version it was read at: reload it."))
        policy = _policy(body)
        await record(
            request,
            lambda app: app.set_policy(
                actor=actor, policy=policy, at=now(), expected_version=body.expected_version
            ),
            gettext,
        )

    return await _act(request, staff, handle)
