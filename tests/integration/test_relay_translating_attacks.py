"""Attacks on the relay's two-process catch-up (issue #16, ADR 31), from an independent review;
each failed on the first version of it (findings 1-3 of the closing note).

Each test is an adversary's scenario against one of the relay's guarantees: every published
event reaches the stream once, in position order, never lost; a relay stalled at an event it
cannot handle publishes nothing past it and resumes there after a fix.

Nothing sleeps and hopes: where an interleaving matters (a read finishing while a window's
acknowledgements are awaited) the test forces it by holding the acknowledgements until the
read was taken (a condition, bounded below the publish timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nacl.public import PrivateKey
from nats.js import JetStreamContext

from contracts.catalogue import decode_message
from contracts.subjects import SHARES_STREAM, STREAM
from domain.personal_data import personal_data_paths
from domain.vocabulary import ComplainantRole, SharedItem
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.relay.relay import Relay, RelayStalled
from services.relay.sharing import Sharer
from services.relay.translating import OPENED_EVENTS, Translator, TranslatorProcess
from services.relay.translation import TRANSLATIONS
from services.settings import Settings
from tests.integration import test_sharing
from tests.integration.test_relay_messages import a_transfer
from tests.integration.test_sharing import (
    World,
    consent,
    published_positions,
    received,
    stream,
    transfer,
)
from tests.store_templates import StoreTemplate

js = test_sharing.js  # the fixtures: both streams, and the sharing tests' network
world = test_sharing.world


def _position(data: bytes) -> int:
    position = decode_message(data).position
    assert isinstance(position, int)
    return position


class _HeldAcks:
    """A publisher whose acknowledgements are held until ``release()`` says so (or a bound
    below the relay's publish timeout passes): the read under way finishes first."""

    def __init__(self, js: JetStreamContext, release: Callable[[], bool], bound: float) -> None:
        self._js = js
        self._release = release
        self._bound = bound
        self.held = 0

    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Any]:
        inner = await self._js.publish_async(subject, payload, stream=stream, headers=headers)

        async def held() -> Any:
            ack = await inner
            deadline = time.monotonic() + self._bound
            while not self._release() and time.monotonic() < deadline:
                self.held += 1
                await asyncio.sleep(0.01)  # a condition polled, bounded: not a timing guess
            return ack

        return asyncio.ensure_future(held())


def _a_backlog_after_a_share(world: World, more: int) -> int:
    """A case transferred to ngo-b (keyed) sharing the narrative, then ``more`` complaints:
    the position of the transfer (its share is sent)."""
    case_id = received(world, ComplainantRole.WITNESS)
    consent(world, case_id)
    position = transfer(world, case_id, "ngo-b", SharedItem.NARRATIVE)
    for _ in range(more):
        received(world, ComplainantRole.WITNESS)
    return position


@pytest.mark.parametrize("in_process", [False, True], ids=["thread", "process"])
async def test_a_share_that_cannot_be_resealed_stalls_the_relay_there_even_with_a_read_under_way(
    world: World,
    js: JetStreamContext,
    settings: Settings,
    reopen: Callable[[], ComplaintMechanism],
    monkeypatch: pytest.MonkeyPatch,
    in_process: bool,
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    """Attack: resealing a share right before it is sent fails (a bug, a key ring the
    relay's process cannot read), while the next batch's read is under way (the pipeline
    reads ahead; the translating process answers at once from its read-ahead). The cut at
    the share's position must hold: nothing from it on published, the position recorded
    before it, and a relay restarted after the fix publishes it."""
    # given a shared transfer at S, the last event of the relay's first batch, and a backlog
    shared = _a_backlog_after_a_share(world, more=12)
    up_to_shared = world.app.recorder.select_notifications(1, 10**6, stop=shared)
    batch = len(up_to_shared)
    public = published_positions(world.app)
    assert public[-1] > shared

    reseal = Sharer.reseal
    failed = threading.Event()
    translating = threading.Event()

    def failing_reseal(sharer: Sharer, share: Any, event: Any, position: int, source: str) -> Any:
        if position == shared:
            if not in_process:
                translating.wait(3.0)
            failed.set()
            raise RuntimeError("a bug in resealing")
        return reseal(sharer, share, event, position, source)

    monkeypatch.setattr(Sharer, "reseal", failing_reseal)
    # In the worker thread, the next batch's translation is under way when the reseal
    # fails and finishes after it (the interleaving forced); the translating process needs
    # no help: its answer is ready from its read-ahead, and taken whatever the relay cut.
    translate = Translator.translate

    def late_translate(translator: Translator, notifications: Any, **kwargs: Any) -> Any:
        if notifications and notifications[0].id > shared:
            translating.set()
            failed.wait(3.0)
        return translate(translator, notifications, **kwargs)

    monkeypatch.setattr(Translator, "translate", late_translate)
    process = translator_process(settings) if in_process else None
    holder: list[Relay] = []
    publisher = _HeldAcks(js, lambda: bool(holder) and holder[0]._read > shared, bound=3.0)
    relay = Relay(world.app, js, batch_size=batch, window=500, publisher=publisher, process=process)
    holder.append(relay)

    # when the relay publishes its backlog
    try:
        with pytest.raises(RelayStalled) as stalled:
            await relay.publish_pending()
    finally:
        if process is not None:
            process.close()

    # then it stops at the share: nothing from it on in the stream, recorded before it
    assert stalled.value.poison.position == shared
    in_stream = [_position(m.data) for m in await stream(js, STREAM)]
    recorded = await relay.recorded_position()
    assert in_stream == [p for p in public if p < shared], (
        f"published past the stall at {shared}: {[p for p in in_stream if p > shared]}, "
        f"position recorded {recorded} (a restarted relay resumes after it: {shared} lost)"
    )
    assert recorded < shared

    # when the fix is deployed and a relay restarted: everything, the share included
    monkeypatch.undo()
    await Relay(reopen(), js).publish_pending()
    in_stream = [_position(m.data) for m in await stream(js, STREAM)]
    assert in_stream == public
    shares = [m.msg_id for m in await stream(js, SHARES_STREAM)]
    assert any(msg_id.endswith(f":{shared}:share") for msg_id in shares), shares


@pytest.fixture
def demo_app(
    demo_template: StoreTemplate[dict[str, PrivateKey]], tmp_path: Path
) -> Iterator[tuple[ComplaintMechanism, Settings]]:
    """An application on a copy of the demo's store (``test_relay_messages.demo_store``),
    and its settings."""
    with demo_template.copy(tmp_path / "data") as url:
        settings = Settings(data_dir=tmp_path / "data", event_store=url)
        app = complaint_mechanism(settings)
        try:
            yield app, settings
        finally:
            app.close()


async def test_the_translating_process_asked_again_without_a_read_ahead_answers_as_a_fresh_one(
    demo_app: tuple[ComplaintMechanism, Settings],
    demo_template: StoreTemplate[dict[str, PrivateKey]],
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    """Attack: ADR 31 says a translating process asked out of turn starts a fresh router
    ("a router must never see an event twice"); its check is only against what it read
    ahead. Asked the same position twice after a partial batch (no read-ahead held), its
    router sees the batch's events a second time: a case's events before its transfer are
    then routed to the agency it went to."""
    app, settings = demo_app
    by_position, received_at, _ = a_transfer(app, demo_template.made)
    size = 10**6  # more than the log holds: a partial batch, nothing read ahead
    process = translator_process(settings)
    try:
        first = await asyncio.to_thread(process.next_batch, received_at, received_at, size)
        assert first.count < size
        again = await asyncio.to_thread(process.next_batch, received_at, received_at, size)
    finally:
        await asyncio.to_thread(process.close)

    want = [by_position[p][:2] for p in sorted(by_position) if p > received_at]
    assert [(o.subject, o.payload) for o in first.translated.out] == want
    assert [(o.subject, o.payload) for o in again.translated.out] == want


async def _until(condition: Callable[[], Any], bound: float) -> bool:
    """Whether ``condition()`` (awaited if need be) became true within ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        got = condition()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_translating_process_that_stops_answering_neither_hangs_the_relay_nor_its_stop(
    world: World,
    js: JetStreamContext,
    settings: Settings,
    translator_process: Callable[..., TranslatorProcess],
) -> None:
    """Attack: the translating process stops answering without exiting (SIGSTOP here; a hung
    store connection, a frozen cgroup, a deadlock alike). ADR 31 only handles a process that
    exits (its pipe closes). The relay waits on the pipe without a bound: nothing more is
    published, nothing says why (no pause, no stall), and setting ``stop`` does not end
    the relay either (it waits for the read under way), while it keeps the leader lock."""
    received(world, ComplainantRole.WITNESS)
    process = translator_process(settings, answer_within=2.0)  # once started; default 120 s
    relay = Relay(world.app, js, process=process)
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay.run(stop, poll_interval=0.05))
    pid: int | None = None
    try:

        async def all_published() -> bool:
            want = published_positions(world.app)
            got = [_position(m.data) for m in await stream(js, STREAM)]
            return got == want

        assert await _until(all_published, 60.0)
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the process this test started, by its id

        # when more is recorded while it does not answer
        received(world, ComplainantRole.WITNESS)
        published = await _until(all_published, 60.0)
        failures = relay.failures

        # and the relay is asked to stop
        stop.set()
        stopped = await _until(task.done, 15.0)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):  # killed by the relay: the fix
                os.kill(pid, signal.SIGCONT)
        stop.set()
        await asyncio.wait_for(task, 60.0)
        process.close()

    assert published, (
        f"nothing published for 60 s after the translating process stopped answering "
        f"(relay failures counted: {failures}: no pause, no stall reported; "
        f"stopped within 15 s of stop: {stopped})"
    )
    assert stopped, "the relay did not stop within 15 s: it waits on the silent process"


def _struct_types(annotation: Any) -> list[type[Any]]:
    """The msgspec Structs an annotation may hold (through unions and sequences)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _struct_types(arg)]


def test_no_message_of_an_event_left_sealed_can_read_one_of_its_personal_fields() -> None:
    """Guard (ADR 31 §2): the relay leaves sealed the personal fields of every event class
    outside ``OPENED_EVENTS``; that is safe only if nothing of its message reads them: no
    derived flag, no contract field at a personal path (nested ones: a contract Struct of a
    nested value that declares the personal attribute would copy ``UNOPENED``, or, on the
    plain path, the value itself)."""
    readable: list[str] = []
    for event_class, translation in TRANSLATIONS.items():
        paths = personal_data_paths(event_class)
        if not paths:
            continue
        if event_class not in OPENED_EVENTS and translation.derived:
            readable.append(f"{event_class.__qualname__}: derived flags, not opened")
        for path in paths:
            head, *rest = path.split(".")
            hints = typing.get_type_hints(translation.data_type)
            if head not in hints:
                continue
            if not rest:
                readable.append(f"{event_class.__qualname__}.{path}: in the contract")
                continue
            structs = _struct_types(hints[head])
            for depth, part in enumerate(rest):
                found = [s for s in structs if part in s.__struct_fields__]
                if not found:
                    break
                if depth == len(rest) - 1:
                    readable.append(f"{event_class.__qualname__}.{path}: in the contract")
                structs = [t for s in found for t in _struct_types(typing.get_type_hints(s)[part])]
    assert readable == []
