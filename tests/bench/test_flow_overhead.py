"""Flow overhead (issue #12): relay and inbox projector throughput on the code before issue
#12 (commit ``b312250``) and on the current tree, measured in the same run.

Issue #12 added stall handling, Prometheus metrics and logging changes to the relay and the
projectors; "the metrics and the new checks should cost under 5%". Both versions run as
production runs them, as subprocesses: ``<venv python> -m services.cli relay`` and
``... project inbox`` with ``PYTHONPATH=<tree>`` and the tree as working directory, so that
the tree's packages win over the editable install's finder (checked once per tree: every
package and the relay's and projector's modules resolve into it). "Before" is commit
``b312250`` extracted with ``git archive`` into a temporary directory (removed at the end);
"after" is the working tree this file is in. The current code serves its metrics
(``CBCM_METRICS_ADDR=127.0.0.1:0``), as under ``cbcm serve``; nobody scrapes them.

Workload, written once on SQLite: the demo network and ``walk_cases`` until at least
``CBCM_BENCH_OVERHEAD_EVENTS`` events (12,000 with ``--quick``, else 24,000), with no relay
running, by the *old* code (a store the old code wrote is one both versions read: the current
code must read the stores it upgrades). The data directory (store and key ring) is kept
pristine and copied for every run.

Relay: each run its own copy of the data directory (so the relay's recorded position starts
at 0) and its own fresh nats-server (free port, temporary store); the relay is started on the
backlog and timed from the first message it stores in ``CBCM_EVENTS`` to the message of the
last published store position, by the server's timestamps of the two (start-up left out, and
no polling in the timing): messages per second. The first run's stream is kept (server
stopped, its store directory copied) as the projectors' source; the first round also checks
that both versions publish the same stream (subjects and payloads, digested).

Projector: each run a fresh nats-server on a copy of that stream and a fresh read model;
``project inbox`` is started and the read model's ``projection_position`` polled every 2 ms,
timed from the first position change to the last published position (start-up and the
first batch left out): messages applied per second (positions mapped to stream messages).

``CBCM_BENCH_OVERHEAD_ROUNDS`` rounds (7) alternate the order (before, after / after,
before), so that drift on a loaded machine falls on both alike. Each round prints its rates
and ratios; then the median and the best of each version, and the median of the rounds'
ratios. Recorded: "relay throughput, #12 after/before" and "inbox projector throughput, #12
after/before", the median after over the median before, target ratio >= 0.95. Nothing is
asserted but sanity (both trees import from themselves, every run reaches the last
position, both relays publish as many messages).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import nats.js.errors
import pytest
from nats.js.api import DeliverPolicy

from contracts.subjects import EVENT_SUBJECTS, STREAM
from projections.base import get_position, open_read_model
from services.nats.server import EmbeddedNats
from tests.bench.results import Figure, Target, quick, record

pytestmark = pytest.mark.bench

BEFORE_COMMIT = "b312250"
"""The last commit before issue #12."""
REPO = Path(__file__).resolve().parents[2]
EVENTS = int(os.environ.get("CBCM_BENCH_OVERHEAD_EVENTS", "12000" if quick() else "24000"))
"""At least this many events of demo load (after the demo network). More than the event flow
bench's ``CBCM_BENCH_REBUILD_EVENTS``: with its 4,000 a projector run lasted 0.3 s and a
relay run 0.6 s, too short for a 5% question."""
ROUNDS = int(os.environ.get("CBCM_BENCH_OVERHEAD_ROUNDS", "7"))
DEMO_CHUNK = 200
POLL = 0.002
"""How often the read model's position is polled (seconds)."""
RELAY_POLL = 0.05
"""How often the stream is polled for the relay's end (its times are the server's)."""
RUN_TIMEOUT = 180.0
TARGET = Target("ratio", ">=", 0.95)
BENCH = "flow overhead (#12)"
PACKAGES = ("services", "contracts", "domain", "projections")
MODULES = (
    "services.cli",  # a module before #13, a package (with __main__) after: both run with -m
    "services.relay.relay",
    "services.projector.runner",
    "projections.inbox",
)


# ------------------------------------------------------------------------ the two trees


@dataclass(frozen=True)
class Tree:
    """A source tree run as subprocesses (``PYTHONPATH`` and working directory)."""

    name: str
    root: Path
    metrics: bool
    """Serve Prometheus metrics (the current code: as under ``cbcm serve``)."""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
        env.pop("PYTHONPATH", None)
        env.update(PYTHONPATH=str(self.root), **extra)
        if self.metrics:
            env["CBCM_METRICS_ADDR"] = "127.0.0.1:0"
        return env

    def python(self, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    def check_imports(self) -> dict[str, str]:
        """Where each package and module resolves under this tree's environment; fails
        unless every one is inside the tree."""
        names = [*PACKAGES, *MODULES]
        code = (
            "import importlib, json, sys; "
            f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {names!r}}}))"
        )
        done = self.python(["-c", code])
        assert done.returncode == 0, f"{self.name}: imports failed:\n{done.stderr[-3000:]}"
        found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        root = self.root.resolve()
        for name, file in found.items():
            assert Path(file).resolve().is_relative_to(root), (
                f"{self.name}: {name} resolves to {file}, not into {root}"
            )
        return found

    def start(self, command: list[str], data_dir: Path, nats_url: str, log: Path) -> Service:
        env = self.env(
            CBCM_DATA_DIR=str(data_dir),
            CBCM_EVENT_STORE=store_url(data_dir),
            CBCM_NATS_URL=nats_url,
            CBCM_LOG_FORMAT="json",
        )
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *command],
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return Service(" ".join(command), process, log)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def store_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'events.sqlite3'}"


@pytest.fixture
def before_tree() -> Iterator[Path]:
    """Commit ``b312250`` extracted into a temporary directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cbcm-before-12-"))
    try:
        archive = subprocess.Popen(
            ["git", "-C", str(REPO), "archive", BEFORE_COMMIT],
            stdout=subprocess.PIPE,
        )
        extracted = subprocess.run(
            ["tar", "-x", "-C", str(root)],
            stdin=archive.stdout,
            check=False,
        )
        assert archive.stdout is not None
        archive.stdout.close()
        assert archive.wait() == 0, f"git archive {BEFORE_COMMIT} failed"
        assert extracted.returncode == 0, "tar -x failed"
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------ the workload

WRITER = """
import json, random, sys
from datetime import timedelta
from pathlib import Path
from services.bootstrap import complaint_mechanism
# the old tree's layout (before issue #13): the backlog is written by the code before #12
from services.demo import build_demo_network, demo_start, walk_cases
from services.mechanism import is_published
from services.settings import Settings

data_dir, store, target, chunk = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = complaint_mechanism(Settings(data_dir=data_dir, event_store=store))
try:
    start = demo_start()
    build_demo_network(app, start)
    network = app.recorder.max_notification_id() or 0
    rng = random.Random(7)
    walked = 0
    while (app.recorder.max_notification_id() or 0) - network < target:
        walk_cases(app, chunk, rng, start + timedelta(hours=1, days=walked))
        walked += 1
    last = app.recorder.max_notification_id() or 0
    published, position = 0, last
    while position > 0 and not published:
        first = max(1, position - 999)
        for n in reversed(app.recorder.select_notifications(first, 1000, stop=position)):
            if is_published(app.mapper.to_domain_event(n)):
                published = n.id
                break
        position = first - 1
    print(json.dumps({"network": network, "last": last, "published": published}))
finally:
    app.close()
"""


@dataclass(frozen=True)
class Workload:
    data_dir: Path
    """Pristine: the store and its key ring, copied for every run."""
    events: int
    last_published: int
    seconds: float


def write_workload(tree: Tree, data_dir: Path) -> Workload:
    data_dir.mkdir(parents=True)
    began = time.perf_counter()
    done = tree.python(
        ["-c", WRITER, str(data_dir), store_url(data_dir), str(EVENTS), str(DEMO_CHUNK)]
    )
    seconds = time.perf_counter() - began
    assert done.returncode == 0, f"the demo load failed:\n{done.stderr[-3000:]}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["published"] > 0
    return Workload(data_dir, out["last"], out["published"], seconds)


def fresh_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.log"))
    return target


# ------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Timed:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")


class _Position(msgspec.Struct):
    position: int | None = None


async def time_relay(service: Service, url: str, last: int) -> Timed:
    """The relay's publish rate on a fresh stream: from the first message it stored to the
    one of store position ``last``, by the server's own timestamps of the two (so neither
    the relay's start-up nor this process's polling is in it). The stream is polled every
    ``RELAY_POLL`` only to know when it is done."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.perf_counter() + RUN_TIMEOUT
        while time.perf_counter() < deadline:
            try:
                seq = (await js.stream_info(STREAM)).state.last_seq
            except nats.js.errors.NotFoundError:
                seq = 0
            if seq > 0:
                top = await js.get_msg(STREAM, seq)
                position = msgspec.json.decode(top.data or b"{}", type=_Position).position
                if position is not None and position >= last:
                    first = await js.get_msg(STREAM, 1)
                    assert first.time is not None and top.time is not None
                    return Timed(seq - 1, (top.time - first.time).total_seconds())
            service.check_alive()
            await asyncio.sleep(RELAY_POLL)
        raise AssertionError(f"{service.name} did not publish position {last} in time")
    finally:
        await nc.close()


async def stream_digest(url: str) -> tuple[int, str, list[int]]:
    """Messages of ``CBCM_EVENTS``, a digest of their subjects and payloads, and the store
    position of each (untimed)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        sub = await js.subscribe(
            EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        digest = hashlib.sha256()
        positions: list[int] = []
        seq = count = 0
        while seq < last:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            count += 1
            digest.update(msg.subject.encode() + b"\0" + msg.data + b"\0")
            position = msgspec.json.decode(msg.data, type=_Position).position
            assert position is not None
            positions.append(position)
        await sub.unsubscribe()
        return count, digest.hexdigest()[:16], positions
    finally:
        await nc.close()


def time_projector(service: Service, read_model: Path, last: int, positions: list[int]) -> Timed:
    """From the first change of the read model's position to ``last`` (polled every
    ``POLL``): the stream messages applied in between, per second."""
    db: sqlite3.Connection | None = None
    first_position, first_at = 0, 0.0
    deadline = time.perf_counter() + RUN_TIMEOUT
    try:
        while time.perf_counter() < deadline:
            position = 0
            if db is None and read_model.exists():
                try:
                    db = open_read_model(read_model, readonly=True)
                except sqlite3.OperationalError:
                    db = None
            if db is not None:
                try:
                    position = get_position(db)
                except sqlite3.OperationalError:
                    position = 0
            now = time.perf_counter()
            if position > 0 and not first_at:
                first_position, first_at = position, now
            if position >= last:
                messages = bisect.bisect_right(positions, position) - bisect.bisect_right(
                    positions, first_position
                )
                return Timed(messages, now - first_at)
            service.check_alive()
            time.sleep(POLL)
    finally:
        if db is not None:
            db.close()
    raise AssertionError(f"{service.name} did not reach position {last} in time")


# ------------------------------------------------------------------------ the benchmark


@dataclass
class Runs:
    relay: dict[str, list[Timed]]
    projector: dict[str, list[Timed]]


def median_rate(timings: list[Timed]) -> float:
    return statistics.median(t.rate for t in timings)


def ratio(rates: dict[str, float]) -> float:
    return rates["after"] / rates["before"]


def test_flow_overhead(tmp_path: Path, before_tree: Path) -> None:
    trees = {
        "before": Tree(f"before #12 ({BEFORE_COMMIT})", before_tree, metrics=False),
        "after": Tree("after #12 (this tree)", REPO, metrics=True),
    }
    for key, tree in trees.items():
        found = tree.check_imports()
        print(f"\n{key}: services -> {found['services']}")
    # The old tree really is the old code: it has no relay metrics module.
    assert not (before_tree / "services" / "relay" / "metrics.py").exists()
    assert (REPO / "services" / "relay" / "metrics.py").exists()

    workload = write_workload(trees["before"], tmp_path / "pristine")
    last = workload.last_published
    source_stream: Path | None = None
    positions: list[int] = []
    digests: dict[str, tuple[int, str]] = {}
    runs = Runs({k: [] for k in trees}, {k: [] for k in trees})
    width = 100
    print()
    print("-" * width)
    print(
        f"flow overhead (issue #12) on sqlite: {workload.events} events (demo network and "
        f"load; last published at position {last}) written by the old code in "
        f"{workload.seconds:.1f} s; {ROUNDS} rounds, order alternating"
    )
    print(
        "relay: first to last message stored (server timestamps); inbox: first to last "
        f"position change (polled every {POLL * 1000:.0f} ms); rates in messages/s"
    )
    print(
        f"{'round':>5}  {'code':<28}{'relay msgs':>11}{'s':>7}{'msgs/s':>9}"
        f"{'inbox msgs':>12}{'s':>7}{'msgs/s':>9}"
    )
    for r in range(ROUNDS):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        round_dir = tmp_path / f"round-{r}"
        # ---- relays: each its own store copy and fresh nats-server
        for key in order:
            run_dir = round_dir / f"relay-{key}"
            data_dir = fresh_copy(workload.data_dir, run_dir / "data")
            server = EmbeddedNats(run_dir / "nats").start()
            try:
                relayer = trees[key].start(["relay"], data_dir, server.url, run_dir / "relay.log")
                try:
                    timed = asyncio.run(time_relay(relayer, server.url, last))
                finally:
                    relayer.stop()
                runs.relay[key].append(timed)
                if r == 0:
                    count, digest, seen = asyncio.run(stream_digest(server.url))
                    digests[key] = (count, digest)
                    positions = positions or seen
            finally:
                server.stop()
            if source_stream is None:
                source_stream = run_dir / "nats"
        assert source_stream is not None
        # ---- projectors: each a fresh read model and a copy of the same stream
        for key in order:
            run_dir = round_dir / f"project-{key}"
            data_dir = fresh_copy(workload.data_dir, run_dir / "data")
            server = EmbeddedNats(fresh_copy(source_stream, run_dir / "nats")).start()
            try:
                projector = trees[key].start(
                    ["project", "inbox"], data_dir, server.url, run_dir / "project.log"
                )
                try:
                    timed = time_projector(
                        projector, data_dir / "read_models" / "inbox.sqlite3", last, positions
                    )
                finally:
                    projector.stop()
                runs.projector[key].append(timed)
            finally:
                server.stop()
        for key in order:
            relay_t, proj_t = runs.relay[key][-1], runs.projector[key][-1]
            print(
                f"{r + 1:>5}  {key + ' #12':<28}{relay_t.messages:>11}{relay_t.seconds:>7.2f}"
                f"{relay_t.rate:>9.0f}{proj_t.messages:>12}{proj_t.seconds:>7.2f}"
                f"{proj_t.rate:>9.0f}"
            )
        print(
            f"{'':>5}  {'ratio after/before':<28}{'':>18}"
            f"{runs.relay['after'][-1].rate / runs.relay['before'][-1].rate:>9.3f}"
            f"{'':>19}"
            f"{runs.projector['after'][-1].rate / runs.projector['before'][-1].rate:>9.3f}"
        )
        if r == 0:
            same = digests["before"] == digests["after"]
            print(
                f"{'':>5}  streams published: before {digests['before'][0]} messages "
                f"({digests['before'][1]}), after {digests['after'][0]} "
                f"({digests['after'][1]}): {'identical' if same else 'DIFFERENT'}"
            )
            assert digests["before"][0] == digests["after"][0], "the relays' streams differ"

    relay = {k: median_rate(v) for k, v in runs.relay.items()}
    inbox = {k: median_rate(v) for k, v in runs.projector.items()}
    best_relay = {k: max(t.rate for t in v) for k, v in runs.relay.items()}
    best_inbox = {k: max(t.rate for t in v) for k, v in runs.projector.items()}
    relay_ratios = [
        a.rate / b.rate for a, b in zip(runs.relay["after"], runs.relay["before"], strict=True)
    ]
    inbox_ratios = [
        a.rate / b.rate
        for a, b in zip(runs.projector["after"], runs.projector["before"], strict=True)
    ]
    summary = (
        ("median", "before #12", relay["before"], inbox["before"], ".0f"),
        ("", "after #12", relay["after"], inbox["after"], ".0f"),
        ("", "ratio of medians", ratio(relay), ratio(inbox), ".3f"),
        (
            "",
            "median of round ratios",
            statistics.median(relay_ratios),
            statistics.median(inbox_ratios),
            ".3f",
        ),
        ("best", "before #12", best_relay["before"], best_inbox["before"], ".0f"),
        ("", "after #12", best_relay["after"], best_inbox["after"], ".0f"),
        ("", "ratio of bests", ratio(best_relay), ratio(best_inbox), ".3f"),
    )
    for label, what, relay_value, inbox_value, spec in summary:
        print(f"{label:>5}  {what:<28}{'':>18}{relay_value:>9{spec}}{'':>19}{inbox_value:>9{spec}}")
    print("-" * width)

    for figure, rates, what in (
        ("relay throughput, #12 after/before", relay, "the relay"),
        ("inbox projector throughput, #12 after/before", inbox, "cbcm project inbox"),
    ):
        record(
            Figure(
                BENCH,
                figure,
                "sqlite",
                rates["after"],
                "msgs/s",
                baseline=rates["before"],
                baseline_name=f"{what} at {BEFORE_COMMIT} (before #12), median of {ROUNDS}",
                target=TARGET,
            )
        )
