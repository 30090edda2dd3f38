"""``cbcm serve``, ``relay``, ``project`` and ``api``: the stack, whole or one service at a
time. Each long-running service configures its logging first (JSON lines in JSON mode)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from services.cli.common import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    ReadModel,
    fail,
    load_settings,
    nats_url,
    run_until_signalled,
    service_settings,
)
from services.runtime.logging import configure_logging

if TYPE_CHECKING:
    from services.settings import Settings

log = structlog.get_logger()


def register(cli: typer.Typer) -> None:
    """Add ``cbcm serve``, ``relay``, ``project`` and ``api`` to the ``cbcm`` command line."""
    cli.command()(serve)
    cli.command()(relay)
    cli.command()(project)
    cli.command()(api)


def serve() -> None:
    """The whole stack on embedded defaults: nats-server, relay, projections, HTTP API.

    For development and demonstrations: one machine, every key in the data dir. In production
    each service runs on its own (systemd units in deploy/systemd)."""
    from services.cli.forked import PRELOAD, run_service
    from services.event_store.config import EventStoreConfigError, store_location
    from services.event_store.schema import prepare as prepare_store
    from services.nats.server import NatsServerError
    from services.runtime.forking import Forker
    from services.runtime.supervisor import (
        AddressInUse,
        Supervisor,
    )

    settings = load_settings()
    configure_logging(settings.log_format, "serve")

    def tables() -> None:
        # once the addresses are checked, before nats-server and any worker: the embedded
        # SQLite store gets its tables (each worker only checks them: one that started first
        # would find none); a PostgreSQL store is checked, `cbcm db init` named if it has none
        prepare_store(store_location(settings), create=True)

    try:
        code = Supervisor(
            settings,
            Forker(PRELOAD, run_service),
            prepare_store=tables,
            prepare_nats=_create_event_stream,
        ).run()
    except EventStoreConfigError as e:
        fail(str(e), EXIT_CONFIG)
    except AddressInUse as e:
        fail(str(e), EXIT_CONFIG)
    except NatsServerError as e:
        fail(str(e), EXIT_UNAVAILABLE)
    raise typer.Exit(code)


def _create_event_stream(url: str) -> None:
    """The relay's stream on the embedded nats-server, created before any worker starts: the
    projectors consume it, and one that started before the relay would otherwise find it
    missing and, on a slow machine, warn on a clean start."""
    import asyncio

    import nats

    from services.nats.client import ensure_stream

    async def create() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(create())


def relay() -> None:
    """Publish the event store's events to JetStream stream CBCM_EVENTS, in order."""
    settings = service_settings("relay")
    if settings.relay_translator_process is None:  # a process of its own: two cores at work
        settings = settings.model_copy(update={"relay_translator_process": True})

    async def main(stop: asyncio.Event) -> None:
        # imported once the settings and the metrics address are accepted: a refusal of
        # either costs no import of the application
        from services.relay.relay import run_relay

        await run_relay(settings, stop, nats_url(settings))

    run_until_signalled(settings, main)


def project(name: Annotated[ReadModel, typer.Argument(help="inbox, assistance or stats")]) -> None:
    """Keep one read model up to date from the stream (a durable consumer)."""
    from services.projector import projection_named
    from services.projector.runner import run_projector
    from services.projector.storage import ReadModelStoreError, read_model_store

    settings = service_settings(f"project-{name.value}")
    projection = projection_named(name.value)
    try:
        store = read_model_store(settings, name.value)
    except ReadModelStoreError as e:
        fail(str(e), EXIT_CONFIG)

    async def main(stop: asyncio.Event) -> None:
        publisher = None
        if name is ReadModel.stats:  # (the releases' solver is the statistics service's only)
            from services.projector.publication import StatisticsPublisher

            publisher = StatisticsPublisher(
                nats_url(settings), data_dir=settings.data_dir, store=store
            )
        try:
            await run_projector(projection, store, nats_url(settings), stop, on_commit=publisher)
        finally:
            if publisher is not None:
                await publisher.close()
            store.close()

    run_until_signalled(settings, main)


def _schema_at_start(settings: Settings) -> None:
    """Refuse to serve a store whose schema is not this cbcm's (ADR 21). The API opens the
    application on first use, so that it starts while PostgreSQL is down (and answers 503
    until it is back): an unreachable store is not checked here, the application checks it
    when it opens."""
    from services.event_store import schema
    from services.event_store.config import persistence_env
    from services.event_store.errors import EventStoreUnavailable

    with contextlib.suppress(EventStoreUnavailable):
        schema.prepare(persistence_env(settings), create=settings.create_tables)


def api() -> None:
    """The HTTP API on CBCM_HTTP_ADDR: every command and query under /v1, by need-to-know;
    its Prometheus metrics on CBCM_API_METRICS_ADDR (never on the API's port)."""
    import prometheus_client
    import uvicorn

    from services.runtime.metrics import MetricsAddressError, serve_metrics
    from services.runtime.supervisor import (
        AddressInUse,
        check_free,
    )

    settings = load_settings()
    configure_logging(settings.log_format, "api")
    _schema_at_start(settings)
    try:
        host, port = check_free(settings.http_addr, "CBCM_HTTP_ADDR")
        # the web app (1.5 s of CPU to import) once its address is known to be free
        from services.api.app import create_app
        from services.api.serving import server_config

        app = create_app(settings, registry=prometheus_client.REGISTRY)
        bound = serve_metrics(settings.api_metrics_addr, setting="CBCM_API_METRICS_ADDR")
    except (AddressInUse, MetricsAddressError, ValueError) as e:
        fail(str(e), EXIT_CONFIG)
    if bound is not None:
        log.info("cli.metrics_serving", address=f"{bound[0]}:{bound[1]}")
    uvicorn.Server(server_config(app, host, port)).run()
