"""The case register over HTTP: ``GET /v1/cases`` (search and list, cursor paging) and
``POST /v1/cases/export`` (CSV or XLSX, traced in every case it holds). ADR 25.

Need-to-know is in the query (``projections.register``): a list never holds a case its
reader could not ``GET /v1/cases/{id}``. Bad filters are answered 422 problem+json naming
the parameter. Reads accept ``?after=<position>`` (read-your-writes) and answer
``X-Cbcm-Position``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from projections.register import (
    EXPORT_MAX,
    RegisterFilter,
    RegisterReader,
    RegisterRow,
    register_page,
    register_rows,
)
from services.api.auth import CurrentPrincipal
from services.api.paging import BadFilter
from services.api.problems import Problem
from services.api.read_models import query, wait_for_position
from services.api.register import (
    FORMATS,
    MEDIA_TYPES,
    encode_cursor,
    parse_cursor,
    parse_filter,
    parse_limit,
    register_reader,
    to_csv,
    to_xlsx,
    trace_export,
)
from services.api.routes.reads import BAD_FILTER, READ_RESPONSES, bad_filter, query_params
from services.api.writes import in_thread, mechanism, now
from services.identity.tokens import Principal
from services.projector.storage import ReadModelStore

_FILTER_DOCS: dict[str, Any] = {
    "status": Query(description="reporting status (repeatable)"),
    "agency": Query(description="the agency holding the case"),
    "category": Query(description="triage category, or `unassessed` (repeatable)"),
    "received_from": Query(description="received on or after this day (YYYY-MM-DD)"),
    "received_to": Query(description="received on or before this day (YYYY-MM-DD)"),
    "overdue": Query(description="`true`: a pending action is past its deadline"),
    "open": Query(description="`open` or `closed`"),
}


def reader_or_refuse(principal: Principal) -> RegisterReader:
    reader = register_reader(principal)
    if not reader.lists_anything:
        raise Problem(
            403,
            "your roles list no cases (focal point, coordinator, investigating entity and "
            "auditor do; a service provider's referrals are at /v1/assistance/referrals)",
            title="Role not permitted",
        )
    return reader


def row_out(row: RegisterRow) -> dict[str, Any]:
    return dataclasses.asdict(row)


def register_router(store: ReadModelStore, wait_bound: float) -> APIRouter:
    """``GET /v1/cases`` and ``POST /v1/cases/export`` over the register read model."""
    router = APIRouter(prefix="/v1/cases", tags=["cases"], responses=READ_RESPONSES)

    @router.get("")
    async def list_cases(
        *,
        request: Request,
        principal: CurrentPrincipal,
        status: Annotated[list[str] | None, _FILTER_DOCS["status"]] = None,
        agency: Annotated[str | None, _FILTER_DOCS["agency"]] = None,
        category: Annotated[list[str] | None, _FILTER_DOCS["category"]] = None,
        received_from: Annotated[str | None, _FILTER_DOCS["received_from"]] = None,
        received_to: Annotated[str | None, _FILTER_DOCS["received_to"]] = None,
        overdue: Annotated[str | None, _FILTER_DOCS["overdue"]] = None,
        open: Annotated[str | None, _FILTER_DOCS["open"]] = None,
        cursor: Annotated[str | None, Query(description="from the previous page's `next`")] = None,
        limit: Annotated[str | None, Query(description="cases per page, 1 to 200")] = None,
        after: Annotated[int | None, Query(ge=0, description="wait for this position")] = None,
    ) -> Response:
        """The cases the caller may see, newest received first, filtered; ``next`` is the
        next page's link (``null`` on the last page)."""
        reader = reader_or_refuse(principal)
        params = query_params(request)
        try:
            flt = parse_filter(params)
            start = parse_cursor(params)
            size = parse_limit(params)
        except BadFilter as e:
            raise bad_filter(e) from None
        position = await wait_for_position(store, after, wait_bound)
        moment = datetime.now(UTC)
        page = await query(
            store, lambda db: register_page(db, reader, flt, now=moment, after=start, limit=size)
        )
        next_cursor = None if page.next_cursor is None else encode_cursor(page.next_cursor)
        body = {
            "items": [row_out(r) for r in page.rows],
            "next_cursor": next_cursor,
            "next": None
            if next_cursor is None
            else str(request.url.include_query_params(cursor=next_cursor)),
        }
        return JSONResponse(jsonable_encoder(body), headers={"X-Cbcm-Position": str(position)})

    @router.post("/export")
    async def export_cases(
        *,
        request: Request,
        principal: CurrentPrincipal,
        format: Annotated[str, Query(description="`csv` or `xlsx`")] = "csv",
        status: Annotated[list[str] | None, _FILTER_DOCS["status"]] = None,
        agency: Annotated[str | None, _FILTER_DOCS["agency"]] = None,
        category: Annotated[list[str] | None, _FILTER_DOCS["category"]] = None,
        received_from: Annotated[str | None, _FILTER_DOCS["received_from"]] = None,
        received_to: Annotated[str | None, _FILTER_DOCS["received_to"]] = None,
        overdue: Annotated[str | None, _FILTER_DOCS["overdue"]] = None,
        open: Annotated[str | None, _FILTER_DOCS["open"]] = None,
        after: Annotated[int | None, Query(ge=0, description="wait for this position")] = None,
    ) -> Response:
        """Every case the caller may see that matches the filters, as a file. Before the
        file leaves, the export is recorded in the custody trail (read log) of every case
        in it; if that cannot be recorded, no file is given (503)."""
        reader = reader_or_refuse(principal)
        params = query_params(request)
        if format not in FORMATS:
            raise bad_filter(BadFilter("format", "format must be csv or xlsx"))
        try:
            flt = parse_filter(params)
        except BadFilter as e:
            raise bad_filter(e) from None
        await wait_for_position(store, after, wait_bound)
        return await export_file(
            request,
            principal=principal,
            reader=reader,
            flt=flt,
            store=store,
            format=format,
            params=params,
        )

    return router


async def export_file(
    request: Request,
    *,
    principal: Principal,
    reader: RegisterReader,
    flt: RegisterFilter,
    store: ReadModelStore,
    format: str,
    params: dict[str, list[str]],
) -> Response:
    """Select, trace, then write the export (the console's download too)."""
    moment = datetime.now(UTC)
    rows = await query(
        store, lambda db: register_rows(db, reader, flt, now=moment, limit=EXPORT_MAX + 1)
    )
    if len(rows) > EXPORT_MAX:
        raise Problem(
            422,
            f"more than {EXPORT_MAX} cases match: narrow the filters (a period, say)",
            title="Export too large",
            type=BAD_FILTER,
        )
    app = mechanism(request)
    at = now()
    export = await in_thread(lambda: trace_export(app, principal, rows, format=format, at=at))
    content = to_csv(export.rows) if format == "csv" else to_xlsx(export, principal, params)
    return Response(
        content,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "X-Cbcm-Export": str(export.id),
            "Cache-Control": "no-store",
        },
    )
