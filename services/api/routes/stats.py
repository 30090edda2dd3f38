"""Statistics over HTTP (issue #14).

- ``GET /v1/stats/releases`` and ``GET /v1/stats/releases/{id}``: the published releases,
  numbered and immutable, protected together against an attacker holding every one of them;
  for every statistics reader.
- ``GET /v1/stats`` and ``GET /v1/stats/{report}``: the *live* reports, recomputed as cases
  come in and protected table by table only. Comparing two of them gives away the case that
  came in between, so they are for the coordinator alone and never published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from domain.actors import Role
from projections import stats
from projections.base import get_position
from services.api.auth import CurrentPrincipal, require_role
from services.api.problems import Problem
from services.api.read_models import applied_position, reading, wait_for_position
from services.api.routes.reads import READ_RESPONSES, STATISTICS_READERS, After
from services.api.schemas.stats import RELEASE_OR_PERIOD, ReleaseFormat, ReleaseList
from services.projector.storage import ReadModelStore
from services.statistics import exports
from services.statistics.releases import (
    LedgerPlace,
    get_release,
    has_ledger,
    list_releases,
    open_ledger,
)

LIVE_READERS = (Role.COORDINATOR,)
"""Who may read the live statistics: they change with every case, so only the coordinator."""

MEDIA = {
    ReleaseFormat.json: "application/json",
    ReleaseFormat.csv: "text/csv; charset=utf-8",
    ReleaseFormat.xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def statistics_router(
    stats_model: ReadModelStore, ledger: LedgerPlace, wait_bound: float
) -> APIRouter:
    """The statistics endpoints over the read model ``stats_model`` and the release ledger
    at ``ledger`` (``services.statistics.releases.ledger_place``)."""
    router = APIRouter(prefix="/v1", responses=READ_RESPONSES, tags=["statistics"])
    documents = StatisticsDocuments(stats_model)

    @router.get("/stats/releases", response_model=ReleaseList)
    async def releases(request: Request, principal: CurrentPrincipal) -> Response:
        """Every statistics release version, oldest period first (none before the first
        period has closed and its embargo passed)."""
        if request.query_params:  # e.g. ``?after=`` meant for a live report: said, not ignored
            raise Problem(422, "the list of releases takes no query parameters")
        require_role(principal, STATISTICS_READERS)
        return JSONResponse(jsonable_encoder(await asyncio.to_thread(_summaries, ledger)))

    @router.get(
        "/stats/releases/{release}",
        responses={
            200: {
                "description": "the release version: JSON (schema "
                "urn:cbcm:schema:org.psea.cbcm.stats.release.v1, docs/contracts/schemas/), CSV "
                "or XLSX with an HXL hashtag row",
                "content": {MEDIA[f]: {} for f in ReleaseFormat if f is not ReleaseFormat.json},
            }
        },
    )
    async def release(
        principal: CurrentPrincipal,
        release: Annotated[str, Path(pattern=RELEASE_OR_PERIOD, max_length=24)],
        format: Annotated[ReleaseFormat, Query(description="json, csv or xlsx")] = (
            ReleaseFormat.json
        ),
    ) -> Response:
        """One release version (``2026-q1-v2``), or the latest version of a release
        (``2026-q1``)."""
        require_role(principal, STATISTICS_READERS)
        found = await asyncio.to_thread(_find, ledger, release)
        if found is None:
            raise Problem(404, f"no statistics release {release!r}; see /v1/stats/releases")
        filename = f"cbcm-stats-{found['release']['id']}.{format.value}"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        if format is ReleaseFormat.json:
            return JSONResponse(found)
        if format is ReleaseFormat.csv:
            return Response(exports.to_csv(found), media_type=MEDIA[format], headers=headers)
        body = await asyncio.to_thread(exports.to_xlsx, found)
        return Response(body, media_type=MEDIA[format], headers=headers)

    @router.get("/stats")
    async def statistics(principal: CurrentPrincipal, after: After = None) -> Response:
        """The live reports, for the coordinator only: aggregates, small cells suppressed
        table by table. Never publish them: publish releases."""
        require_role(principal, LIVE_READERS)
        position = await wait_for_position(stats_model, after, wait_bound)
        return _json(await documents.all(), position)

    @router.get("/stats/{report}")
    async def statistics_report(
        principal: CurrentPrincipal,
        report: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")],
        after: After = None,
    ) -> Response:
        """One live report, for the coordinator only."""
        require_role(principal, LIVE_READERS)
        position = await wait_for_position(stats_model, after, wait_bound)
        tables = await documents.all()
        if report not in tables:
            raise Problem(404, f"no report {report!r}; see /v1/stats", reports=sorted(tables))
        return _json(tables[report], position)

    return router


def _json(payload: Any, position: int) -> JSONResponse:
    return JSONResponse(jsonable_encoder(payload), headers={"X-Cbcm-Position": str(position)})


def _summaries(ledger: LedgerPlace) -> dict[str, Any]:
    with _ledger_reachable():
        if not has_ledger(ledger):
            return {"releases": []}
        with open_ledger(ledger, readonly=True) as db:
            found = list_releases(db)
    latest = {v.period: v.version for v in found}
    return {
        "releases": [
            {
                "id": v.id,
                "period": v.period,
                "version": v.version,
                "released_at": v.released_at,
                "supersedes": v.document["release"]["supersedes"],
                "latest": latest[v.period] == v.version,
                "held_back": v.document["release"]["held_back"],
            }
            for v in found
        ]
    }


def _find(ledger: LedgerPlace, release: str) -> dict[str, Any] | None:
    with _ledger_reachable():
        if not has_ledger(ledger):
            return None
        with open_ledger(ledger, readonly=True) as db:
            found = get_release(db, release)
    return None if found is None else found.document


@contextlib.contextmanager
def _ledger_reachable() -> Iterator[None]:
    """503 while the release ledger's PostgreSQL database cannot be reached."""
    try:
        yield
    except psycopg.OperationalError:
        raise Problem(
            503,
            "the statistics releases cannot be read now: their database is unreachable",
            headers={"Retry-After": "5"},
        ) from None


class StatisticsDocuments:
    """The live reports of the statistics read model, built off the event loop, one build at
    a time, and kept until the read model moves on. Building them takes a second or more on
    a large network; inline, every request waited behind it, /healthz included (found by the
    attack review of issue #12)."""

    def __init__(self, store: ReadModelStore) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self._built: tuple[int, dict[str, Any]] | None = None

    async def all(self) -> dict[str, Any]:
        async with self._lock:
            position = await asyncio.to_thread(applied_position, self._store)
            if self._built is None or self._built[0] != position:
                self._built = await asyncio.to_thread(self._build)
            return self._built[1]

    def _build(self) -> tuple[int, dict[str, Any]]:
        with reading(self._store) as db:
            position = get_position(db)
            tables = stats.reports(db, k=stats.threshold(db))
        return position, {name: stats.report_document(r) for name, r in tables.items()}
