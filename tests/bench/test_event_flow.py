"""Event flow (issue #3): end-to-end lag from a store commit to the inbox row at a steady
command rate, and the inbox rebuild rate next to a raw nats-py baseline measured in the same run.

The pipeline runs as in production: an embedded nats-server, and ``cbcm relay`` and
``cbcm project inbox`` as subprocesses (``CBCM_DATA_DIR``, ``CBCM_EVENT_STORE``,
``CBCM_NATS_URL``). Subprocesses rather than asyncio tasks in the test process: the load
generator, the position poller and the stream watcher all hold this process's GIL, and the
relay's and projector's worker threads would queue behind them, so in-process the lag would
measure the test's own scheduling as much as the pipeline.

Lag: complaints are received through the application at a paced rate (``perf_counter``
deadlines; each rate for ``PHASE_SECONDS``, after an unrecorded warm-up). For each command
the commit time is taken when it returns, with its ``Written.position``. A thread polls the
inbox read model's ``projection_position`` every ``POLL_INTERVAL``; the batch holding the
position also holds the inbox row (one transaction), so the first poll that sees the
position is when the row became visible. A plain NATS subscription on ``cbcm.v1.evt.>`` in
another thread notes when each position is published, which splits the lag into the relay
leg (commit -> on NATS) and the projector leg (on NATS -> read model committed). Every case
is checked to have its inbox row at the end.

Relay: a demo load (``walk_cases``) of at least ``REBUILD_EVENTS`` events is written with the
relay stopped; the relay is then started on that backlog, and timed from the first message it
adds to the stream to the message of the last position (the stream polled every 2 ms), so its
start-up is left out. Its baseline is the raw publish below (issue #7).

Rebuild: once the inbox has caught up, relay and projector are stopped and
``rebuild(InboxProjection(), fresh_path, nats_url)`` is timed. The result must equal the
live read model. Next to it, in the same run: the same stream consumed with nats-py alone
(ordered consumer, no decode; then with ``decode``), which splits the rebuild's time into
consume / decode / apply; and the raw baseline: the same number of messages, with the
stream's average payload size and the relay's headers, published to a fresh file-storage
JetStream stream with nats-py (pipelined like the relay), then consumed with an ordered
consumer (the rebuild's mechanism until ADR 28 section 2; it now reads a pull consumer of its
own by raw requests, cheaper than both, measured by the country benchmark) and with a pull
subscription (fetch 512, no acks). The
consumes and the rebuild run ``ROUNDS`` times, alternating, and the best of each is printed,
so that drift on a shared machine falls on both alike.

Figures are printed, not asserted; only sanity is checked. ``CBCM_BENCH_PHASE_SECONDS`` and
``CBCM_BENCH_REBUILD_EVENTS`` override the phase length and the demo load (``cbcm bench
--quick`` halves the one and takes 4,000 events for the other);
``CBCM_BENCH_PROFILE=1`` also prints a cProfile of applying the stream's messages to a fresh
inbox (``apply_batch`` in batches of 512, in this thread: the rebuild runs it in a worker
thread, out of the profiler's sight).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import math
import os
import pstats
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from contracts.subjects import EVENT_SUBJECTS, PREVIOUS_POSITION_HEADER, STREAM
from domain.actors import Actor, Role
from domain.vocabulary import Channel, ComplainantRole
from projections.base import get_position, open_read_model
from projections.inbox import InboxProjection, case_row
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.demo.walk import AGENCIES, build_demo_network, demo_start, walk_cases
from services.event_store.config import describe, persistence_env
from services.nats.server import EmbeddedNats
from services.projector.runner import (
    apply_batch,
    decode,
    open_projection,
    previous_positions,
    read_model_path,
    read_position,
    rebuild,
)
from services.relay.relay import (
    EXPECTED_LAST_SEQUENCE_HEADER,
    MSG_ID_HEADER,
)
from services.settings import Settings
from tests.bench.results import Figure, Target, quick, record

pytestmark = pytest.mark.bench

CBCM = str(Path(sys.executable).parent / "cbcm")

RATES = (50, 100)
"""Commands per second of the lag phases."""
PHASE_SECONDS = float(os.environ.get("CBCM_BENCH_PHASE_SECONDS", "5" if quick() else "10"))
WARMUP_SECONDS = 2.0
WARMUP_RATE = 20
POLL_INTERVAL = 0.001
"""How often the read model's position is polled (seconds)."""
REBUILD_EVENTS = int(os.environ.get("CBCM_BENCH_REBUILD_EVENTS", "4000" if quick() else "10000"))
"""At least this many events are added by the demo load before the rebuild."""
DEMO_CHUNK = 200
"""Cases per ``walk_cases`` call of the demo load."""
RAW_STREAM = "CBCM_BENCH_RAW"
RAW_SUBJECTS = "rawbench.>"
ROUNDS = 2
"""Each consume and the rebuild run this many times, alternating; the best is reported."""
RAW_WINDOW = 500
"""Publishes in flight in the raw baseline (the relay's default window)."""
REBUILD_BATCH = 512
"""``rebuild``'s default batch."""
PULL_BATCH = REBUILD_BATCH
"""Fetch size of the raw pull consumer."""
CATCH_UP_TIMEOUT = 120.0


# ------------------------------------------------------------------------ small helpers


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Position(msgspec.Struct):
    position: int | None = None


# ------------------------------------------------------------------------ the pipeline


COMMANDS = {"relay": ["relay"], "project-inbox": ["project", "inbox"]}


@dataclass
class Pipeline:
    """``cbcm relay`` and ``cbcm project inbox`` as subprocesses."""

    data_dir: Path
    store_url: str
    nats_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def inbox_path(self) -> Path:
        return read_model_path(self.data_dir, "inbox")

    def start(self) -> None:
        for name in COMMANDS:
            self.start_one(name)

    def start_one(self, name: str) -> None:
        env = {
            **os.environ,
            "CBCM_DATA_DIR": str(self.data_dir),
            "CBCM_EVENT_STORE": self.store_url,
            "CBCM_NATS_URL": self.nats_url,
            "CBCM_LOG_FORMAT": "json",
        }
        with (self.data_dir / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [CBCM, *COMMANDS[name]], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop_one(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def inbox_position(self) -> int:
        """The inbox read model's position, once both processes are checked alive."""
        self.check_alive()
        return read_position(self.inbox_path)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.data_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"cbcm {name} exited with {process.returncode}:\n{log}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class PositionPoller:
    """Polls the inbox read model's position; notes when each expected position is reached.

    The writer appends (position, commit time) in commit order (one writer: positions
    increase), the poller thread appends the time it first saw each of them applied."""

    def __init__(self, path: Path, interval: float = POLL_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.expected: list[tuple[int, float]] = []
        self.reached: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-poller", daemon=True)

    def expect(self, position: int, committed: float) -> None:
        self.expected.append((position, committed))

    @property
    def pending(self) -> int:
        return len(self.expected) - len(self.reached)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        db = open_read_model(self.path, readonly=True)
        try:
            while not self._stop.is_set():
                position = get_position(db)
                now = time.perf_counter()
                expected = self.expected
                i = len(self.reached)
                while i < len(expected) and expected[i][0] <= position:
                    self.reached.append(now)
                    i += 1
                time.sleep(self.interval)
        finally:
            db.close()


class StreamWatcher:
    """A plain NATS subscription on the event subjects: when each position was published."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[int, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="bench-watcher", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "stream watcher did not subscribe"

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)

        async def seen(msg: Msg) -> None:
            now = time.perf_counter()
            position = msgspec.json.decode(msg.data, type=_Position).position
            if position is not None:
                self.seen.setdefault(position, now)

        await nc.subscribe(EVENT_SUBJECTS, cb=seen, pending_msgs_limit=1_000_000)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()


# ------------------------------------------------------------------------ lag


@dataclass(frozen=True)
class LagPhase:
    rate: int
    commands: int
    seconds: float
    """From the first scheduled command to the last commit."""
    command_ms: list[float]
    lag_ms: list[float]
    relay_ms: list[float]
    projector_ms: list[float]


def drive(
    app: ComplaintMechanism,
    rate: int,
    seconds: float,
    poller: PositionPoller,
    rng: random.Random,
    ids: list[Any],
) -> tuple[int, int, float, list[float]]:
    """Receive complaints at ``rate`` per second for ``seconds``: (first index into the
    poller's lists, commands, seconds taken, command durations in ms)."""
    count = round(rate * seconds)
    first = len(poller.expected)
    durations: list[float] = []
    received = datetime.now(UTC) - timedelta(hours=2)
    start = time.perf_counter() + 0.005
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        agency = AGENCIES[i % len(AGENCIES)]
        began = time.perf_counter()
        written = app.receive_complaint(
            actor=Actor(f"intake-{agency.code}-1", agency.code, Role.INTAKE_OPERATOR),
            at=received + timedelta(minutes=30),
            received_at=received,
            channel=rng.choice((Channel.HOTLINE, Channel.IN_PERSON, Channel.SMS_MESSAGING)),
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=False,
            narrative=f"[BENCH] complaint {i} at {rate}/s: "
            + " ".join(
                rng.choice(("water", "ration", "guard", "queue", "card")) for _ in range(20)
            ),
        )
        committed = time.perf_counter()
        poller.expect(written.position, committed)
        durations.append((committed - began) * 1000)
        ids.append(written.id)
    return first, count, time.perf_counter() - start, durations


def lag_phase(
    app: ComplaintMechanism,
    rate: int,
    seconds: float,
    poller: PositionPoller,
    watcher: StreamWatcher,
    pipeline: Pipeline,
    ids: list[Any],
) -> LagPhase:
    first, count, took, durations = drive(app, rate, seconds, poller, random.Random(rate), ids)
    wait_until(lambda: poller.pending == 0, 30, f"the inbox to reach the {rate}/s commands")
    pipeline.check_alive()
    lag, relay_leg, projector_leg = [], [], []
    for (position, committed), reached in zip(
        poller.expected[first:], poller.reached[first:], strict=True
    ):
        lag.append((reached - committed) * 1000)
        published = watcher.seen.get(position)
        if published is not None:
            relay_leg.append((published - committed) * 1000)
            projector_leg.append((reached - published) * 1000)
    return LagPhase(rate, count, took, durations, lag, relay_leg, projector_leg)


# ------------------------------------------------------------------------ rebuild


@dataclass(frozen=True)
class Timed:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else math.nan


@dataclass(frozen=True)
class Batch:
    """Decoded messages of one rebuild batch and their previous positions."""

    messages: list[tuple[int, Any]]
    previous: dict[int, int]


@dataclass(frozen=True)
class StreamShape:
    messages: int
    payload: float
    """Average payload bytes."""
    subject: float
    """Average subject length."""


async def consume_ordered(
    url: str,
    stream: str,
    subjects: str,
    *,
    decoding: bool = False,
    keep: list[Batch] | None = None,
) -> Timed:
    """Every message of ``stream`` through an ordered consumer, as ``rebuild`` read them
    before ADR 28 section 2.

    ``decoding``: also decode them as ``rebuild`` does (each message, then the batch's
    previous-position headers), and append the batches to ``keep`` when given."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        began = time.perf_counter()
        sub = await js.subscribe(
            subjects, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        seq = count = 0
        while seq < last:
            pending: list[tuple[int, Any]] = []
            fetched: list[Msg] = []
            while seq < last and len(fetched) < REBUILD_BATCH:
                msg = await sub.next_msg(timeout=10)
                seq = msg.metadata.sequence.stream
                if decoding:
                    pending.append(decode(msg.data, seq))
                fetched.append(msg)
            if decoding:
                previous = previous_positions(fetched)
                if keep is not None:
                    keep.append(Batch(pending, previous))
            count += len(fetched)
        seconds = time.perf_counter() - began
        await sub.unsubscribe()
        return Timed(count, seconds)
    finally:
        await nc.close()


async def stream_shape(url: str) -> StreamShape:
    """Average payload size and subject length of ``CBCM_EVENTS`` (untimed)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        sub = await js.subscribe(
            EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        seq = count = payload = subject = 0
        while seq < last:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            count += 1
            payload += len(msg.data)
            subject += len(msg.subject)
        await sub.unsubscribe()
        return StreamShape(count, payload / count, subject / count)
    finally:
        await nc.close()


async def raw_publish(url: str, shape: StreamShape) -> Timed:
    """``shape.messages`` messages of the stream's average payload size and subject length,
    with the relay's headers, published with nats-py to a fresh file-storage stream, in
    windows of ``RAW_WINDOW`` in flight (as the relay publishes)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=RAW_STREAM,
                subjects=[RAW_SUBJECTS],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=1,
                duplicate_window=120.0,
            )
        )
        prefix = "rawbench.v1.evt.agency.case."
        subject = prefix + "e" * max(round(shape.subject) - len(prefix), 1)
        payload = b"p" * round(shape.payload)
        count = shape.messages
        began = time.perf_counter()
        for first in range(0, count, RAW_WINDOW):
            futures = [
                await js.publish_async(
                    subject,
                    payload,
                    stream=RAW_STREAM,
                    headers={
                        MSG_ID_HEADER: f"0123456789abcdef:{i + 1}",
                        PREVIOUS_POSITION_HEADER: str(i),
                        EXPECTED_LAST_SEQUENCE_HEADER: str(i),
                    },
                )
                for i in range(first, min(first + RAW_WINDOW, count))
            ]
            await asyncio.gather(*futures)
        seconds = time.perf_counter() - began
        assert (await js.stream_info(RAW_STREAM)).state.messages == count
        return Timed(count, seconds)
    finally:
        await nc.close()


async def raw_pull(url: str, count: int) -> Timed:
    """The raw stream through an ephemeral pull consumer (fetch ``PULL_BATCH``, no acks)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        began = time.perf_counter()
        sub = await js.pull_subscribe(
            RAW_SUBJECTS,
            stream=RAW_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        got = 0
        while got < count:
            got += len(await sub.fetch(PULL_BATCH, timeout=5))
        seconds = time.perf_counter() - began
        await sub.unsubscribe()
        return Timed(got, seconds)
    finally:
        await nc.close()


@dataclass(frozen=True)
class RawBaseline:
    publish: Timed
    ordered: Timed
    pull: Timed


def best(timings: list[Timed]) -> Timed:
    return min(timings, key=lambda t: t.seconds)


def profile_apply(batches: list[Batch], path: Path) -> None:
    projection = InboxProjection()
    db = open_projection(projection, path)
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        for batch in batches:
            apply_batch(projection, db, batch.messages, batch.previous)
        profiler.disable()
    finally:
        db.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())


def dump(path: Path) -> list[str]:
    """Schema and every row, as SQL, in a canonical order: rows are compared by content,
    not by the physical (rowid) order that batch boundaries decide."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return sorted(db.iterdump())
    finally:
        db.close()


async def relay_drain(pipeline: Pipeline, url: str, last: int) -> tuple[Timed, float]:
    """Start the relay on a backlog and time it, from the first message it adds to the
    stream to the one of store position ``last`` (polling the stream every 2 ms): that is
    the relay's publish rate, without its start-up. Also: when it was started."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        before = (await js.stream_info(STREAM)).state.last_seq
        started = time.perf_counter()
        pipeline.start_one("relay")
        first_seq, first_at = 0, 0.0
        deadline = started + CATCH_UP_TIMEOUT
        while time.perf_counter() < deadline:
            seq = (await js.stream_info(STREAM)).state.last_seq
            now = time.perf_counter()
            if seq > before:
                if not first_at:
                    first_seq, first_at = seq, now
                top = await js.get_msg(STREAM, seq)
                position = msgspec.json.decode(top.data or b"{}", type=_Position).position
                if position is not None and position >= last:
                    return Timed(seq - first_seq, now - first_at), started
            pipeline.check_alive()
            await asyncio.sleep(0.002)
        raise AssertionError(f"the relay did not publish position {last} in time")
    finally:
        await nc.close()


def record_figures(
    kind: str, phases: list[LagPhase], relayed: Timed, rebuilt: Timed, raw: RawBaseline
) -> None:
    bench = "event flow (#3)"
    for p in phases:
        for q in (50, 99):
            target = Target("value", "<", 250.0) if q == 99 and p.rate == 100 else None
            record(
                Figure(
                    bench,
                    f"lag p{q}, commit -> inbox, {p.rate} commands/s",
                    kind,
                    pct(p.lag_ms, q),
                    "ms",
                    target=target,
                    better="lower",
                )
            )
    record(
        Figure(
            bench,
            "relay publish rate",
            kind,
            relayed.rate,
            "msgs/s",
            baseline=raw.publish.rate,
            baseline_name="nats-py publish alone (same count and sizes)",
        )
    )
    for name, baseline in (("ordered consumer", raw.ordered), ("pull, fetch 512", raw.pull)):
        record(
            Figure(
                bench,
                "inbox rebuild rate",
                kind,
                rebuilt.rate,
                "msgs/s",
                baseline=baseline.rate,
                baseline_name=f"nats-py consume alone ({name})",
                target=Target("ratio", ">=", 0.5),
            )
        )


# ------------------------------------------------------------------------ reporting


def report_lag(kind: str, where: str, phases: list[LagPhase], relay_mode: str) -> None:
    line = "-" * 100
    print()
    print(line)
    print(f"event flow on {kind} ({where})")
    print(
        "relay and inbox projector as subprocesses; "
        f"relay follows the store by {relay_mode}; inbox position polled every "
        f"{POLL_INTERVAL * 1000:.0f} ms"
    )
    print("end-to-end lag, store commit -> inbox row (ms); relay leg: commit -> on NATS; ")
    print("projector leg: on NATS -> read model committed and seen")
    print(
        f"{'rate/s':>7}{'cmds':>6}{'done/s':>8}{'cmd p50':>9}"
        f"{'lag p50':>9}{'p99':>8}{'max':>8}"
        f"{'relay p50':>11}{'p99':>8}{'proj p50':>10}{'p99':>8}{'max':>8}"
    )
    for p in phases:
        print(
            f"{p.rate:>7}{p.commands:>6}{p.commands / p.seconds:>8.1f}{pct(p.command_ms, 50):>9.1f}"
            f"{pct(p.lag_ms, 50):>9.1f}{pct(p.lag_ms, 99):>8.1f}{max(p.lag_ms):>8.1f}"
            f"{pct(p.relay_ms, 50):>11.1f}{pct(p.relay_ms, 99):>8.1f}"
            f"{pct(p.projector_ms, 50):>10.1f}{pct(p.projector_ms, 99):>8.1f}"
            f"{max(p.projector_ms, default=math.nan):>8.1f}"
        )


def report_rebuild(
    demo_events: int,
    demo_seconds: float,
    caught_up: float,
    relayed: Timed,
    shape: StreamShape,
    rebuilt: Timed,
    plain: Timed,
    decoded: Timed,
    raw: RawBaseline,
) -> None:
    print(
        f"demo load: {demo_events} events written in {demo_seconds:.1f} s "
        f"({demo_events / demo_seconds:.0f}/s) with the relay stopped; started, the relay "
        f"published them at {relayed.rate:.0f}/s (first publish to last), the inbox caught up "
        f"{caught_up:.2f} s after the relay started"
    )
    print(
        f"rebuild of the inbox from {STREAM}: {shape.messages} messages, avg payload "
        f"{shape.payload:.0f} B, avg subject {shape.subject:.0f} chars; raw baseline: the same "
        "count and sizes, the relay's headers; consumes and rebuild: best of "
        f"{ROUNDS} alternating rounds"
    )
    print(f"{'':50}{'messages':>10}{'seconds':>9}{'msgs/s':>10}")
    rows = (
        ("raw: publish (nats-py, async, window 500)", raw.publish),
        ("cbcm relay: publish the backlog", relayed),
        ("raw: consume, ordered consumer", raw.ordered),
        ("raw: consume, pull fetch 512, no ack", raw.pull),
        (
            "raw: publish + ordered consume",
            Timed(raw.publish.messages, raw.publish.seconds + raw.ordered.seconds),
        ),
        (f"{STREAM}: ordered consume, no decode", plain),
        (f"{STREAM}: ordered consume + decode (as rebuild)", decoded),
        ("rebuild(InboxProjection()) (+ apply, commit)", rebuilt),
    )
    for label, t in rows:
        print(f"{label:50}{t.messages:>10}{t.seconds:>9.2f}{t.rate:>10.0f}")
    print(f"{'ratio relay / raw publish':50}{'':>19}{relayed.rate / raw.publish.rate:>10.2f}")
    for label, baseline in (("ordered", raw.ordered), ("pull", raw.pull)):
        ratio = rebuilt.rate / baseline.rate
        print(f"{f'ratio rebuild / raw {label} consume':50}{'':>19}{ratio:>10.2f}")
    per_msg = 1e6 / rebuilt.rate
    consume_us = 1e6 / plain.rate
    decode_us = 1e6 / decoded.rate - consume_us
    print(
        f"rebuild per message: {per_msg:.0f} us = consume {consume_us:.0f} + decode "
        f"{decode_us:.0f} + apply/commit {per_msg - consume_us - decode_us:.0f}"
    )
    print("-" * 100)


# ------------------------------------------------------------------------ the benchmark


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


def test_event_flow(store_url: str, tmp_path: Path, nats_server: EmbeddedNats) -> None:
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    settings = Settings(data_dir=tmp_path / "data", event_store=store_url)
    settings.data_dir.mkdir(parents=True)
    where = describe(persistence_env(settings))
    app = complaint_mechanism(settings)
    pipeline = Pipeline(settings.data_dir, store_url, nats_server.url)
    poller: PositionPoller | None = None
    watcher: StreamWatcher | None = None
    switch_interval = sys.getswitchinterval()
    try:
        start = demo_start()
        build_demo_network(app, start)
        network_position = app.recorder.max_notification_id() or 0
        pipeline.start()
        wait_until(
            lambda: pipeline.inbox_position() >= network_position,
            60,
            "relay and projector to carry the network to the inbox",
        )

        # ---- lag at steady rates
        ids: list[Any] = []
        poller = PositionPoller(pipeline.inbox_path)
        watcher = StreamWatcher(nats_server.url)
        watcher.start()
        poller.start()
        # The poller must not wait a whole 5 ms switch interval behind the writer.
        sys.setswitchinterval(0.0005)
        lag_phase(app, WARMUP_RATE, WARMUP_SECONDS, poller, watcher, pipeline, ids)
        phases = [
            lag_phase(app, rate, PHASE_SECONDS, poller, watcher, pipeline, ids) for rate in RATES
        ]
        sys.setswitchinterval(switch_interval)
        poller.stop()
        watcher.stop()
        db = open_read_model(pipeline.inbox_path, readonly=True)
        try:
            assert all(case_row(db, case_id) is not None for case_id in ids)
        finally:
            db.close()
        relay_mode = "polling (25 ms)" if kind == "sqlite" else "LISTEN/NOTIFY"
        report_lag(kind, where, phases, relay_mode)

        # ---- demo load with the relay stopped, the relay draining it, then the rebuild
        pipeline.stop_one("relay")
        before = app.recorder.max_notification_id() or 0
        rng = random.Random(7)
        began = time.perf_counter()
        walked = 0
        while (app.recorder.max_notification_id() or 0) - before < REBUILD_EVENTS:
            walk_cases(app, DEMO_CHUNK, rng, start + timedelta(hours=1, days=walked))
            walked += 1
        last = app.recorder.max_notification_id() or 0
        demo_seconds = time.perf_counter() - began
        relayed, relay_started = asyncio.run(relay_drain(pipeline, nats_server.url, last))
        wait_until(
            lambda: pipeline.inbox_position() >= last,
            CATCH_UP_TIMEOUT,
            "the inbox to catch up with the demo load",
            interval=0.005,
        )
        caught_up = time.perf_counter() - relay_started
        pipeline.stop()

        shape = asyncio.run(stream_shape(nats_server.url))
        assert shape.messages <= last
        url = nats_server.url
        published = asyncio.run(raw_publish(url, shape))
        # Rounds alternate between the raw consumers and the rebuild, so drift on a shared
        # machine falls on both alike; the best of each is reported.
        timings: dict[str, list[Timed]] = {}
        batches: list[Batch] = []
        for r in range(ROUNDS):
            runs: tuple[tuple[str, Coroutine[Any, Any, Timed]], ...] = (
                ("raw ordered", consume_ordered(url, RAW_STREAM, RAW_SUBJECTS)),
                ("raw pull", raw_pull(url, shape.messages)),
                ("plain", consume_ordered(url, STREAM, EVENT_SUBJECTS)),
                (
                    "decoded",
                    consume_ordered(
                        url, STREAM, EVENT_SUBJECTS, decoding=True, keep=batches if r == 0 else None
                    ),
                ),
            )
            for name, run in runs:
                timings.setdefault(name, []).append(asyncio.run(run))
            fresh = tmp_path / f"rebuilt-{r}" / "inbox.sqlite3"
            began = time.perf_counter()
            position = asyncio.run(rebuild(InboxProjection(), fresh, url))
            timings.setdefault("rebuild", []).append(
                Timed(shape.messages, time.perf_counter() - began)
            )
            assert position == last
            assert dump(fresh) == dump(pipeline.inbox_path), "rebuild differs from the live inbox"
        assert all(t.messages == shape.messages for runs in timings.values() for t in runs)
        raw = RawBaseline(published, best(timings["raw ordered"]), best(timings["raw pull"]))
        rebuilt = best(timings["rebuild"])
        plain = best(timings["plain"])
        decoded = best(timings["decoded"])

        print(f"rebuild on {kind}")
        report_rebuild(
            last - before, demo_seconds, caught_up, relayed, shape, rebuilt, plain, decoded, raw
        )
        record_figures(kind, phases, relayed, rebuilt, raw)
        if os.environ.get("CBCM_BENCH_PROFILE"):
            profile_apply(batches, tmp_path / "profiled" / "inbox.sqlite3")
    finally:
        sys.setswitchinterval(switch_interval)
        if poller is not None:
            poller.stop()
        if watcher is not None:
            watcher.stop()
        pipeline.stop()
        app.close()
