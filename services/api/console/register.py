"""The case register pages (issue #21, ADR 25): search and list every case the reader may
see, open or closed, with cursor paging, and export the list (CSV or XLSX).

Read from the register read model exactly as ``GET /v1/cases`` answers it: the reader's
need-to-know is part of the query (``projections.register``), so a page never lists a case
the API would not show this reader. Filters are a GET form; a filter that cannot be read is
answered with a readable message (400). The export is a POST form (the session's token, a
same-site check): before the file is handed out, it is recorded in the custody trail of every
case it holds (``services.api.register.trace_export``); if that cannot be recorded, no file
is given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from domain.actors import Role
from projections.register import CATEGORIES, STATUSES, register_count, register_page
from services.api.console.session import PREFIX, ConsoleRefusal, SignedIn, check_form, read_form
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.paging import BadFilter
from services.api.problems import Problem
from services.api.read_models import query, wait_for_position
from services.api.register import (
    FILTER_FIELDS,
    FORMATS,
    encode_cursor,
    filter_query,
    parse_cursor,
    parse_filter,
    register_reader,
)
from services.api.routes.register import export_file
from services.event_store.errors import EventStoreUnavailable
from services.projector.storage import ReadModelStore

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE: Final = 25
READERS: Final = (Role.FOCAL_POINT, Role.COORDINATOR, Role.INVESTIGATING_ENTITY, Role.AUDITOR)

NAV.append((f"{PREFIX}/cases", N_("Case register"), READERS))

NO_REGISTER: Final = N_(
    "The case register is for focal points, the coordinator, investigating entities and auditors."
)
NOT_READY: Final = N_(
    "The case register is not available right now (it is being brought up to date). Please "
    "try again in a minute."
)
NOT_RECORDED: Final = N_(
    "The export could not be recorded in the cases' custody trail, so no file was given. "
    "Please try again in a minute."
)
TOO_MANY: Final = N_("Too many cases match for one export: narrow the filters (a period, say).")
BAD_FILTER: Final = N_("This search cannot be read: %(field)s. Please correct it.")
FIELD_NAMES: Final = {
    "status": N_("Status"),
    "agency": N_("Agency holding the case"),
    "category": N_("Category"),
    "received_from": N_("Received from"),
    "received_to": N_("Received until"),
    "overdue": N_("Overdue"),
    "open": N_("Open or closed"),
    "cursor": N_("Page"),
    "limit": N_("Page"),
    "format": N_("File format"),
}


def _params(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in FILTER_FIELDS:
            params.setdefault(key, []).append(value)
    return params


@router.get("/cases", response_class=HTMLResponse)
async def register_list(request: Request, staff: SignedIn) -> Response:
    """The cases the reader may see, newest received first, filtered, a page at a time."""
    reader = register_reader(staff.principal)
    if not reader.lists_anything:
        raise ConsoleRefusal(403, NO_REGISTER, staff)
    params = _params(list(request.query_params.multi_items()))
    context: dict[str, Any] = {
        "filters": params,
        "statuses": STATUSES,
        "categories": CATEGORIES,
        "formats": FORMATS,
        "sees_every_agency": reader.every_case,
        "rows": (),
        "total": 0,
        "next_link": None,
        "first_link": None,
        "message": "",
        "message_args": {},
    }
    try:
        flt = parse_filter(params)
        start = parse_cursor(params)
    except BadFilter as e:
        context["message"] = BAD_FILTER
        context["message_args"] = {"field": [FIELD_NAMES.get(e.field, e.field)]}
        return render(request, staff, "console/register.html", status_code=400, **context)
    stores: dict[str, ReadModelStore] = request.app.state.read_models
    settings = request.app.state.settings
    after = request.query_params.get("after")
    try:
        await wait_for_position(
            stores["register"],
            int(after) if after and after.isascii() and after.isdigit() else None,
            settings.read_wait_seconds,
        )
        moment = datetime.now(UTC)
        page, total = await query(
            stores["register"],
            lambda db: (
                register_page(db, reader, flt, now=moment, after=start, limit=PAGE_SIZE),
                register_count(db, reader, flt, now=moment),
            ),
        )
    except Problem:
        raise ConsoleRefusal(503, NOT_READY, staff) from None
    base = f"{PREFIX}/cases"
    if page.next_cursor is not None:
        context["next_link"] = (
            f"{base}?{filter_query(params, cursor=encode_cursor(page.next_cursor))}"
        )
    if start is not None:
        context["first_link"] = f"{base}?{filter_query(params, cursor=None)}"
    context["rows"] = page.rows
    context["total"] = total
    return render(request, staff, "console/register.html", **context)


@router.post("/cases/export")
async def register_export(request: Request, staff: SignedIn) -> Response:
    """The filtered register as a file, once its trace is recorded in every case it holds."""
    form = await read_form(request)
    check_form(request, staff, form)
    reader = register_reader(staff.principal)
    if not reader.lists_anything:
        raise ConsoleRefusal(403, NO_REGISTER, staff)
    params = _params(list(form.multi_items()))
    params.pop("cursor", None)
    params.pop("limit", None)
    fmt = form.get("format", "csv")
    if fmt not in FORMATS:
        raise ConsoleRefusal(400, BAD_FILTER_FORMAT, staff)
    try:
        flt = parse_filter(params)
    except BadFilter:
        raise ConsoleRefusal(400, BAD_EXPORT, staff) from None
    stores: dict[str, ReadModelStore] = request.app.state.read_models
    try:
        return await export_file(
            request,
            principal=staff.principal,
            reader=reader,
            flt=flt,
            store=stores["register"],
            format=fmt,
            params=params,
        )
    except EventStoreUnavailable:
        raise ConsoleRefusal(503, NOT_RECORDED, staff) from None
    except Problem as e:
        raise ConsoleRefusal(e.status, TOO_MANY if e.status == 422 else NOT_READY, staff) from None


BAD_FILTER_FORMAT: Final = N_("The file format must be CSV or XLSX.")
BAD_EXPORT: Final = N_("The export's filters cannot be read. Please search again, then export.")
