"""The HTTP API. Issue #3 scope: read endpoints of the three read models.

Every read accepts ``?after=<position>`` (read-your-writes: wait, bounded, until the read
model has applied that store position). Responses carry ``X-Cbcm-Position``, the position
the answer reflects. The read models hold no personal data. Identity and need-to-know
arrive with issue #4; until then the API listens on loopback only by default.
"""

from __future__ import annotations

import dataclasses
import pathlib
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Path, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse

from projections import stats
from projections.assistance import gaps, tracker
from projections.inbox import case_row, inbox
from services.api.problems import Problem, install_problem_handlers
from services.api.read_models import READ_MODELS, applied_position, reading, wait_for_position
from services.projector.runner import read_model_path
from services.settings import Settings

After = Annotated[
    int | None,
    Query(ge=0, description="wait (bounded) until the read model has applied this position"),
]
AGENCY_CODE = r"^[a-z0-9][a-z0-9_-]{0,31}$"


def _json(payload: Any, position: int) -> JSONResponse:
    return JSONResponse(jsonable_encoder(payload), headers={"X-Cbcm-Position": str(position)})


def _asdict(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def create_app(settings: Settings) -> FastAPI:
    """The API over the read models under ``settings.data_dir``."""
    app = FastAPI(
        title="cbcm",
        version="1",
        description="Inter-agency PSEA complaint mechanism: read models (issue #3).",
    )
    install_problem_handlers(app)
    paths: dict[str, pathlib.Path] = {
        name: read_model_path(settings.data_dir, name) for name in READ_MODELS
    }

    _operations(app, paths)

    async def ready(name: str, after: int | None) -> int:
        return await wait_for_position(paths[name], after, settings.read_wait_seconds)

    @app.get("/v1/inbox/{agency}", tags=["inbox"])
    async def agency_inbox(
        agency: Annotated[str, Path(pattern=AGENCY_CODE)],
        focal_point: Annotated[str | None, Query(max_length=128)] = None,
        after: After = None,
    ) -> Response:
        """Open cases the agency holds (or one focal point's), overdue first."""
        position = await ready("inbox", after)
        with reading(paths["inbox"]) as db:
            items = inbox(db, agency, focal_point=focal_point, now=datetime.now(UTC))
        return _json({"agency": agency, "items": [_asdict(i) for i in items]}, position)

    @app.get("/v1/inbox/cases/{case_id}", tags=["inbox"])
    async def inbox_case(case_id: UUID, after: After = None) -> Response:
        """One case's milestones and pending actions."""
        position = await ready("inbox", after)
        with reading(paths["inbox"]) as db:
            row = case_row(db, case_id)
        if row is None:
            raise Problem(404, f"no case {case_id} in the inbox read model")
        return _json(_asdict(row), position)

    @app.get("/v1/assistance/cases/{case_id}", tags=["assistance"])
    async def assistance_case(case_id: UUID, after: After = None) -> Response:
        """A case's consents, service referrals with their times, and gaps."""
        position = await ready("assistance", after)
        with reading(paths["assistance"]) as db:
            found = tracker(db, case_id, now=datetime.now(UTC))
        if found is None:
            raise Problem(404, f"no case {case_id} in the assistance tracker")
        return _json(_asdict(found), position)

    @app.get("/v1/assistance/gaps", tags=["assistance"])
    async def assistance_gaps(
        agency: Annotated[str | None, Query(pattern=AGENCY_CODE)] = None,
        after: After = None,
    ) -> Response:
        """Consented cases with no provider for a service, referrals not accepted in time."""
        position = await ready("assistance", after)
        with reading(paths["assistance"]) as db:
            found = gaps(db, now=datetime.now(UTC), agency=agency)
        return _json({"gaps": [_asdict(g) for g in found]}, position)

    @app.get("/v1/stats", tags=["statistics"])
    async def statistics(after: After = None) -> Response:
        """Every anonymised report: aggregates only, small cells suppressed."""
        position = await ready("stats", after)
        with reading(paths["stats"]) as db:
            tables = stats.reports(db, k=stats.threshold(db))
        return _json({name: stats.report_document(r) for name, r in tables.items()}, position)

    @app.get("/v1/stats/{report}", tags=["statistics"])
    async def statistics_report(report: str, after: After = None) -> Response:
        """One anonymised report."""
        position = await ready("stats", after)
        with reading(paths["stats"]) as db:
            tables = stats.reports(db, k=stats.threshold(db))
        if report not in tables:
            raise Problem(404, f"no report {report!r}; see /v1/stats", reports=sorted(tables))
        return _json(stats.report_document(tables[report]), position)

    return app


def _operations(app: FastAPI, paths: dict[str, pathlib.Path]) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """Ready when every read model exists; lists each one's applied position."""
        positions = {name: applied_position(path) for name, path in paths.items()}
        ok = all(p is not None for p in positions.values())
        return JSONResponse(
            {"status": "ready" if ok else "starting", "positions": positions},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text format: each read model's applied position."""
        lines = [
            "# HELP cbcm_read_model_position Last event-store position applied.",
            "# TYPE cbcm_read_model_position gauge",
        ]
        for name, path in paths.items():
            position = applied_position(path)
            if position is not None:
                lines.append(f'cbcm_read_model_position{{read_model="{name}"}} {position}')
        return "\n".join(lines) + "\n"
