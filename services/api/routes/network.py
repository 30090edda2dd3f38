"""The network's registry and policy: kept by the coordinator, readable by every member."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from domain.actors import Role
from domain.policy import NetworkPolicy
from services.api.auth import CurrentPrincipal, require_role
from services.api.schemas.common import CODE, PROBLEM_RESPONSES, USER, WrittenOut
from services.api.schemas.network import (
    AgencyIn,
    AgencyOut,
    EntityIn,
    FocalPointIn,
    NetworkIn,
    NetworkOut,
    PolicyIn,
    PolicyOut,
    ServiceProviderIn,
    ServiceProviderOut,
    ShareKeyIn,
    ShareKeyOut,
)
from services.api.writes import in_thread, mechanism, now, perform, perform_command

router = APIRouter(prefix="/v1/network", tags=["network"], responses=PROBLEM_RESPONSES)

COORDINATOR = (Role.COORDINATOR,)
MEMBERS = (
    Role.FOCAL_POINT,
    Role.COORDINATOR,
    Role.INVESTIGATING_ENTITY,
    Role.SERVICE_PROVIDER,
    Role.AUDITOR,
    Role.INTAKE_OPERATOR,
)
AgencyCode = Annotated[str, Path(pattern=CODE)]
UserPath = Annotated[str, Path(pattern=USER)]


def _policy(body: PolicyIn) -> NetworkPolicy:
    values = body.model_dump(exclude={"expected_version"})
    return NetworkPolicy(**values)


@router.get("", response_model=NetworkOut)
async def get_network(request: Request, principal: CurrentPrincipal) -> NetworkOut:
    """Policy, agencies (with focal-point accounts and investigating entity) and the
    referral pathway. No personal data."""
    require_role(principal, MEMBERS)
    app = mechanism(request)
    network = await in_thread(app.network)
    return NetworkOut(
        version=network.version,
        name=network.name,
        policy=PolicyOut(**vars(network.policy)),
        agencies=[
            AgencyOut(
                code=a.code,
                name=a.name,
                agency_type=a.agency_type,
                investigating_entity=a.investigating_entity,
                focal_points=sorted(a.focal_points),
                share_key=None
                if a.share_key is None
                else ShareKeyOut(public_key=a.share_key.public_key, key_id=a.share_key.key_id),
            )
            for a in sorted(network.agencies.values(), key=lambda a: a.code)
        ],
        service_providers=[
            ServiceProviderOut(
                code=p.code,
                name=p.name,
                service_types=sorted(p.service_types),
                areas=sorted(p.areas),
            )
            for p in sorted(network.providers.values(), key=lambda p: p.code)
        ],
    )


@router.post("", status_code=201, response_model=WrittenOut)
async def establish_network(
    request: Request, principal: CurrentPrincipal, body: NetworkIn
) -> JSONResponse:
    """Start the network's registry (once per event store)."""
    actor = require_role(principal, COORDINATOR)
    policy = None if body.policy is None else _policy(body.policy)
    return await perform(
        request,
        principal,
        lambda app: app.establish_network(actor=actor, name=body.name, policy=policy, at=now()),
        status=201,
    )


@router.put("/policy", response_model=WrittenOut)
async def set_policy(request: Request, principal: CurrentPrincipal, body: PolicyIn) -> JSONResponse:
    """Replace the deadlines and thresholds."""
    actor = require_role(principal, COORDINATOR)
    policy = _policy(body)
    return await perform(
        request,
        principal,
        lambda app: app.set_policy(
            actor=actor, policy=policy, at=now(), expected_version=body.expected_version
        ),
    )


@router.post("/agencies", status_code=201, response_model=WrittenOut)
async def register_agency(
    request: Request, principal: CurrentPrincipal, body: AgencyIn
) -> JSONResponse:
    """Add a member agency."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.register_agency, body, status=201
    )


@router.put("/agencies/{agency}/investigating-entity", response_model=WrittenOut)
async def designate_investigating_entity(
    request: Request, principal: CurrentPrincipal, agency: AgencyCode, body: EntityIn
) -> JSONResponse:
    """Name the unit that investigates the agency's personnel."""
    return await perform_command(
        request,
        principal,
        COORDINATOR,
        lambda app: app.designate_investigating_entity,
        body,
        agency=agency,
    )


@router.put("/agencies/{agency}/share-key", response_model=WrittenOut)
async def register_agency_share_key(
    request: Request, principal: CurrentPrincipal, agency: AgencyCode, body: ShareKeyIn
) -> JSONResponse:
    """Register (or replace) the X25519 public key that personal data shared with the agency
    travels sealed to (`cbcm agency keygen` makes a key pair)."""
    return await perform_command(
        request,
        principal,
        COORDINATOR,
        lambda app: app.register_agency_share_key,
        body,
        agency=agency,
    )


@router.post("/agencies/{agency}/focal-points", response_model=WrittenOut)
async def appoint_focal_point(
    request: Request, principal: CurrentPrincipal, agency: AgencyCode, body: FocalPointIn
) -> JSONResponse:
    """Appoint a focal point (an account id) of the agency."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.appoint_focal_point, body, agency=agency
    )


@router.delete("/agencies/{agency}/focal-points/{user}", response_model=WrittenOut)
async def withdraw_focal_point(
    request: Request, principal: CurrentPrincipal, agency: AgencyCode, user: UserPath
) -> JSONResponse:
    """Withdraw a focal point's appointment (recorded; nothing is deleted)."""
    actor = require_role(principal, COORDINATOR)
    return await perform(
        request,
        principal,
        lambda app: app.withdraw_focal_point(actor=actor, agency=agency, user=user, at=now()),
    )


@router.post("/service-providers", status_code=201, response_model=WrittenOut)
async def register_service_provider(
    request: Request, principal: CurrentPrincipal, body: ServiceProviderIn
) -> JSONResponse:
    """Add a provider to the referral pathway."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.register_service_provider, body, status=201
    )
