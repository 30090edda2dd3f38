"""JetStream publishes whose acknowledgements come back as futures, on nats-py's public API.

The relay's pipeline (ADR 3, ADR 27) sends a window of messages, then gathers their
acknowledgements. nats-py's own ``JetStreamContext.publish_async`` (2.16) leaves a future
pending for ever when JetStream *refuses* a message: its reply handler builds the error with
``APIError.from_error``, which raises instead of returning, so the error is only logged
("nats: encountered error") and the future never resolves (nats-io/nats.py#985, fix not
released). A refused message - a wrong expected last sequence after another relay wrote, a
stream that moved - then cost the relay its whole publish timeout per window.

``AckPublisher`` does the same thing with ``Client.publish(reply=...)`` and one subscription
on a reply prefix of its own: every acknowledgement resolves its future, a refusal as the
``nats.js.errors.APIError`` JetStream's answer names, "no responders" as
``NoStreamResponseError``. It also skips the library's per-message semaphore and
``wait_for``: the relay bounds what is in flight by its window.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
STATUS_HEADER = "Status"
NO_RESPONDERS = "503"


class Ack(msgspec.Struct):
    """JetStream's acknowledgement of a stored message."""

    stream: str
    seq: int
    duplicate: bool = False


class _Reply(msgspec.Struct):
    stream: str | None = None
    seq: int | None = None
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Reply).decode


class AckPublisher:
    """Publishes to JetStream; each publish gives a future of its ``Ack`` (or its error)."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._futures: dict[str, asyncio.Future[Ack]] = {}
        self._tokens = itertools.count(1)

    async def _ensure_subscribed(self) -> None:
        if self._subscription is None:
            self._prefix = self._nc.new_inbox()
            self._subscription = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def close(self) -> None:
        """Stop listening; what is still pending is cancelled."""
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()
        for future in list(self._futures.values()):
            future.cancel()
        self._futures.clear()

    @property
    def pending(self) -> int:
        """Publishes whose acknowledgement has not come yet."""
        return len(self._futures)

    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Ack]:
        """Send one message; its future resolves with JetStream's answer. Raises what
        ``Client.publish`` raises (a payload over the server's limit, a closed connection)."""
        if self._subscription is None:
            await self._ensure_subscribed()
        token = str(next(self._tokens))
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        sent = dict(headers or {})
        if stream is not None:
            sent[EXPECTED_STREAM_HEADER] = stream
        try:
            await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=sent)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        future = self._futures.get(token)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = _decode(msg.data)
        except msgspec.DecodeError as e:
            future.set_exception(nats.js.errors.APIError(description=f"unreadable ack: {e}"))
            return
        if reply.error is not None:
            future.set_exception(_refusal(reply.error))
            return
        if reply.stream is None or reply.seq is None:
            future.set_exception(nats.js.errors.APIError(description="ack without a sequence"))
            return
        future.set_result(Ack(reply.stream, reply.seq, reply.duplicate))


def _refusal(error: dict[str, Any]) -> BaseException:
    """The ``nats.js.errors`` error JetStream's refusal names (``from_error`` raises it)."""
    try:
        nats.js.errors.APIError.from_error(error)
    except nats.js.errors.Error as refused:
        return refused
    except Exception:  # noqa: S110 (an answer of another shape is still a refusal)
        pass
    return nats.js.errors.APIError(description="refused")
