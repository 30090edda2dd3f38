"""The HTTP API (FastAPI): every command of the domain and the queries of the read models,
under ``/v1``, for bearer-token callers by need-to-know; plus the public receipt look-up and
web-form intake, and the operations endpoints.

The one place the API is wired: the application service (opened lazily, so the API starts
and serves its reads while the event store is unreachable), the token verifier, the receipt
desk and the metrics.

The HTTP edge (issue #16, ``services.api.edge``): forwarded addresses believed only from
listed proxies, bodies over the limit refused before they are read, security headers on every
answer. Prometheus metrics are not served here but on an address of their own
(``CBCM_API_METRICS_ADDR``, ``cbcm api``); the docs pages load nothing from elsewhere.

Operations (issue #12): ``/readyz`` says whether this process can serve (what a load
balancer asks: it does not ask the event store, which every instance shares, so a PostgreSQL
restart does not take every instance out); ``/status`` gives the deep view for people and
monitors: the event store, each read model's position and lag, and every worker's stall.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import anyio
from eventsourcing.utils import get_topic
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.api import console
from services.api.edge import BodyLimit, ClientAddress, SecurityHeaders
from services.api.metrics import ApiMetrics, MetricsMiddleware
from services.api.pages import complainants
from services.api.pages.csrf import FormGuard, load_or_create_form_key
from services.api.pages.i18n import Catalogues
from services.api.pages.site import PAGE_POLICY, Site
from services.api.problems import Problem, install_problem_handlers
from services.api.read_models import READ_MODELS, applied_position
from services.api.routes import (
    cases,
    feedback,
    intake,
    network,
    notifications,
    prevention,
    public,
    referrals,
    webhooks,
)
from services.api.routes.prevention import prevention_reports_router
from services.api.routes.reads import read_model_router
from services.api.routes.register import register_router
from services.api.routes.stats import statistics_router
from services.api.throttle import FailureThrottle, RateLimit, throttle_storage
from services.application.mechanism import ComplaintMechanism
from services.application.receipts import ReceiptHasher
from services.application.store import INTERNAL_AGGREGATES
from services.bootstrap import complaint_mechanism
from services.event_store.errors import EventStoreUnavailable
from services.identity.tokens import TokenVerifier, verifier_from_settings
from services.projector.runner import worker_name
from services.projector.storage import ReadModelStore, read_model_store, status_place_of
from services.runtime.worker_status import stalls
from services.settings import Settings
from services.statistics.releases import ledger_place

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
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API over the event store and read models ``settings`` name. Tests may pass an
    open application, a verifier and a cheaper receipt hasher. Its metrics go to
    ``registry`` (``cbcm api``: the process's default one, served on
    ``CBCM_API_METRICS_ADDR``), by default to one of its own (tests build many apps)."""
    stores: dict[str, ReadModelStore] = {
        name: read_model_store(settings, name) for name in READ_MODELS
    }
    lazy = LazyMechanism(settings, mechanism)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(lazy.close)
        for store in stores.values():
            await run_in_threadpool(store.close)

    # Swagger UI and ReDoc from the fastapi-offline package's own files: no CDN (issue #16)
    app = FastAPIOffline(title="cbcm", version="1", description=DESCRIPTION, lifespan=lifespan)
    install_problem_handlers(app)
    metrics = ApiMetrics(
        lambda: {name: _position_or_none(s) for name, s in stores.items()}, registry=registry
    )
    throttles = throttle_storage(settings.throttle_store, settings.throttle_key_prefix)
    app.state.metrics = metrics
    app.state.read_models = stores  # the console's pages read them too
    app.state.settings = settings
    app.state.mechanism = lazy
    app.state.verifier = verifier or verifier_from_settings(settings)
    app.state.receipts = public.ReceiptDesk(
        hasher=receipt_hasher or ReceiptHasher(),
        failures=FailureThrottle(
            per_locator=settings.receipt_failures_per_locator,
            per_client=settings.receipt_failures_per_client,
            window_seconds=settings.receipt_failure_window_seconds,
            storage=throttles,
            slowdown_base_seconds=settings.receipt_slowdown_base_seconds,
            slowdown_max_seconds=settings.receipt_slowdown_max_seconds,
        ),
        intake_limit=RateLimit(
            per_client=settings.public_intake_per_client,
            window_seconds=settings.public_intake_window_seconds,
            storage=throttles,
        ),
        hashing=anyio.CapacityLimiter(4),
        issuing=anyio.CapacityLimiter(4),
    )
    # outermost last: headers on every answer, who the client is, the answer counted (a 413
    # included), then the body's size, before FastAPI reads anything
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=lambda: metrics)
    app.add_middleware(ClientAddress, proxies=settings.trusted_proxy_networks())
    app.add_middleware(SecurityHeaders, pages=complainants.PAGES, page_policy=PAGE_POLICY)

    # before the cases' router: /v1/cases/export is no case id
    app.include_router(register_router(stores["register"], settings.read_wait_seconds))
    for router in (
        network.router,
        cases.router,
        referrals.router,
        feedback.router,
        webhooks.router,
        intake.router,
        notifications.router,
    ):
        app.include_router(router)
    app.include_router(read_model_router(stores, settings.read_wait_seconds))
    app.include_router(
        statistics_router(stores["stats"], ledger_place(settings), settings.read_wait_seconds)
    )
    app.include_router(public.router)
    app.include_router(prevention.router)
    app.include_router(prevention_reports_router(ledger_place(settings)))
    app.state.pages = Site(
        catalogues=Catalogues(settings.data_dir / "locales"),
        guard=FormGuard(load_or_create_form_key(settings.data_dir), throttles),
    )
    app.state.pages_agency = settings.public_pages_agency
    app.include_router(complainants.router)
    console.mount(app, settings)  # the staff console (/console, ADR 24): after the edge
    _operations(app, stores, settings.data_dir, lazy)
    return app


STORE_PROBE_SECONDS = 2.0
"""The longest ``/status`` waits for the event store to answer before calling it
unreachable."""


class ReadinessOut(BaseModel):
    """``/readyz``: whether this process can serve."""

    status: Literal["ready", "starting"]
    read_models_missing: list[str] = Field(
        description="read models this instance answers from whose file does not exist yet"
    )


class EventStoreStatusOut(BaseModel):
    reachable: bool
    head_position: int | None = Field(
        description="the store's last position (its own records included), when reachable"
    )


class ReadModelStatusOut(BaseModel):
    applied_position: int | None = Field(description="None: the read model does not exist")
    lag: int | None = Field(
        description="the position of the store's last published event minus the applied "
        "position (0 when caught up; the store's own records, never published, do not "
        "count); None when either is unknown"
    )
    stalled_position: int | None = Field(
        description="the position its projector stopped at (see stalls), or None"
    )


class StallOut(BaseModel):
    worker: str = Field(description="project-<read model>, or relay")
    position: int = Field(description="the event store position of the message it stopped at")
    message_type: str
    error: str = Field(description="the error's type (never its text)")
    since: str
    detail: str


class StatusOut(BaseModel):
    """``/status``: everything an operator checks first. Positions only: no case, no count."""

    status: Literal["ok", "degraded"]
    event_store: EventStoreStatusOut
    read_models: dict[str, ReadModelStatusOut]
    stalls: list[StallOut]


PUBLISHED_LOOK_BACK = 256
"""How many positions back from the head ``/status`` looks for the last published event."""


def _internal_topic_prefixes() -> tuple[str, ...]:
    return tuple(f"{get_topic(aggregate)}." for aggregate in INTERNAL_AGGREGATES)


def _store_head(mechanism: Callable[[], ComplaintMechanism]) -> tuple[int, int] | None:
    """The store's last position and that of its last published event (the store's own
    records, a receipt's verifier say, never reach a read model: a lag counted to them would
    never close on an idle network), or None when the store cannot be reached."""
    try:
        recorder = mechanism().recorder
        head = int(recorder.max_notification_id() or 0)
        internal = _internal_topic_prefixes()
        tail = recorder.select_notifications(
            start=max(1, head - PUBLISHED_LOOK_BACK + 1), limit=PUBLISHED_LOOK_BACK, stop=head
        )
        published = [n.id for n in tail if not n.topic.startswith(internal)]
    except (EventStoreUnavailable, Exception):
        return None
    # with none published in the window, the head itself (an overestimate, never an under-)
    return head, published[-1] if published else head


def _position_or_none(store: ReadModelStore) -> int | None:
    """The read model's position for a metric or a status (None: missing or unreachable)."""
    try:
        return applied_position(store)
    except Problem:
        return None


def _status(
    stores: dict[str, ReadModelStore], data_dir: pathlib.Path, heads: tuple[int, int] | None
) -> tuple[StatusOut, bool]:
    head, published = (None, None) if heads is None else heads
    # read models on PostgreSQL: the records every host writes are in their database
    place = status_place_of(next(iter(stores.values()))) if stores else data_dir
    found = stalls(place)
    stalled_at = {s.worker: s.position for s in found}
    read_models: dict[str, ReadModelStatusOut] = {}
    for name, store in stores.items():
        applied = _position_or_none(store)
        read_models[name] = ReadModelStatusOut(
            applied_position=applied,
            lag=None if published is None or applied is None else max(0, published - applied),
            stalled_position=stalled_at.get(worker_name(name)),
        )
    ok = (
        head is not None
        and not found
        and all(r.applied_position is not None for r in read_models.values())
    )
    body = StatusOut(
        status="ok" if ok else "degraded",
        event_store=EventStoreStatusOut(reachable=head is not None, head_position=head),
        read_models=read_models,
        stalls=[
            StallOut(
                worker=s.worker,
                position=s.position,
                message_type=s.message_type,
                error=s.error,
                since=s.since,
                detail=s.describe(),
            )
            for s in found
        ],
    )
    return body, ok


def _operations(
    app: FastAPI,
    stores: dict[str, ReadModelStore],
    data_dir: pathlib.Path,
    mechanism: Callable[[], ComplaintMechanism],
) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=None,
        responses={
            200: {"model": ReadinessOut, "description": "ready: this instance can serve"},
            503: {
                "model": ReadinessOut,
                "description": "starting: a read model it answers from does not exist yet",
            },
        },
    )
    async def readyz() -> Response:
        """Whether this process can serve: every read model it answers from exists (the
        projectors create them). For a load balancer: it does not ask the event store,
        which every instance shares; while the store is down, writes answer 503 at once
        and reads go on, and taking every instance out would only stop the reads too. The
        deep view is `/status`."""
        found = await run_in_threadpool(
            lambda: {name: _position_or_none(s) for name, s in stores.items()}
        )
        missing = [name for name, position in found.items() if position is None]
        body = ReadinessOut(status="starting" if missing else "ready", read_models_missing=missing)
        return JSONResponse(body.model_dump(), status_code=503 if missing else 200)

    @app.get(
        "/status",
        tags=["operations"],
        response_model=None,
        responses={
            200: {"model": StatusOut, "description": "all is well"},
            503: {
                "model": StatusOut,
                "description": "degraded: the event store cannot be reached, a read model "
                "does not exist, or a worker (a projector, the relay) is stalled at a "
                "message; the body still lists everything",
            },
        },
    )
    async def status() -> Response:
        """The deep view: the event store (reachable, its head position), each read
        model's applied position and lag behind the head, and every stall a worker
        recorded (which worker, the position and type of the message it stopped at, the
        error's type). Positions only: no personal data, no count of cases. The API does
        not connect to NATS, so NATS is not listed (the workers' metrics tell of it)."""
        heads: tuple[int, int] | None = None
        # An unreachable store can take the driver's timeouts to say so: a status answers
        # within STORE_PROBE_SECONDS (the probe thread is left to finish on its own).
        with anyio.move_on_after(STORE_PROBE_SECONDS):
            heads = await anyio.to_thread.run_sync(_store_head, mechanism, abandon_on_cancel=True)
        body, ok = await run_in_threadpool(_status, stores, data_dir, heads)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
