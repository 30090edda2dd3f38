"""``cbcm webhooks deliver``: the agencies' events, from JetStream to their webhook endpoints.

Two halves in one process, joined by the outbox (``services.webhooks.outbox``):

- **Fan-out.** A durable pull consumer ``cbcm-webhooks`` on ``CBCM_EVENTS`` (every event
  subject, explicit ack). For each fetched batch, the registry is read from the event store
  (cached by its version) and each message is queued for every endpoint that receives it
  (``routing.receives``: the agency's own subjects, the registered types) and was registered
  before it (an endpoint gets the events recorded after its registration). The rows and the
  stream sequence are committed in one SQLite transaction, then the batch is acked: a batch
  redelivered after a crash is skipped by sequence. The cursor, not the consumer, is the
  truth: at every start the consumer is made again to begin right after it, and a message
  that does not follow the cursor (an ack lost, a reordering) makes it again there.
- **Senders.** One task per enabled endpoint sends its queue in position order, one delivery
  at a time (so a case's events arrive in the order they happened), as the CloudEvent's
  bytes in structured mode (``application/cloudevents+json``), signed with the Standard
  Webhooks scheme (``signing``), over a transport that connects only to the address it
  checked (``pinning``: an internal one is refused, whatever the name's DNS says next).
  A 2xx answer removes the row; anything else (another status, a refused connection, a
  timeout, an address not allowed) is logged and retried after a wait that doubles from
  ``CBCM_WEBHOOK_RETRY_FIRST_SECONDS`` up to ``CBCM_WEBHOOK_RETRY_MOST_SECONDS``, the same
  ``webhook-id`` every time. An endpoint that has failed every attempt for
  ``CBCM_WEBHOOK_DISABLE_AFTER_DAYS`` is disabled by an event in the log
  (``WebhookRegistry.EndpointDisabled``, no actor, reason ``failing``): the coordinator sees
  it there (``cbcm webhooks list``, ``GET /v1/webhooks``) and is told by the notifier, which
  reads the registry's disablings from the log (``services.notify.webhooks``). Its queue
  waits; enabled again, it is sent first.

Killed at any point, nothing is lost and nothing is sent under another id: a row leaves the
queue only after its 2xx, so the worst case is one event sent again, with the same
``webhook-id``, which a receiver drops (at-least-once). Times come from ``clock`` (tests
control it); waits are real, at most ``POLL`` seconds each, so a controlled clock is seen
within one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpcore
import httpx
import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import EVENT_SUBJECTS, STREAM
from domain.errors import DomainError
from domain.webhooks import WEBHOOK_REGISTRY_ID, WebhookEndpoint
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.event_store.errors import EventStoreUnavailable
from services.nats.client import (
    TRANSIENT,
    nats_connect_options,
    nats_servers,
    quiet_errors,
    unless_stopped,
    wait_for_stop,
)
from services.runtime.backoff import Backoff
from services.runtime.threads import finished_in_thread
from services.settings import Settings
from services.webhooks import metrics
from services.webhooks.outbox import Attempt, Outbox, Queued, outbox_path
from services.webhooks.pinning import (
    AddressNotAllowed,
    PinnedBackend,
    PinnedTransport,
    Resolver,
    system_resolver,
)
from services.webhooks.routing import recipients
from services.webhooks.signing import signed_headers

log = structlog.get_logger(__name__)

DURABLE = "cbcm-webhooks"
"""The deliverer's durable consumer on ``CBCM_EVENTS`` (granted in ``services.nats.config``)."""
NATS_USER = "webhooks"
"""Its NATS user in ``deploy/nats``."""
ACK_WAIT = 30.0
FETCH_TIMEOUT = 1.0
POLL = 0.5
"""The longest real wait before a sender looks at its queue and the clock again."""
MAX_BACKOFF = 5.0
"""The longest wait before trying NATS or the event store again."""

Clock = Callable[[], datetime]

_STORE_TROUBLE: tuple[type[BaseException], ...] = (*TRANSIENT, EventStoreUnavailable)
"""The bus or the store away (or the store's tables not made yet): waited out."""
_REGISTRY_TROUBLE: tuple[type[BaseException], ...] = (*_STORE_TROUBLE, DomainError)


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long to wait between attempts and when to give up on an endpoint."""

    retry_first: timedelta = timedelta(seconds=5)
    retry_most: timedelta = timedelta(hours=1)
    disable_after: timedelta = timedelta(days=5)
    timeout: float = 10.0
    rotation_overlap: timedelta = timedelta(hours=24)
    """How long after a secret's rotation deliveries are signed with the old one too."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            retry_first=timedelta(seconds=settings.webhook_retry_first_seconds),
            retry_most=timedelta(seconds=settings.webhook_retry_most_seconds),
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            timeout=settings.webhook_timeout_seconds,
        )

    def wait_after(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th failed attempt of one delivery (1, 2...)."""
        exponent = min(max(failures - 1, 0), 40)
        wait: timedelta = self.retry_first * (2**exponent)
        return min(self.retry_most, wait)


class _Head(msgspec.Struct):
    id: str
    type: str
    position: int | None = None


_head = msgspec.json.Decoder(_Head)


@dataclass
class _Registry:
    """The registry as last read, with each endpoint's registration position."""

    version: int = -1
    endpoints: dict[UUID, WebhookEndpoint] = field(default_factory=dict)
    since: dict[UUID, int] = field(default_factory=dict)


class Deliverer:
    """The webhook deliverer of one event store (see the module's docstring)."""

    def __init__(
        self,
        app: ComplaintMechanism,
        outbox: Outbox,
        nats_url: str,
        *,
        policy: DeliveryPolicy | None = None,
        clock: Clock = system_clock,
        nats_options: dict[str, Any] | None = None,
        batch: int = 64,
        resolver: Resolver = system_resolver,
        dialer: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``resolver``: how endpoint names are resolved (the system's); ``dialer``: what
        opens the TCP connection to a checked address (httpcore's own); ``verify``: the
        certificate authorities (httpx's default): tests give theirs."""
        self.app = app
        self.resolver = resolver
        self.dialer = dialer
        self.verify = verify
        self.outbox = outbox
        self.nats_url = nats_url
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.nats_options = nats_options or {}
        self.batch = batch
        self._registry = _Registry()
        self._db_lock = asyncio.Lock()
        self._app_lock = asyncio.Lock()
        self._senders: dict[UUID, asyncio.Task[None]] = {}
        self._wake: dict[UUID, asyncio.Event] = {}
        self._enabled: set[UUID] = set()
        self._known_disabled: set[UUID] = set()
        self._queued_endpoints: set[UUID] = set()
        metrics.register()

    # ------------------------------------------------------------------ shared

    async def _db(self, call: Callable[..., Any], *args: Any) -> Any:
        """One outbox call at a time, in a thread (SQLite and fsync off the event loop).

        Never abandoned: a sender cancelled (the deliverer stopping, its endpoint removed)
        waits for its thread, so the lock is not let go while the outbox's one connection is
        in use, nor the outbox closed under a delivery being marked (the mark was lost, and
        the delivery sent again after a restart)."""
        async with self._db_lock:
            return await finished_in_thread(call, *args)

    async def registry(self) -> _Registry:
        """The registry, read again only when its version moved."""
        async with self._app_lock:
            version = await finished_in_thread(self.app.webhook_registry_version)
            if version == self._registry.version:
                return self._registry

            def load() -> _Registry:
                endpoints = {e.endpoint_id: e for e in self.app.webhook_endpoints()}
                since = {
                    endpoint_id: self._registry.since.get(endpoint_id)
                    or self.app.position_of(WEBHOOK_REGISTRY_ID, endpoint.registered_version)
                    for endpoint_id, endpoint in endpoints.items()
                }
                return _Registry(version, endpoints, since)

            self._registry = await finished_in_thread(load)
            return self._registry

    async def run(self, stop: asyncio.Event) -> None:
        """Fan out and send until ``stop`` is set."""
        waiting = await self._db(self.outbox.queued)
        metrics.QUEUED.set(sum(waiting.values()))
        log.info(
            "webhooks.started",
            stream_sequence=await self._db(self.outbox.stream_seq),
            queued=sum(waiting.values()),
        )
        transport = PinnedTransport(PinnedBackend(self.resolver, self.dialer), verify=self.verify)
        async with httpx.AsyncClient(
            transport=transport,
            timeout=self.policy.timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            self._client = client
            fan_out = asyncio.create_task(self._fan_out(stop))
            keeper = asyncio.create_task(self._keep_senders(stop))
            try:
                await stop.wait()
            finally:
                for task in (fan_out, keeper, *self._senders.values()):
                    task.cancel()
                for task in (fan_out, keeper, *self._senders.values()):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        log.info("webhooks.stopped")

    # ------------------------------------------------------------------ fan-out

    async def _fan_out(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.2, MAX_BACKOFF)
        while not stop.is_set():
            nc: NatsClient | None = None
            try:
                nc = await unless_stopped(
                    nats.connect(
                        nats_servers(self.nats_url),
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=0.5,
                        connect_timeout=2,
                        error_cb=quiet_errors("webhooks.nats_error"),
                        **self.nats_options,
                    ),
                    stop,
                )
                if nc is None:
                    return
                await self._consume(nc.jetstream(), stop)
                backoff.reset()
            except msgspec.DecodeError:
                # Only the relay publishes there: a message we cannot read is a fault to look
                # at, never one to skip (an agency would miss the event for good).
                cursor = await self._db(self.outbox.stream_seq)
                log.error("webhooks.stalled", stream_sequence=cursor)
                await stop.wait()
            except _STORE_TROUBLE as e:
                log.info("webhooks.fan_out_paused", error=type(e).__name__, retry_in=backoff.delay)
                await backoff.wait(stop)
            except Exception as e:  # the outbox (a full disk...): nothing was acked, retry
                log.warning(
                    "webhooks.fan_out_failed", error=type(e).__name__, retry_in=backoff.delay
                )
                await backoff.wait(stop)
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()

    async def _subscribe(self, js: JetStreamContext, after: int) -> Any:
        """The durable consumer, made again to start right after stream sequence ``after``."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(STREAM, DURABLE)
        start = after + 1
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=DURABLE,
                description="cbcm webhook deliverer",
                filter_subject=EVENT_SUBJECTS,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
                opt_start_seq=start if start > 1 else None,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_deliver=-1,
                max_ack_pending=self.batch * 2,
            ),
        )
        return await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)

    async def _consume(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        while not stop.is_set():
            cursor = await self._db(self.outbox.stream_seq)
            sub = await self._subscribe(js, cursor)
            log.info("webhooks.consuming", stream_sequence=cursor)
            try:
                while not stop.is_set():
                    try:
                        msgs = await sub.fetch(self.batch, timeout=FETCH_TIMEOUT)
                    except TimeoutError:
                        continue
                    if not msgs:
                        continue
                    if not await self._queue(msgs):
                        log.warning("webhooks.reseek", stream_sequence=cursor)
                        break
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _queue(self, msgs: list[Msg]) -> bool:
        """Queue one batch and ack it; False at a message that does not follow the cursor
        (what came before it is committed; the consumer is made again)."""
        registry = await self.registry()
        cursor = await self._db(self.outbox.stream_seq)
        rows: list[tuple[UUID, int, str, str, bytes]] = []
        taken: list[Msg] = []
        seq = cursor
        in_order = True
        for m in msgs:
            at = m.metadata.sequence.stream
            if at <= seq:  # a redelivery of what is already queued
                taken.append(m)
                continue
            if at != seq + 1:
                in_order = False
                break
            head = _head.decode(m.data)
            position = head.position or 0
            for endpoint_id in recipients(
                registry.endpoints.values(), registry.since, m.subject, head.type, position
            ):
                rows.append((endpoint_id, position, head.id, head.type, m.data))
            seq = at
            taken.append(m)
        if seq != cursor:
            added = await self._db(self.outbox.queue_batch, rows, seq, self.clock())
            metrics.STREAM_SEQUENCE.set(seq)
            if added:
                metrics.QUEUED.inc(added)
                for endpoint_id in {row[0] for row in rows}:
                    self._wake_sender(endpoint_id)
        for m in taken:
            await m.ack()
        for m in msgs[len(taken) :]:
            with contextlib.suppress(Exception):
                await m.nak()
        return in_order

    # ------------------------------------------------------------------ senders

    def _wake_sender(self, endpoint_id: UUID) -> None:
        wake = self._wake.get(endpoint_id)
        if wake is not None:
            wake.set()

    async def _keep_senders(self, stop: asyncio.Event) -> None:
        """One sender per enabled endpoint; a removed endpoint's queue dropped; an endpoint
        enabled again retried at once."""
        backoff = Backoff(0.2, MAX_BACKOFF)
        while not stop.is_set():
            try:
                await self._keep_senders_once(stop)
                backoff.reset()
            except Exception as e:  # the store or the outbox away: senders keep their state
                log.info("webhooks.registry_unavailable", error=type(e).__name__)
                await backoff.wait(stop)
                continue
            await wait_for_stop(stop, POLL)

    async def _keep_senders_once(self, stop: asyncio.Event) -> None:
        """One look at the registry: senders started and stopped, queues of removed
        endpoints dropped, an endpoint enabled again made due at once."""
        registry = await self.registry()
        enabled = {i for i, e in registry.endpoints.items() if e.enabled}
        for endpoint_id in enabled - self._enabled:
            if endpoint_id in self._known_disabled:
                await self._db(self.outbox.retry_now, endpoint_id, self.clock())
        self._known_disabled = {i for i, e in registry.endpoints.items() if not e.enabled}
        for endpoint_id in set(self._senders) - enabled:
            self._senders.pop(endpoint_id).cancel()
            self._wake.pop(endpoint_id, None)
        for endpoint_id in set(self._queued_endpoints) - set(registry.endpoints):
            dropped = await self._db(self.outbox.drop, endpoint_id)
            metrics.QUEUED.dec(dropped)
            log.info("webhooks.endpoint_removed", endpoint=str(endpoint_id), dropped=dropped)
        self._queued_endpoints = set(registry.endpoints)
        for endpoint_id in enabled:
            task = self._senders.get(endpoint_id)
            if task is None or task.done():
                self._wake[endpoint_id] = asyncio.Event()
                self._senders[endpoint_id] = asyncio.create_task(self._send_all(endpoint_id, stop))
        self._enabled = enabled
        metrics.ENDPOINTS_ENABLED.set(len(enabled))

    async def _send_all(self, endpoint_id: UUID, stop: asyncio.Event) -> None:
        """Send the endpoint's queue in order until it is disabled, removed or ``stop``."""
        wake = self._wake[endpoint_id]
        while not stop.is_set():
            try:
                if not await self._send_next(endpoint_id, wake, stop):
                    return
            except Exception as e:  # the outbox or the store away: wait, never skip a row
                log.warning(
                    "webhooks.sender_paused", endpoint=str(endpoint_id), error=type(e).__name__
                )
                await wait_for_stop(stop, POLL)

    async def _send_next(self, endpoint_id: UUID, wake: asyncio.Event, stop: asyncio.Event) -> bool:
        """Send the head of the endpoint's queue if it is due (or wait a little); False once
        the endpoint is disabled or removed."""
        item = await self._db(self.outbox.head, endpoint_id)
        if item is None:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL)
            return True
        due = (item.next_attempt_at - self.clock()).total_seconds()
        if due > 0:
            await wait_for_stop(stop, min(POLL, due))
            return True
        endpoint = (await self.registry()).endpoints.get(endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return False
        return await self._attempt(endpoint, item)

    async def _attempt(self, endpoint: WebhookEndpoint, item: Queued) -> bool:
        """One delivery attempt; False when the endpoint was disabled for failing."""
        at = self.clock()
        overlapping = (
            endpoint.previous_secret is not None
            and endpoint.rotated_at is not None
            and at - endpoint.rotated_at < self.policy.rotation_overlap
        )
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        if endpoint.secret is None:  # its record is gone: nothing can be signed, nothing sent
            error = "SecretMissing"
        else:
            headers = signed_headers(
                endpoint.secret,
                item.webhook_id,
                at,
                item.body,
                also=endpoint.previous_secret if overlapping else None,
            )
            try:
                # the status is all we need: the answer's body is never read (a receiver
                # could send an endless one). The transport connects only to the address it
                # checked (``pinning``): an internal one is refused before any byte goes out.
                # The whole attempt has one deadline: httpx's timeouts are per read, so a
                # receiver trickling a byte of its headers at a time would hold it for hours.
                async with asyncio.timeout(self.policy.timeout):
                    async with self._client.stream(
                        "POST", endpoint.url, content=item.body, headers=headers
                    ) as answer:
                        status = answer.status_code
            except TimeoutError:
                error = "Timeout"
            except (httpx.HTTPError, httpx.InvalidURL, AddressNotAllowed) as e:
                # InvalidURL is no HTTPError: a URL httpx cannot send to (an endpoint
                # registered before the register checked such hosts) fails like any other
                # attempt, so the endpoint is disabled and its agency told, not retried forever
                error = type(e).__name__
        seconds = time.perf_counter() - started
        ok = status is not None and 200 <= status < 300
        attempt = Attempt(
            endpoint.endpoint_id,
            item.position,
            item.webhook_id,
            item.event_type,
            item.attempts + 1,
            at,
            "delivered" if ok else "failed",
            status,
            error,
            seconds,
        )
        metrics.ATTEMPTS.labels(agency=endpoint.agency, outcome=attempt.outcome).inc()
        metrics.SECONDS.observe(seconds)
        if ok:
            await self._db(self.outbox.delivered, item, attempt)
            metrics.QUEUED.dec()
            log.debug(
                "webhooks.delivered", endpoint=str(endpoint.endpoint_id), position=item.position
            )
            return True
        retry_at = at + self.policy.wait_after(item.attempts + 1)
        since = await self._db(self.outbox.failed, item, attempt, retry_at)
        log.info(
            "webhooks.delivery_failed",
            endpoint=str(endpoint.endpoint_id),
            agency=endpoint.agency,
            position=item.position,
            attempt=attempt.attempt,
            status=status,
            error=error,
            failing_since=since.isoformat(),
        )
        if at - since < self.policy.disable_after:
            return True
        return not await self._disable(endpoint, since, at)

    async def _disable(self, endpoint: WebhookEndpoint, since: datetime, at: datetime) -> bool:
        """Record that the endpoint is disabled for failing; whether it is now disabled."""
        try:
            async with self._app_lock:
                await finished_in_thread(
                    lambda: self.app.disable_failing_webhook(
                        endpoint.endpoint_id,
                        failing_since=since,
                        limit=self.policy.disable_after,
                        at=at,
                    )
                )
        except DomainError as e:  # disabled or removed meanwhile: the registry tells
            log.info("webhooks.disable_refused", endpoint=str(endpoint.endpoint_id), error=e.title)
            return True
        except _STORE_TROUBLE as e:
            log.warning("webhooks.disable_failed", error=type(e).__name__)
            return False
        metrics.DISABLED.labels(agency=endpoint.agency).inc()
        log.warning(
            "webhooks.endpoint_disabled",
            endpoint=str(endpoint.endpoint_id),
            agency=endpoint.agency,
            failing_since=since.isoformat(),
            reason="failing",
        )
        return True


async def open_store(settings: Settings, stop: asyncio.Event) -> ComplaintMechanism | None:
    """The application on the configured store, never creating a table: the deliverer only
    reads the log (and records a disabling), and a fresh store's tables are made by the
    relay and the API, which would otherwise race it for them. Waits while the store is
    unreachable or not made yet (None: asked to stop first)."""
    reader = settings.model_copy(update={"create_tables": False})
    backoff = Backoff(0.2, MAX_BACKOFF)
    while not stop.is_set():
        try:
            return await asyncio.to_thread(complaint_mechanism, reader)
        except _STORE_TROUBLE as e:
            log.info("webhooks.store_not_ready", error=type(e).__name__, retry_in=backoff.delay)
            await backoff.wait(stop)
    return None


async def run_deliverer(
    settings: Settings,
    nats_url: str,
    stop: asyncio.Event,
    *,
    clock: Clock = system_clock,
    nats_options: dict[str, Any] | None = None,
) -> None:
    """``cbcm webhooks deliver``: the deliverer on ``settings``' store and data dir until
    ``stop``."""
    metrics.register()
    app = await open_store(settings, stop)
    if app is None:
        return
    outbox = Outbox(outbox_path(settings.data_dir))
    try:
        await Deliverer(
            app,
            outbox,
            nats_url,
            policy=DeliveryPolicy.from_settings(settings),
            clock=clock,
            nats_options=nats_options
            if nats_options is not None
            else nats_connect_options(settings, NATS_USER),
        ).run(stop)
    finally:
        outbox.close()
        app.close()
