"""Assistance referrals: the provider's side (accept, decline, deliver) and the survivor's
(decline, follow-up), and the referral as its reader may see it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.errors import NotFound
from domain.need_to_know import READ_PRIORITY, can_see_referral, referral_contact_fields
from services.api.auth import CurrentPrincipal, acting_on, first_seeing
from services.api.schemas.common import PROBLEM_RESPONSES, EmptyIn, WrittenOut
from services.api.schemas.referrals import FollowUpIn, ProviderDeclineIn, ReferralOut
from services.api.views import referral_view
from services.api.writes import Command, command_fields, in_thread, mechanism, now, perform_as
from services.application.commands import Written
from services.application.mechanism import ComplaintMechanism
from services.identity.tokens import Principal

router = APIRouter(
    prefix="/v1/referrals", tags=["assistance referrals"], responses=PROBLEM_RESPONSES
)

ReferralId = Annotated[UUID, Path(description="the assistance referral")]

PROVIDER = (Role.SERVICE_PROVIDER,)
SURVIVOR_SIDE = (Role.FOCAL_POINT, Role.COORDINATOR, Role.SERVICE_PROVIDER)


async def _load_visible(
    app: ComplaintMechanism, principal: Principal, referral_id: UUID
) -> tuple[AssistanceReferral, Case, Actor]:
    def load() -> tuple[AssistanceReferral, Case]:
        referral = app.get_referral(referral_id)
        return referral, app.get_case(referral.case_id)

    referral, case = await in_thread(load)
    reader = first_seeing(
        principal, READ_PRIORITY, lambda actor: can_see_referral(actor, referral, case)
    )
    if reader is None:
        raise NotFound(f"no referral {referral_id}")
    return referral, case, reader


async def _command(
    request: Request,
    principal: Principal,
    referral_id: UUID,
    body: BaseModel,
    command: Command,
    *,
    roles: Iterable[Role] = PROVIDER,
) -> JSONResponse:
    """``command`` (``lambda app: app.accept_referral``) on a referral the caller can see, in
    the first of ``roles`` that sees it; its keyword arguments are the body's fields."""
    referral, case, _ = await _load_visible(mechanism(request), principal, referral_id)
    actor = acting_on(principal, roles, lambda a: can_see_referral(a, referral, case), "referral")
    fields = command_fields(body)

    def decide(app: ComplaintMechanism, actor: Actor, at: datetime) -> Written:
        return command(app)(referral_id, actor=actor, at=at, **fields)

    return await perform_as(request, principal, actor, decide)


@router.get("/{referral_id}", response_model=ReferralOut)
async def get_referral(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId
) -> ReferralOut:
    """The referral; the survivor's contact details only as the survivor consented (their
    reading is recorded in the case's custody trail)."""
    app = mechanism(request)
    referral, case, reader = await _load_visible(app, principal, referral_id)
    view, revealed = referral_view(referral, case, referral_contact_fields(reader, referral, case))
    if revealed:
        await in_thread(
            lambda: app.record_personal_data_read(
                case.id, actor=reader, fields=revealed, purpose="assistance referral", at=now()
            )
        )
    return view


@router.post("/{referral_id}/acceptance", response_model=WrittenOut)
async def accept(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId, body: EmptyIn
) -> JSONResponse:
    """The provider takes the referral on."""
    return await _command(request, principal, referral_id, body, lambda app: app.accept_referral)


@router.post("/{referral_id}/provider-decline", response_model=WrittenOut)
async def decline_by_provider(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId, body: ProviderDeclineIn
) -> JSONResponse:
    """The provider cannot take it."""
    return await _command(
        request, principal, referral_id, body, lambda app: app.decline_referral_by_provider
    )


@router.post("/{referral_id}/survivor-decline", response_model=WrittenOut)
async def decline_by_survivor(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId, body: EmptyIn
) -> JSONResponse:
    """The survivor no longer wants this service."""
    return await _command(
        request,
        principal,
        referral_id,
        body,
        lambda app: app.decline_referral_by_survivor,
        roles=SURVIVOR_SIDE,
    )


@router.post("/{referral_id}/delivery", response_model=WrittenOut)
async def deliver(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId, body: EmptyIn
) -> JSONResponse:
    """The provider delivered the service."""
    return await _command(request, principal, referral_id, body, lambda app: app.deliver_referral)


@router.post("/{referral_id}/follow-up", response_model=WrittenOut)
async def follow_up(
    request: Request, principal: CurrentPrincipal, referral_id: ReferralId, body: FollowUpIn
) -> JSONResponse:
    """Someone checked with the survivor after delivery."""
    return await _command(
        request,
        principal,
        referral_id,
        body,
        lambda app: app.follow_up_referral,
        roles=SURVIVOR_SIDE,
    )
