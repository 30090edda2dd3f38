"""Queries of the inbox and assistance read models (no personal data in any of them), by
need-to-know (the statistics: ``services.api.routes.stats``).

Every read accepts ``?after=<position>`` (read-your-writes: wait, bounded, until the read
model has applied that store position). Responses carry ``X-Cbcm-Position``, the position the
answer reflects. A read after a position its read model stalled at is answered at once with
``urn:cbcm:problem:read-model-stalled`` (``services.api.read_models``).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from domain.actors import Role
from domain.errors import NotFound
from projections.assistance import gaps, provider_referrals, tracker
from projections.inbox import PAGE_MAX, case_row, inbox_page
from services.api.auth import CurrentPrincipal, acting_as, require_role
from services.api.paging import (
    INBOX_PAGE,
    BadFilter,
    encode_inbox_cursor,
    parse_inbox_cursor,
    parse_limit,
)
from services.api.problems import Problem
from services.api.read_models import query, wait_for_position
from services.api.schemas.common import CODE, PROBLEM_RESPONSES, USER
from services.projector.storage import ReadModelStore

After = Annotated[
    int | None,
    Query(ge=0, description="wait (bounded) until the read model has applied this position"),
]

READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    503: {
        **PROBLEM_RESPONSES[503],
        "description": (
            "the read model does not exist yet, or has not applied `after` within the wait "
            "(Retry-After: retry); or its projector or the relay stalled at a message at or "
            "before `after` (type `urn:cbcm:problem:read-model-stalled`, no Retry-After: it "
            "goes on once a fix is deployed; `read_model`, `worker`, `stalled_position` and "
            "`applied_position` say where)"
        ),
    },
}

CASE_READERS = (Role.FOCAL_POINT, Role.COORDINATOR, Role.AUDITOR)
"""Who may read a case's milestones from the read models (no personal data there)."""
STATISTICS_READERS = (Role.STATISTICS_READER, Role.COORDINATOR, Role.FOCAL_POINT, Role.AUDITOR)
"""Who may read the statistics releases (``services.api.routes.stats``)."""


BAD_FILTER = "urn:cbcm:problem:bad-filter"


def bad_filter(e: BadFilter) -> Problem:
    """A list's parameter it cannot read: 422 problem+json naming it."""
    return Problem(422, e.detail, title="Bad filter", type=BAD_FILTER, parameter=e.field)


def query_params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _json(payload: Any, position: int) -> JSONResponse:
    return JSONResponse(jsonable_encoder(payload), headers={"X-Cbcm-Position": str(position)})


def _asdict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _sees_agency_case(principal: Any, agency: str) -> bool:
    if acting_as(principal, (Role.COORDINATOR, Role.AUDITOR)) is not None:
        return True
    return Role.FOCAL_POINT in principal.roles and principal.agency == agency


def read_model_router(stores: dict[str, ReadModelStore], wait_bound: float) -> APIRouter:
    """The read endpoints over the read models ``stores``."""
    router = APIRouter(prefix="/v1", responses=READ_RESPONSES)

    async def ready(name: str, after: int | None) -> int:
        return await wait_for_position(stores[name], after, wait_bound)

    @router.get("/inbox/{agency}", tags=["inbox"])
    async def agency_inbox(
        *,
        request: Request,
        principal: CurrentPrincipal,
        agency: Annotated[str, Path(pattern=CODE)],
        focal_point: Annotated[str | None, Query(pattern=USER)] = None,
        cursor: Annotated[
            str | None, Query(description="from the previous page's `next_cursor`")
        ] = None,
        limit: Annotated[
            str | None, Query(description=f"cases per page, 1 to {PAGE_MAX} ({INBOX_PAGE})")
        ] = None,
        after: After = None,
    ) -> Response:
        """Open cases the agency holds (or one focal point's), overdue first, a page at a
        time: for the agency's focal points and the coordinator. ``next`` is the next page's
        link, ``next_cursor`` its cursor (both ``null`` on the last page)."""
        require_role(principal, (Role.FOCAL_POINT, Role.COORDINATOR))
        if Role.COORDINATOR not in principal.roles and principal.agency != agency:
            raise Problem(403, "focal points see their own agency's inbox only")
        params = query_params(request)
        try:
            start = parse_inbox_cursor(params)
            size = parse_limit(params, INBOX_PAGE, PAGE_MAX)
        except BadFilter as e:
            raise bad_filter(e) from None
        position = await ready("inbox", after)
        now = datetime.now(UTC)
        page = await query(
            stores["inbox"],
            lambda db: inbox_page(
                db, agency, focal_point=focal_point, now=now, after=start, limit=size
            ),
        )
        next_cursor = None if page.next_cursor is None else encode_inbox_cursor(page.next_cursor)
        body = {
            "agency": agency,
            "items": [_asdict(i) for i in page.items],
            "next_cursor": next_cursor,
            "next": None
            if next_cursor is None
            else str(request.url.include_query_params(cursor=next_cursor)),
        }
        return _json(body, position)

    @router.get("/inbox/cases/{case_id}", tags=["inbox"])
    async def inbox_case(
        principal: CurrentPrincipal, case_id: UUID, after: After = None
    ) -> Response:
        """One case's milestones and pending actions."""
        position = await ready("inbox", after)
        row = await query(stores["inbox"], lambda db: case_row(db, case_id))
        if row is None or not _sees_agency_case(principal, row.agency):
            raise NotFound(f"no case {case_id}")
        return _json(_asdict(row), position)

    @router.get("/assistance/cases/{case_id}", tags=["assistance"])
    async def assistance_case(
        principal: CurrentPrincipal, case_id: UUID, after: After = None
    ) -> Response:
        """A case's consents, service referrals with their times, and gaps."""
        position = await ready("assistance", after)
        now = datetime.now(UTC)
        found = await query(stores["assistance"], lambda db: tracker(db, case_id, now=now))
        if found is None or not _sees_agency_case(principal, found.agency):
            raise NotFound(f"no case {case_id}")
        return _json(_asdict(found), position)

    @router.get("/assistance/gaps", tags=["assistance"])
    async def assistance_gaps(
        principal: CurrentPrincipal,
        agency: Annotated[str | None, Query(pattern=CODE)] = None,
        after: After = None,
    ) -> Response:
        """Consented cases with no provider for a service, referrals not accepted in time (a
        focal point: its own agency's cases)."""
        require_role(principal, (Role.FOCAL_POINT, Role.COORDINATOR))
        if Role.COORDINATOR not in principal.roles:
            if agency is not None and agency != principal.agency:
                raise Problem(403, "focal points see their own agency's gaps only")
            agency = principal.agency
        position = await ready("assistance", after)
        now = datetime.now(UTC)
        found = await query(stores["assistance"], lambda db: gaps(db, now=now, agency=agency))
        return _json({"gaps": [_asdict(g) for g in found]}, position)

    @router.get("/assistance/referrals", tags=["assistance"])
    async def my_referrals(
        principal: CurrentPrincipal, open_only: bool = True, after: After = None
    ) -> Response:
        """A service provider's referrals (open ones by default), oldest first."""
        actor = require_role(principal, (Role.SERVICE_PROVIDER,))
        position = await ready("assistance", after)
        now = datetime.now(UTC)
        found = await query(
            stores["assistance"],
            lambda db: provider_referrals(db, actor.agency, now=now, open_only=open_only),
        )
        items = [
            {
                "case_id": case_id,
                "referral_id": v.referral_id,
                "service_type": v.service_type,
                "area": v.area,
                "status": v.status,
                "referred_at": v.referred_at,
                "acceptance_overdue": v.acceptance_overdue,
            }
            for case_id, v in found
        ]
        return _json({"provider": actor.agency, "referrals": items}, position)

    return router
