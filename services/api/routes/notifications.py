"""Where and when staff are told (issue #18): ``/v1/me/notifications`` for the person,
``/v1/network/staff/{user}/notifications`` for the coordinator. Addresses are personal data
of staff: sealed at rest, erasable with ``DELETE``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from domain.actors import Actor, Role
from domain.notification import QuietHours
from services.api.auth import CurrentPrincipal, require_role
from services.api.problems import Problem
from services.api.schemas.common import PROBLEM_RESPONSES, USER, WrittenOut
from services.api.schemas.notifications import (
    NotificationPreferencesIn,
    NotificationPreferencesOut,
    QuietHoursIn,
    StaffNotificationsIn,
)
from services.api.writes import in_thread, mechanism, now, perform
from services.application.commands import Written
from services.application.mechanism import ComplaintMechanism

router = APIRouter(tags=["notifications"], responses=PROBLEM_RESPONSES)

STAFF = (
    Role.FOCAL_POINT,
    Role.COORDINATOR,
    Role.INVESTIGATING_ENTITY,
    Role.SERVICE_PROVIDER,
)
"""The roles that are told something (the others have nothing waiting for them)."""
UserPath = Annotated[str, Path(pattern=USER)]


def _quiet(body: NotificationPreferencesIn) -> QuietHours | None:
    q = body.quiet_hours
    return None if q is None else QuietHours(q.start, q.end, q.zone)


def _register(
    actor: Actor, user: str, organisation: str, role: Role, body: NotificationPreferencesIn
) -> Callable[[ComplaintMechanism], Written]:
    quiet = _quiet(body)

    def command(app: ComplaintMechanism) -> Written:
        return app.register_staff_contact(
            actor=actor,
            user=user,
            organisation=organisation,
            role=role,
            email=body.email,
            phone=body.phone,
            channels=tuple(body.channels),
            quiet_hours=quiet,
            delivery=body.delivery,
            at=now(),
        )

    return command


@router.put("/v1/me/notifications", response_model=WrittenOut)
async def put_my_notifications(
    request: Request, principal: CurrentPrincipal, body: NotificationPreferencesIn
) -> JSONResponse:
    """Register (or replace) your own addresses and preferences, for the organisation and
    role you act in."""
    actor = require_role(principal, STAFF)
    command = _register(actor, actor.user, actor.agency, actor.role, body)
    return await perform(request, principal, command)


@router.get("/v1/me/notifications", response_model=NotificationPreferencesOut)
async def get_my_notifications(
    request: Request, principal: CurrentPrincipal
) -> NotificationPreferencesOut:
    """Your own addresses and preferences."""
    actor = require_role(principal, STAFF)
    contact = await in_thread(lambda: mechanism(request).staff_contact(actor.user))
    if contact is None:
        raise Problem(404, "no contact registered for you", title="Not found")
    q = contact.quiet_hours
    return NotificationPreferencesOut(
        user=contact.user,
        organisation=contact.organisation,
        role=contact.role,
        email=None if contact.erased else contact.email,
        phone=None if contact.erased else contact.phone,
        channels=list(contact.channels),
        quiet_hours=None if q is None else QuietHoursIn(start=q.start, end=q.end, zone=q.zone),
        delivery=contact.delivery,
        erased=contact.erased,
        version=contact.version,
    )


@router.delete("/v1/me/notifications", response_model=WrittenOut)
async def erase_my_notifications(request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """Erase your addresses for good (you will be told nothing until you register again)."""
    actor = require_role(principal, STAFF)
    return await perform(
        request,
        principal,
        lambda app: app.erase_staff_contact(actor=actor, user=actor.user, at=now()),
    )


@router.put("/v1/network/staff/{user}/notifications", response_model=WrittenOut)
async def put_staff_notifications(
    request: Request, principal: CurrentPrincipal, user: UserPath, body: StaffNotificationsIn
) -> JSONResponse:
    """Register (or replace) a staff member's addresses and preferences (the coordinator)."""
    actor = require_role(principal, (Role.COORDINATOR,))
    command = _register(actor, user, body.organisation, body.role, body)
    return await perform(request, principal, command)


@router.delete("/v1/network/staff/{user}/notifications", response_model=WrittenOut)
async def erase_staff_notifications(
    request: Request, principal: CurrentPrincipal, user: UserPath
) -> JSONResponse:
    """Erase a staff member's addresses for good (the coordinator)."""
    actor = require_role(principal, (Role.COORDINATOR,))
    return await perform(
        request,
        principal,
        lambda app: app.erase_staff_contact(actor=actor, user=user, at=now()),
    )
