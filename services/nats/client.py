"""What every cbcm NATS client shares: its credentials and TLS, quiet error reporting while
the client reconnects, and the streams that keep everything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from contracts.subjects import EVENT_SUBJECTS, STREAM
from services.settings import Settings

log = structlog.get_logger()

T = TypeVar("T")


def nats_servers(url: str) -> str | list[str]:
    """``CBCM_NATS_URL`` as nats-py's ``servers`` argument (its first, positional one).

    Several comma-separated URLs (the nodes of a cluster) become a list: the client's server
    pool, which it connects to and fails over within (and adds the nodes the cluster itself
    announces). One URL is passed as it is, so a one-node set-up behaves as before.
    nats-py would otherwise parse ``a,b`` as one URL and refuse it.
    """
    if "," not in url:
        return url
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if len(servers) == 1:
        return servers[0]
    return servers


def nats_connect_options(settings: Settings, client: str) -> dict[str, Any]:
    """The ``nats.connect`` keyword options of ``client`` from ``settings``: its nkey seed,
    TLS, and reply subjects under its own prefix.

    ``client`` is the service's user in ``deploy/nats`` (``relay``, ``project-inbox``,
    ``audit-witness``...), whose grant is ``_INBOX.<client>.>``; ``CBCM_NATS_INBOX_PREFIX``
    overrides it (an agency's credentials: ``_INBOX.<agency>``). Nothing configured, nothing
    returned: the embedded loopback nats-server needs no credentials.
    """
    options: dict[str, Any] = {}
    if settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
        options["inbox_prefix"] = f"_INBOX.{client}"
    if settings.nats_inbox_prefix is not None:
        options["inbox_prefix"] = settings.nats_inbox_prefix
    if settings.nats_tls_ca_file is not None or settings.nats_tls_cert_file is not None:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.nats_tls_cert_file is not None:
            key = settings.nats_tls_key_file
            context.load_cert_chain(settings.nats_tls_cert_file, key)
        options["tls"] = context
    return options


def jetstream_options(settings: Settings) -> dict[str, Any]:
    """The ``nc.jetstream(...)`` keyword options: the API prefix an agency's account
    reaches the services' JetStream under (``CBCM_NATS_JS_API_PREFIX``)."""
    if settings.nats_js_api_prefix is None:
        return {}
    return {"prefix": settings.nats_js_api_prefix}


def quiet_errors(
    event: str = "nats.client_error", every: float = 10.0
) -> Callable[[Exception], Awaitable[None]]:
    """An ``error_cb`` for nats-py: a warning ``event`` at most every ``every`` seconds.

    nats-py reconnects by itself; its default callback prints a traceback per attempt,
    thousands of lines during an outage.
    """
    last = [0.0]

    async def report(exc: Exception) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            log.warning(event, error=type(exc).__name__)
        else:
            log.debug(event, error=type(exc).__name__)

    return report


DUPLICATE_WINDOW = 120.0
"""Seconds JetStream remembers a ``Nats-Msg-Id``: a re-sent message is dropped within it."""


def kept_stream(name: str, description: str, subject: str, replicas: int = 1) -> StreamConfig:
    """A stream that keeps everything: file storage, no delete, no purge (its messages are
    what rebuilds and audits start from)."""
    return StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW,
        deny_delete=True,
        deny_purge=True,
    )


async def ensure_kept_stream(js: JetStreamContext, wanted: StreamConfig) -> StreamInfo:
    """Create the stream, or bring an existing one to ``wanted`` (idempotent)."""
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(wanted)
        log.info("nats.stream_created", stream=wanted.name, replicas=wanted.num_replicas)
        return info
    current = info.config
    if (
        current.subjects == wanted.subjects
        and current.storage == wanted.storage
        and current.num_replicas == wanted.num_replicas
        and current.duplicate_window == wanted.duplicate_window
        and current.deny_delete
        and current.deny_purge
    ):
        return info
    # deny_delete/deny_purge cannot be turned off by an update, only on: updating is safe.
    info = await js.update_stream(wanted)
    log.info("nats.stream_updated", stream=wanted.name, replicas=wanted.num_replicas)
    return info


def stream_config(replicas: int = 1) -> StreamConfig:
    """The ``CBCM_EVENTS`` stream as ADR 3 fixes it (the projections' source for rebuilds:
    nothing may be removed from it)."""
    return kept_stream(
        STREAM,
        "Every published cbcm domain event, in event store position order",
        EVENT_SUBJECTS,
        replicas,
    )


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> StreamInfo:
    """Create the stream, or bring an existing one to the fixed configuration (idempotent)."""
    return await ensure_kept_stream(js, stream_config(replicas))


TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.Error,  # includes timeouts, no responders, connection closed
    nats.js.errors.Error,
    TimeoutError,
    OSError,
    # The event store unreachable: the library's errors, and psycopg's own from the
    # subscription's LISTEN connection, which the library does not translate.
    PersistenceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
"""Failures of the bus or the event store that a service waits out (retrying with backoff)
rather than stops on."""


async def wait_for_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The result of ``work`` (a connection, say, which retries on its own while NATS is
    down), or ``None`` if ``stop`` is set first (``work`` is then cancelled)."""
    doing = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((doing, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if doing.done():
        return doing.result()
    doing.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await doing
    return None


def nats_replicas(settings: Settings) -> int:
    """``CBCM_NATS_REPLICAS`` (default 1): the stream's replica count."""
    configured = getattr(settings, "nats_replicas", None)
    if configured is not None:
        return int(configured)
    return int(os.environ.get("CBCM_NATS_REPLICAS", "1"))
