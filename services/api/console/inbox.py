"""The inbox page (issue #21): the agency's open cases, overdue first, urgent ones flagged,
with filters and pages.

Read from the inbox read model, as ``GET /v1/inbox/{agency}`` answers it, under the same
rule: a focal point sees their own agency's inbox, the coordinator any agency's. The read
model holds no personal data, so nothing here is recorded as a read. Filters narrow the
agency's list (the need-to-know is the agency, decided before the query): assigned to me,
overdue only, urgent only (an immediate safety risk or a child involved), the next action,
the category. Pages of ``PAGE_SIZE``, by the API's keyset query (``inbox_page``: the filters
are part of its WHERE clause, a page reads its own rows only), with the counts in one more
query: ``cursor`` is where the next page starts, ``before`` where the previous one ends,
``page`` only the number shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import QueryParams

from domain.actors import Role, validate_code
from domain.errors import InvalidCode
from projections.inbox import InboxCursor, InboxFilter, inbox_counts
from projections.inbox import inbox_page as page_of_inbox
from projections.inbox.model import ACTIONS, InboxItem
from services.api.console.session import PREFIX, ConsoleRefusal, SignedIn
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.paging import BadFilter, encode_inbox_cursor, parse_inbox_cursor
from services.api.problems import Problem
from services.api.read_models import query, wait_for_position
from services.identity.tokens import Principal
from services.projector.storage import ReadModelStore

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE: Final = 25
READERS: Final = (Role.FOCAL_POINT, Role.COORDINATOR)
CATEGORIES: Final = ("sea_allegation", "other_sensitive", "non_sensitive_feedback", "none")

NAV.append((f"{PREFIX}/inbox", N_("Inbox"), READERS))

NOT_YOURS: Final = N_("Focal points see their own agency's inbox only.")
NO_INBOX: Final = N_("The inbox is for focal points and the network's coordinator.")
NOT_READY: Final = N_(
    "The inbox is not available right now (it is being brought up to date). Please try "
    "again in a minute."
)


def urgent(item: InboxItem) -> bool:
    return item.immediate_safety_risk or item.child_involved


def _chosen(
    params: QueryParams, agency: str, principal: Principal
) -> tuple[InboxFilter, dict[str, str], str | None]:
    """The filters asked for (what cannot be read is left out), as the query's filter, as
    the form shows them, and the focal point whose cases only are listed."""
    mine = params.get("mine") == "1" and Role.FOCAL_POINT in principal.roles
    overdue_only = params.get("overdue") == "1"
    urgent_only = params.get("urgent") == "1"
    action = params.get("action", "")
    action = action if action in ACTIONS else ""
    category = params.get("category", "")
    category = category if category in CATEGORIES else ""
    flt = InboxFilter(
        overdue=overdue_only,
        urgent=urgent_only,
        action=action or None,
        category=category or None,
    )
    filters = {
        "agency": agency,
        "mine": "1" if mine else "",
        "overdue": "1" if overdue_only else "",
        "urgent": "1" if urgent_only else "",
        "action": action,
        "category": category,
    }
    return flt, filters, principal.user if mine else None


def _place(params: QueryParams) -> tuple[int, InboxCursor | None, InboxCursor | None]:
    """The page's number (a label), and the cursor it starts after or ends before (a link
    edited by hand: the first page)."""
    try:
        page = max(1, min(10_000, int(params.get("page", "1"))))
    except ValueError:
        page = 1
    listed = {key: params.getlist(key) for key in ("cursor", "before")}
    try:
        start = parse_inbox_cursor(listed, "cursor")
        end = None if start is not None else parse_inbox_cursor(listed, "before")
    except BadFilter:
        start = end = None
    if start is None and end is None:
        page = 1
    return page, start, end


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_page(request: Request, staff: SignedIn) -> Response:
    """The open cases of the reader's agency (the coordinator: any agency's)."""
    principal = staff.principal
    if not any(role in principal.roles for role in READERS):
        raise ConsoleRefusal(403, NO_INBOX, staff)
    params = request.query_params
    agency = params.get("agency") or principal.agency
    try:
        validate_code("agency", agency)
    except InvalidCode:
        agency = principal.agency
    if Role.COORDINATOR not in principal.roles and agency != principal.agency:
        raise ConsoleRefusal(403, NOT_YOURS, staff)
    flt, filters, focal_point = _chosen(params, agency, principal)
    page, start, end = _place(params)

    stores: dict[str, ReadModelStore] = request.app.state.read_models
    settings = request.app.state.settings
    after = params.get("after")
    behind = False
    if after and after.isascii() and after.isdigit() and len(after) < 19:
        # read-your-writes after a change made on the case page (a transfer): wait, bounded
        try:
            await wait_for_position(stores["inbox"], int(after), settings.read_wait_seconds)
        except Problem:
            behind = True  # shown as it is, saying so, rather than not at all
    try:
        await wait_for_position(stores["inbox"], None, settings.read_wait_seconds)
        moment = datetime.now(UTC)
        shown, counts = await query(
            stores["inbox"],
            lambda db: (
                page_of_inbox(
                    db,
                    agency,
                    focal_point=focal_point,
                    now=moment,
                    after=start,
                    before=end,
                    limit=PAGE_SIZE,
                    filter=flt,
                ),
                inbox_counts(db, agency, focal_point=focal_point, now=moment, filter=flt),
            ),
        )
    except Problem:
        raise ConsoleRefusal(503, NOT_READY, staff) from None
    pages = max(1, -(-counts.open // PAGE_SIZE))
    if shown.previous_cursor is None:
        page = 1
    page = max(1, min(page, pages))

    def query_of(**change: str | int | None) -> str:
        return urlencode({k: v for k, v in {**filters, **change}.items() if v not in ("", None)})

    next_link = previous_link = None
    if shown.next_cursor is not None:
        next_link = query_of(cursor=encode_inbox_cursor(shown.next_cursor), page=page + 1)
    if shown.previous_cursor is not None:
        previous_link = query_of(before=encode_inbox_cursor(shown.previous_cursor), page=page - 1)
    return render(
        request,
        staff,
        "console/inbox.html",
        items=shown.items,
        total=counts.open,
        overdue_count=counts.overdue,
        page=page,
        pages=max(pages, page),
        filters=filters,
        query_of=query_of,
        next_link=next_link,
        previous_link=previous_link,
        actions=ACTIONS,
        categories=CATEGORIES,
        urgent=urgent,
        coordinator=Role.COORDINATOR in principal.roles,
        focal_point=Role.FOCAL_POINT in principal.roles,
        done=params.get("done", ""),
        behind=behind,
    )
