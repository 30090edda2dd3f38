"""The HTTP API (FastAPI): every command of the domain and the queries of the read models,
under ``/v1``, for bearer-token callers by need-to-know; plus the public receipt look-up and
web-form intake, and the operations endpoints.

The one place the API is wired: the application service (opened lazily, so the API starts
and says so on ``/readyz`` while the event store is unreachable), the token verifier, the
receipt desk and the metrics.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.problems import install_problem_handlers
from services.api.read_models import READ_MODELS, applied_position
from services.api.routes import cases, feedback, network, public, referrals
from services.api.routes.reads import read_model_router
from services.api.throttle import FailureThrottle, RateLimit
from services.bootstrap import complaint_mechanism
from services.identity import TokenVerifier, verifier_from_settings
from services.mechanism import ComplaintMechanism, EventStoreUnavailable
from services.projector.runner import read_model_path
from services.receipts import ReceiptHasher
from services.settings import Settings

DESCRIPTION = """\
The inter-agency PSEA complaint mechanism.

Every endpoint under `/v1` but `/v1/public/...` needs a bearer token (embedded: `cbcm token
--user U --agency A --role R`). Each role sees what its task needs and no more; a case the
caller may not see is answered 404, like a case that does not exist. Writes answer with the
store `position` of what they recorded: pass it as `?after=` to a read to read your write.
Writes accept an `Idempotency-Key` header (16-128 characters, a UUID fits): a retry gets the
first answer again and records nothing. Errors are RFC 9457 `application/problem+json`.
"""


class LazyMechanism:
    """The application service, opened on first use and again after a failed attempt."""

    def __init__(self, settings: Settings, given: ComplaintMechanism | None) -> None:
        self._settings = settings
        self._app = given
        self._owned = given is None
        self._lock = threading.Lock()

    def __call__(self) -> ComplaintMechanism:
        app = self._app
        if app is not None:
            return app
        with self._lock:
            if self._app is None:
                self._app = complaint_mechanism(self._settings)
            return self._app

    def close(self) -> None:
        if self._owned and self._app is not None:
            self._app.close()
            self._app = None


def create_app(
    settings: Settings,
    *,
    mechanism: ComplaintMechanism | None = None,
    verifier: TokenVerifier | None = None,
    receipt_hasher: ReceiptHasher | None = None,
) -> FastAPI:
    """The API over the event store and read models ``settings`` name. Tests may pass an
    open application, a verifier and a cheaper receipt hasher."""
    paths: dict[str, pathlib.Path] = {
        name: read_model_path(settings.data_dir, name) for name in READ_MODELS
    }
    lazy = LazyMechanism(settings, mechanism)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(lazy.close)

    app = FastAPI(title="cbcm", version="1", description=DESCRIPTION, lifespan=lifespan)
    install_problem_handlers(app)
    metrics = ApiMetrics(lambda: {name: applied_position(p) for name, p in paths.items()})
    app.state.metrics = metrics
    app.state.mechanism = lazy
    app.state.verifier = verifier or verifier_from_settings(settings)
    app.state.receipts = public.ReceiptDesk(
        hasher=receipt_hasher or ReceiptHasher(),
        failures=FailureThrottle(
            per_locator=settings.receipt_failures_per_locator,
            per_client=settings.receipt_failures_per_client,
            window_seconds=settings.receipt_failure_window_seconds,
        ),
        intake_limit=RateLimit(
            per_client=settings.public_intake_per_client,
            window_seconds=settings.public_intake_window_seconds,
        ),
        hashing=anyio.CapacityLimiter(4),
        issuing=anyio.CapacityLimiter(4),
    )
    app.add_middleware(MetricsMiddleware, metrics=lambda: metrics)

    for router in (network.router, cases.router, referrals.router, feedback.router):
        app.include_router(router)
    app.include_router(read_model_router(paths, settings.read_wait_seconds))
    app.include_router(public.router)
    _operations(app, paths, lazy, metrics)
    return app


def _store_answers(mechanism: Callable[[], ComplaintMechanism]) -> None:
    mechanism().recorder.max_notification_id()


def _operations(
    app: FastAPI,
    paths: dict[str, pathlib.Path],
    mechanism: Callable[[], ComplaintMechanism],
    metrics: ApiMetrics,
) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"description": "not ready: the event store or a read model is missing"}},
    )
    async def readyz() -> Response:
        """Ready when the event store answers and every read model exists; lists each read
        model's applied position."""
        positions = {name: applied_position(path) for name, path in paths.items()}
        try:
            await run_in_threadpool(_store_answers, mechanism)
            store = "ok"
        except (EventStoreUnavailable, Exception):
            store = "unavailable"
        ok = store == "ok" and all(p is not None for p in positions.values())
        return JSONResponse(
            {
                "status": "ready" if ok else "starting",
                "event_store": store,
                "positions": positions,
            },
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
