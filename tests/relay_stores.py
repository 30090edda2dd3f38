"""What the relay's tests share: the translating processes started from a fork server, and
the contents of a stream read in batches.

A store written once and copied for each test (``tests/store_templates.py``; the demo's,
fixture ``demo_template`` of ``tests/integration/conftest.py``, once per test process and
store): the tests of ``test_relay_messages.py`` (and one of
``test_relay_translating_attacks.py``) only read it, or add to it in a copy of their own.

Translating processes (``translator_processes``): ``TranslatorProcess`` spawns a fresh
interpreter, which imports the application (about 0.9 s of CPU) before it opens the store.
The tests start about twenty; here they fork from a fork server that imported those modules
once per test process. The fork server is itself a fresh interpreter (never a fork of the
test process and its threads), so each translating process starts as a spawned one would,
with nothing of the test process's state (a monkeypatch stays in the test process, as with
spawn); ``cbcm relay`` spawns its own (``test_relay_leader.py`` runs it so).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import forkserver
from typing import TypeVar

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.relay.translating import TranslatorProcess

T = TypeVar("T")

_PRELOAD = [
    # what a translating process imports (``translating._serve``): the application and both
    # stores' recorders, the logging
    "services.relay.translating",
    "services.bootstrap",
    "services.runtime.logging",
    "services.event_store.store_id",
    "eventsourcing.sqlite",
    "eventsourcing.postgres",
]


@contextmanager
def translator_processes() -> Iterator[Callable[..., TranslatorProcess]]:
    """Makes ``TranslatorProcess``es whose processes fork from a fork server (see the module);
    the fork server is stopped and reaped at the end, so that its CPU and its processes'
    count as this process's children's, as spawned processes' do."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    try:
        yield functools.partial(TranslatorProcess, context=context)
    finally:
        forkserver._forkserver._stop()  # the one way to reap it (CPython tests use it)


async def stream_contents(js: JetStreamContext, stream: str) -> list[StoredMessage]:
    """What ``stream`` holds from its first sequence to its last (as ``stream_info`` says when
    asked), in order: each message's sequence, subject, data and headers, as ``get_msg``
    returns them one request each (2,000 requests cost a test 0.45 s of CPU, the server about
    as much); read here in batches by a consumer of its own, deleted after. A message no
    longer there (a share purged with its case's erasure) is not in it."""
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not info.state.messages:
        return []
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    name = (await subscription.consumer_info()).name
    out: list[StoredMessage] = []
    try:
        while True:
            for msg in await subscription.fetch(500, timeout=10):
                seq = msg.metadata.sequence.stream
                if seq > last:
                    return out
                out.append(StoredMessage(seq, msg.subject, msg.data, dict(msg.headers or {})))
                if seq == last or msg.metadata.num_pending == 0:
                    return out
    finally:
        await subscription.unsubscribe()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, name)


@dataclass(frozen=True)
class StoredMessage:
    """One message of a stream, as ``stream_contents`` reads it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
