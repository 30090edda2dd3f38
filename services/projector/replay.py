"""A rebuild's reading of the stream: a pull consumer of its own, read batch by batch by raw
pull requests (issue #16, ADR 28 section 2).

The consumer is ``cbcm-<read model>-rebuild``: named (the projectors' NATS users may create,
read and delete that one name only, filtered on the event subjects), pull, no acks, deleted at
the end, and deleted by the server if its reader is gone for ``INACTIVE_THRESHOLD`` seconds.
A consumer of that name found at the start is an earlier rebuild's that died (or one running
now, which then stops loudly: its reading fails, or its positions show a gap): it is deleted
and made again from the first message.

Each ``fetch(n)`` sends one pull request for ``n`` messages and waits until they are all in,
or until the server ends the request (nothing more before ``expires``). The server sends only
what was asked, and the next request is sent only when the caller asks for the next batch, so
however slow the applying, at most one batch is in flight, and the subscription's limits
(``n`` messages, ``n`` times the largest message the server takes) can never be passed: no
message is dropped by the client (the ordered push consumer's did, at 3 million messages on
a busy host: ADR 28 section 4).

Not nats-py's ``PullSubscription.fetch``: it takes each message with ``next_msg`` (a task and a
``uuid4`` a message: 40 µs of CPU a message here, as much as the ordered consumer); the
messages of a request are gathered by the subscription's callback instead (about 12 µs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import EVENT_SUBJECTS, STREAM
from services.nats.config import rebuild_consumer

log = structlog.get_logger(__name__)

API_PREFIX = "$JS.API"
INACTIVE_THRESHOLD = 600.0
"""Seconds after which the server deletes a rebuild's consumer nobody reads (its process
died): longer than any batch takes to apply, since no pull request is waiting meanwhile."""
EXPIRES = 10.0
"""Seconds a pull request waits for its messages; a request that gets none in that time ends
the rebuild (as the ordered consumer's ``next_msg(timeout=10)`` did)."""
PENDING_SLACK = 8
"""Status messages (ends of requests) the subscription may hold besides the batch: its
limit is ``batch + PENDING_SLACK`` messages."""


class ReadFailed(RuntimeError):
    """The stream could not be read on (the consumer gone, nothing sent in time, the server's
    refusal): the rebuild stops, loudly."""


def rebuild_consumer_config(name: str) -> ConsumerConfig:
    return ConsumerConfig(
        name=name,
        description="cbcm read model rebuild",
        filter_subject=EVENT_SUBJECTS,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_THRESHOLD,
        max_waiting=1,
    )


UNANSWERED_FOR = 30.0
"""Seconds a pull request nobody answers (503) is asked again before the rebuild fails."""


class _Unanswered(ReadFailed):
    """A pull request nobody answered (503): asked again for a while."""


class PullReader:
    """Batches of a pull consumer, one request at a time (module docstring)."""

    def __init__(self, nc: NatsClient, name: str, *, batch: int, stream: str = STREAM) -> None:
        self._nc = nc
        self.name = name
        self.stream = stream
        self.batch = batch
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{name}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._wanted = 0
        self._ended = asyncio.Event()
        self._status: tuple[str, str] | None = None

    async def open(self) -> None:
        """Make the consumer (deleting an earlier rebuild's) and subscribe to its deliveries."""
        js = self._nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self.stream, self.name)
            log.warning("projector.rebuild_consumer_replaced", consumer=self.name)
        await js.add_consumer(self.stream, rebuild_consumer_config(self.name))
        largest = max(self._nc.max_payload, 1)
        self._sub = await self._nc.subscribe(
            self._inbox,
            cb=self._take,
            pending_msgs_limit=self.batch + PENDING_SLACK,
            pending_bytes_limit=(self.batch + PENDING_SLACK) * largest,
        )

    async def close(self) -> None:
        """Unsubscribe and delete the consumer (best effort: the server deletes it anyway
        after ``INACTIVE_THRESHOLD``)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        try:
            await self._nc.jetstream().delete_consumer(self.stream, self.name)
        except Exception as exc:  # the connection gone, or the consumer already
            error = type(exc).__name__
            log.debug("projector.rebuild_consumer_left", consumer=self.name, error=error)

    async def _take(self, msg: Msg) -> None:
        """The subscription's callback: a stream message (its reply is its ack subject, which
        carries its metadata), or a status ending the request."""
        if msg.reply:
            self._got.append(msg)
            if len(self._got) >= self._wanted:
                self._ended.set()
            return
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":  # heartbeat or flow control: not asked for, nothing to do
            return
        self._status = (status, headers.get("Description", ""))
        self._ended.set()

    async def fetch(self, n: int) -> list[Msg]:
        """Up to ``n`` messages, in stream order: ``n`` unless the server ended the request
        first (it had fewer before ``EXPIRES``). ``ReadFailed`` if it sent none at all.

        A request nobody answered (503) is asked again for up to ``UNANSWERED_FOR`` seconds:
        on a cluster, a consumer just made has no leader for a moment (an election, a node
        just restarted), and its first request found nobody (`make fault`)."""
        if not 0 < n <= self.batch:
            raise ValueError(f"fetch {n}: between 1 and {self.batch}")
        loop = asyncio.get_running_loop()
        until = loop.time() + UNANSWERED_FOR
        wait = 0.05
        while True:
            try:
                return await self._fetch(n)
            except _Unanswered as e:
                if loop.time() + wait > until:
                    raise ReadFailed(f"{e} (for {UNANSWERED_FOR:.0f} s)") from None
                log.info("projector.rebuild_request_unanswered", consumer=self.name)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 1.0)

    async def _fetch(self, n: int) -> list[Msg]:
        self._got, self._wanted, self._status = [], n, None
        self._ended.clear()
        request = {"batch": n, "expires": int(EXPIRES * 1e9)}
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        try:
            async with asyncio.timeout(EXPIRES + 5.0):
                await self._ended.wait()
        except TimeoutError:
            raise ReadFailed(
                f"consumer {self.name}: no answer to a pull request in {EXPIRES + 5.0:.0f} s"
            ) from None
        got, status = self._got, self._status
        self._got = []
        if status is not None and status[0] == "503" and not got:
            # nobody answered: the consumer has no leader yet, or is gone (inactive too long)
            raise _Unanswered(f"consumer {self.name}: 503 {status[1]}".strip())
        if status is not None and status[0] not in ("404", "408"):
            # 409: the consumer deleted (another rebuild of the same read model), the server's
            # leader changed...
            raise ReadFailed(f"consumer {self.name}: {status[0]} {status[1]}".strip())
        if not got:
            raise ReadFailed(f"consumer {self.name}: no message in {EXPIRES:.0f} s")
        return got


__all__ = [
    "INACTIVE_THRESHOLD",
    "PENDING_SLACK",
    "PullReader",
    "ReadFailed",
    "rebuild_consumer",
    "rebuild_consumer_config",
]
