"""Webhook endpoints of the agencies (issue #19, ADR 17): the coordinator's registry.

Every change is an event in the log (who pointed an agency's events where, and when); the
secret is sealed at rest and never answered. Deliveries are made by ``cbcm webhooks
deliver``; its delivery log is read with ``cbcm webhooks deliveries``.
"""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from domain.actors import Role
from domain.webhooks import WebhookEndpoint, webhook_endpoint_id
from services.api.auth import CurrentPrincipal, require_role
from services.api.schemas.common import PROBLEM_RESPONSES, WrittenOut
from services.api.schemas.webhooks import (
    WebhookIn,
    WebhookOut,
    WebhookSecretIn,
    WebhookTypesIn,
    WebhookWrittenOut,
)
from services.api.writes import in_thread, mechanism, now, perform, perform_command
from services.application.webhooks import AGENCY_EVENT_TYPES

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=PROBLEM_RESPONSES)

COORDINATOR = (Role.COORDINATOR,)
EndpointId = Annotated[UUID, Path(description="the endpoint")]


def _out(e: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        endpoint_id=e.endpoint_id,
        agency=e.agency,
        url=e.url,
        event_types=sorted(e.event_types),
        enabled=e.enabled,
        disabled_reason=None if e.disabled_reason is None else str(e.disabled_reason),
        secret_version=e.secret_version,
    )


@router.get("/event-types", response_model=list[str])
async def event_types(principal: CurrentPrincipal) -> list[str]:
    """The CloudEvents types an endpoint can be registered for (an agency's own events)."""
    require_role(principal, COORDINATOR)
    return sorted(AGENCY_EVENT_TYPES)


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(request: Request, principal: CurrentPrincipal) -> list[WebhookOut]:
    """Every endpoint, enabled or not (a disabled one says why). No secret."""
    require_role(principal, COORDINATOR)
    endpoints = await in_thread(mechanism(request).webhook_endpoints)
    return [_out(e) for e in endpoints]


@router.get("/{endpoint_id}", response_model=WebhookOut)
async def get_webhook(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId
) -> WebhookOut:
    require_role(principal, COORDINATOR)
    endpoint = await in_thread(lambda: mechanism(request).webhook_endpoint(endpoint_id))
    return _out(endpoint)


@router.post("", status_code=201, response_model=WebhookWrittenOut)
async def register_webhook(
    request: Request, principal: CurrentPrincipal, body: WebhookIn
) -> JSONResponse:
    """Register an agency's endpoint; answered with its id (``Location``)."""
    actor = require_role(principal, COORDINATOR)
    answer = await perform(
        request,
        principal,
        lambda app: app.register_webhook(
            actor=actor,
            agency=body.agency,
            url=body.url,
            secret=body.secret,
            event_types=tuple(body.event_types),
            at=now(),
        ),
        status=201,
        location=lambda w: f"/v1/webhooks/{webhook_endpoint_id(w.version)}",
    )
    written = WrittenOut.model_validate(json.loads(bytes(answer.body)))
    out = WebhookWrittenOut(
        endpoint_id=webhook_endpoint_id(written.version),
        id=written.id,
        version=written.version,
        position=written.position,
    )
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length",)}
    return JSONResponse(
        out.model_dump(mode="json"), status_code=answer.status_code, headers=headers
    )


@router.put("/{endpoint_id}/secret", response_model=WrittenOut)
async def rotate_secret(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId, body: WebhookSecretIn
) -> JSONResponse:
    """Sign with a new secret from the next delivery on."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.rotate_webhook_secret, body, endpoint_id
    )


@router.put("/{endpoint_id}/event-types", response_model=WrittenOut)
async def set_event_types(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId, body: WebhookTypesIn
) -> JSONResponse:
    """Replace the types delivered (from the next event on)."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.set_webhook_event_types, body, endpoint_id
    )


@router.post("/{endpoint_id}/disable", response_model=WrittenOut)
async def disable_webhook(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId
) -> JSONResponse:
    """Stop deliveries; the agency's events wait in the endpoint's queue."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.disable_webhook, None, endpoint_id
    )


@router.post("/{endpoint_id}/enable", response_model=WrittenOut)
async def enable_webhook(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId
) -> JSONResponse:
    """Deliver again, what waited first."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.enable_webhook, None, endpoint_id
    )


@router.delete("/{endpoint_id}", response_model=WrittenOut)
async def remove_webhook(
    request: Request, principal: CurrentPrincipal, endpoint_id: EndpointId
) -> JSONResponse:
    """Remove the endpoint (recorded; its waiting deliveries are dropped)."""
    return await perform_command(
        request, principal, COORDINATOR, lambda app: app.remove_webhook, None, endpoint_id
    )
