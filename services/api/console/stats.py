"""Statistics releases in the console (issue #21): each published release as charts drawn on
the server and the tables of the same numbers, with its CSV and XLSX files.

Only releases: the numbered, immutable documents protected together against an attacker who
holds them all (ADR 12), read from the same ledger with the same functions as
``/v1/stats/releases``, for the same readers. Never the live reports (those are the
coordinator's, through the API) and never a raw count: a withheld cell is shown as withheld.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from services.api.console.figures import release_tables
from services.api.console.recording import in_thread, matching, role_in, translations
from services.api.console.session import ConsoleRefusal, SignedIn
from services.api.console.site import NAV, render
from services.api.pages.i18n import N_
from services.api.routes.reads import STATISTICS_READERS
from services.api.routes.stats import MEDIA
from services.api.schemas.stats import RELEASE_OR_PERIOD, ReleaseFormat
from services.statistics import exports
from services.statistics.releases import (
    LedgerPlace,
    get_release,
    has_ledger,
    ledger_place,
    list_releases,
    open_ledger,
)

router = APIRouter(prefix="/console")

NAV.append(("/console/statistics", N_("Statistics releases"), STATISTICS_READERS))

NO_RELEASE = N_("There is no such statistics release.")


def _ledger(request: Request) -> LedgerPlace:
    return ledger_place(request.app.state.settings)


def _summaries(ledger: LedgerPlace) -> list[dict[str, Any]]:
    """Every release version, newest period first (as ``/v1/stats/releases`` lists them)."""
    if not has_ledger(ledger):
        return []
    with open_ledger(ledger, readonly=True) as db:
        found = list_releases(db)
    latest = {v.period: v.version for v in found}
    rows = [
        {
            "id": v.id,
            "period": v.period,
            "version": v.version,
            "released_at": v.released_at,
            "latest": latest[v.period] == v.version,
            "held_back": bool(v.document["release"]["held_back"]),
        }
        for v in found
    ]
    return list(reversed(rows))


def _find(ledger: LedgerPlace, release: str) -> dict[str, Any] | None:
    if not has_ledger(ledger):
        return None
    with open_ledger(ledger, readonly=True) as db:
        found = get_release(db, release)
    return None if found is None else found.document


@router.get("/statistics")
async def releases(request: Request, staff: SignedIn) -> Response:
    """The published releases, newest first, each with its files."""
    role_in(staff, STATISTICS_READERS)
    found = await in_thread(lambda: _summaries(_ledger(request)))
    return render(request, staff, "console/stats_releases.html", releases=found)


@router.get("/statistics/{release}")
async def release_page(request: Request, staff: SignedIn, release: str) -> Response:
    """One release: every report as a chart and a table."""
    role_in(staff, STATISTICS_READERS)
    matching(staff, release, RELEASE_OR_PERIOD, NO_RELEASE)
    document = await in_thread(lambda: _find(_ledger(request), release))
    if document is None:
        raise ConsoleRefusal(404, NO_RELEASE, staff)
    tables = release_tables(document, translations(request, staff))
    return render(
        request,
        staff,
        "console/stats_release.html",
        release=document["release"],
        tables=tables,
    )


@router.get("/statistics/{release}/download/{kind}")
async def download(request: Request, staff: SignedIn, release: str, kind: str) -> Response:
    """The release as the API gives it: CSV or XLSX (with an HXL hashtag row), or JSON."""
    role_in(staff, STATISTICS_READERS)
    matching(staff, release, RELEASE_OR_PERIOD, NO_RELEASE)
    matching(staff, kind, r"csv|xlsx|json")
    chosen = ReleaseFormat(kind)
    document = await in_thread(lambda: _find(_ledger(request), release))
    if document is None:
        raise ConsoleRefusal(404, NO_RELEASE, staff)
    filename = f"cbcm-stats-{document['release']['id']}.{chosen.value}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if chosen is ReleaseFormat.csv:
        body: str | bytes = exports.to_csv(document)
    elif chosen is ReleaseFormat.xlsx:
        body = await in_thread(lambda: exports.to_xlsx(document))
    else:
        body = exports.to_json(document)
    return Response(body, media_type=MEDIA[chosen], headers=headers)
