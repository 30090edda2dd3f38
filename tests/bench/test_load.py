"""Load test (issue #7): the HTTP API on PostgreSQL under many concurrent clients.

Everything runs as in production, each in its own process: a nats-server, ``cbcm relay``,
``cbcm project inbox`` and ``cbcm api`` (uvicorn) on a fresh PostgreSQL schema of the test
server. The load generator is this process: ``CLIENTS`` httpx async clients (one connection
each) on one event loop, each walking cases through the workflow one request at a time:

    intake (POST /v1/cases) -> assess -> assign focal points -> read its inbox row
    (GET /v1/inbox/cases/{id}?after=<position>, read-your-writes) -> refer for investigation
    -> acknowledge and record the outcome (the implicated agency's investigating entity)
    -> feedback to the complainant -> close

Two phases, after an unrecorded warm-up:

- *sustained*: every client sends its next request as soon as the last is answered, for
  ``LOAD_SECONDS``: throughput, p50 and p99 latency per kind of request;
- *paced*: writes (no reads) at ``PACED_RATE`` per second, whoever is free takes the next tick,
  for ``PACED_SECONDS``: the issue's lag target (p99 under 250 ms at 100 commands/s).

End-to-end lag: each write's answer carries its store ``position``. A separate process polls
the inbox read model's applied position every millisecond and notes when it changes (the
projector commits a batch's rows and its position in one transaction, so a position seen
applied is a row visible). A write's lag is the first time the inbox showed its position, less
the time its answer reached the client, on the system-wide monotonic clock (0 when the inbox
had it before the answer arrived). The poller is a process of its own so that the load
generator's event loop does not delay it.

Memory: each process's resident set (psutil RSS), sampled every second from the warm-up on;
the first sample and the peak are printed, the peak recorded.
PostgreSQL's own memory (shared buffers) is not counted.

Errors must be zero: any answer other than the expected 2xx, any exception, and any position
the inbox never reached fail the test, after the figures are printed. Latencies are printed,
never asserted. ``CBCM_BENCH_CLIENTS``, ``CBCM_BENCH_LOAD_SECONDS`` and
``CBCM_BENCH_PACED_SECONDS`` override the defaults (``cbcm bench --quick`` shortens them).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
import pytest

from domain.actors import Role
from domain.vocabulary import (
    AgeBand,
    AllegationSubtype,
    AllegationType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    Sex,
    SharedItem,
)
from projections.base import POSITION_TABLE
from services.bootstrap import complaint_mechanism
from services.identity.tokens import issue_token
from services.nats.server import EmbeddedNats, free_port
from services.projector.runner import read_model_path, read_position
from services.settings import Settings
from tests.api_world import build_network
from tests.bench.results import Figure, Target, quick, record

pytestmark = pytest.mark.bench

CBCM = str(Path(sys.executable).parent / "cbcm")
CLIENTS = int(os.environ.get("CBCM_BENCH_CLIENTS", "32"))
LOAD_SECONDS = float(os.environ.get("CBCM_BENCH_LOAD_SECONDS", "10" if quick() else "30"))
PACED_RATE = 100
PACED_SECONDS = float(os.environ.get("CBCM_BENCH_PACED_SECONDS", "8" if quick() else "20"))
WARMUP_SECONDS = 3.0
WARMUP_CLIENTS = 4
POLL_INTERVAL = 0.001
LAG_TARGET_MS = 250.0
CATCH_UP_TIMEOUT = 120.0
AGENCIES = ("unhcr", "wfp")


def clock() -> float:
    """System-wide monotonic seconds: the same clock in every process of the machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


# ------------------------------------------------------------------------ the processes

POLLER = """
import signal, sqlite3, sys, time
path, out, table, interval = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
clock = lambda: time.clock_gettime(time.CLOCK_MONOTONIC)
last = -1
with open(out, "w") as seen:
    db = None
    while True:
        try:
            if db is None:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            row = db.execute(f"SELECT max(position) FROM {table}").fetchone()
            position = int(row[0] or 0)
        except sqlite3.Error:
            db = None
            position = last
        if position != last:
            seen.write(f"{clock()!r} {position}\\n")
            seen.flush()
            last = position
        time.sleep(interval)
"""
"""The inbox position poller: one line ``<monotonic seconds> <position>`` per change."""


@dataclass
class Services:
    """``cbcm relay``, ``cbcm project inbox``, ``cbcm api`` and the poller, as processes."""

    data_dir: Path
    store_url: str
    nats: EmbeddedNats
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_rss: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def inbox_path(self) -> Path:
        return read_model_path(self.data_dir, "inbox")

    @property
    def seen_path(self) -> Path:
        return self.data_dir / "inbox-positions.txt"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CBCM_DATA_DIR": str(self.data_dir),
            "CBCM_EVENT_STORE": self.store_url,
            "CBCM_NATS_URL": self.nats.url,
            "CBCM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "CBCM_LOG_FORMAT": "json",
        }

    def _start(self, name: str, args: list[str]) -> None:
        with (self.data_dir / f"{name}.log").open("wb") as out:
            self.processes[name] = subprocess.Popen(
                args, env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )

    def start(self) -> None:
        self._start("relay", [CBCM, "relay"])
        self._start("project-inbox", [CBCM, "project", "inbox"])
        self._start("api", [CBCM, "api"])

    def start_poller(self) -> None:
        args = [str(self.inbox_path), str(self.seen_path), POSITION_TABLE, str(POLL_INTERVAL)]
        self._start("poller", [sys.executable, "-c", POLLER, *args])

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = (self.data_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{log}")

    def inbox_position(self) -> int:
        self.check_alive()
        return read_position(self.inbox_path)

    def measured(self) -> dict[str, int]:
        """Pids of what is measured: the services, nats-server and the load generator."""
        pids = {n: p.pid for n, p in self.processes.items() if n != "poller"}
        assert self.nats.process is not None
        pids["nats-server"] = self.nats.process.pid
        pids["load generator"] = os.getpid()
        return pids

    def sample_rss(self) -> None:
        for name, pid in self.measured().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            self.peak_rss[name] = max(self.peak_rss[name], rss)
            self.first_rss.setdefault(name, rss)

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

    def seen(self) -> list[tuple[float, int]]:
        lines = self.seen_path.read_text().split("\n") if self.seen_path.exists() else []
        out = []
        for line in lines:
            if line.strip():
                t, p = line.split()
                out.append((float(t), int(p)))
        return out


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ------------------------------------------------------------------------ the workload


@dataclass(frozen=True)
class Step:
    kind: str
    method: str
    path: str
    caller: str
    body: dict[str, Any] | None = None
    expect: int = 200
    write: bool = True


def case_steps(holder: str, implicated: str, rng: random.Random) -> list[Step]:
    """A case's requests after its intake, ``{id}`` and ``{after}`` filled in as it goes."""
    words = ("water", "ration", "guard", "queue", "card", "tent", "night", "list")
    return [
        Step(
            "assess",
            "POST",
            "/v1/cases/{id}/assessment",
            f"fp-{holder}",
            {
                "category": ComplaintCategory.SEA_ALLEGATION.value,
                "allegation": {
                    "allegation_type": AllegationType.SEXUAL_EXPLOITATION.value,
                    "subtype": AllegationSubtype.TRANSACTIONAL_SEX.value,
                    "child_involved": False,
                    "implicated_agency": implicated,
                    "personnel_category": PersonnelCategory.UN_STAFF.value,
                    "victim_sex": Sex.FEMALE.value,
                    "victim_age_band": AgeBand.ADULT.value,
                },
            },
        ),
        Step(
            "assign focal points",
            "POST",
            "/v1/cases/{id}/focal-points",
            f"fp-{holder}",
            {"focal_points": [f"fp-{holder}"]},
        ),
        Step(
            "read inbox (?after=)",
            "GET",
            "/v1/inbox/cases/{id}?after={after}",
            f"fp-{holder}",
            write=False,
        ),
        Step(
            "refer for investigation",
            "POST",
            "/v1/cases/{id}/investigation-referral",
            f"fp-{holder}",
            {"entity": f"{implicated}-oig", "shared": [SharedItem.ALLEGATION_SUMMARY.value]},
        ),
        Step(
            "acknowledge",
            "POST",
            "/v1/cases/{id}/investigation-referral/acknowledgement",
            f"inv-{implicated}",
            {},
        ),
        Step(
            "outcome",
            "POST",
            "/v1/cases/{id}/investigation-referral/outcome",
            f"inv-{implicated}",
            {"outcome": rng.choice(list(InvestigationOutcome)).value},
        ),
        Step(
            "feedback",
            "POST",
            "/v1/cases/{id}/feedback",
            f"fp-{holder}",
            {
                "message": " ".join(rng.choice(words) for _ in range(12)),
                "channel": FeedbackChannel.PHONE.value,
            },
        ),
        Step(
            "close",
            "POST",
            "/v1/cases/{id}/closure",
            f"fp-{holder}",
            {"reason": ClosureReason.INVESTIGATION_CONCLUDED.value},
        ),
    ]


def intake_step(holder: str, rng: random.Random) -> Step:
    words = ("distribution", "worker", "asked", "favour", "food", "card", "evening", "site")
    received = datetime.now(UTC) - timedelta(hours=2)
    return Step(
        "intake",
        "POST",
        "/v1/cases",
        f"op-{holder}",
        {
            "received_at": received.isoformat(),
            "channel": rng.choice([Channel.HOTLINE, Channel.IN_PERSON, Channel.EMAIL]).value,
            "complainant_role": ComplainantRole.ANONYMOUS.value,
            "narrative": "[LOAD] " + " ".join(rng.choice(words) for _ in range(30)),
        },
        expect=201,
    )


def tokens(data_dir: Path) -> dict[str, str]:
    made = {}
    for agency in AGENCIES:
        for user, role in (
            (f"op-{agency}", Role.INTAKE_OPERATOR),
            (f"fp-{agency}", Role.FOCAL_POINT),
            (f"inv-{agency}", Role.INVESTIGATING_ENTITY),
        ):
            made[user] = issue_token(
                data_dir, user=user, agency=agency, roles=[role], ttl=timedelta(hours=1)
            )
    return made


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    writes: list[tuple[float, int]] = field(default_factory=list)
    """(answered at, position) of each write."""
    errors: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    early: int = 0
    """Writes whose position the inbox had applied before their answer arrived."""

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def write_latencies(self) -> list[float]:
        return [ms for kind, v in self.latencies.items() if not kind.startswith("read") for ms in v]


class Client:
    """One user agent: one connection, walking one case at a time."""

    def __init__(self, url: str, tokens: dict[str, str], holder: str, seed: int) -> None:
        self.http = httpx.AsyncClient(
            base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        self.tokens = tokens
        self.holder = holder
        self.implicated = next(a for a in AGENCIES if a != holder)
        self.rng = random.Random(seed)

    async def send(self, step: Step, case_id: str, after: int, phase: Phase | None) -> Any:
        path = step.path.format(id=case_id, after=after)
        headers = {"Authorization": f"Bearer {self.tokens[step.caller]}"}
        began = clock()
        try:
            answer = await self.http.request(step.method, path, json=step.body, headers=headers)
        except httpx.HTTPError as e:
            if phase is not None:
                phase.errors.append(f"{step.kind}: {type(e).__name__}: {e}")
            return None
        answered = clock()
        if answer.status_code != step.expect:
            if phase is not None:
                phase.errors.append(f"{step.kind}: {answer.status_code} {answer.text[:200]}")
            return None
        body = answer.json()
        if phase is not None:
            phase.latencies[step.kind].append((answered - began) * 1000)
            if step.write:
                phase.writes.append((answered, int(body["position"])))
        return body

    async def walk(
        self, deadline: float, phase: Phase | None, ticks: asyncio.Queue[None] | None
    ) -> None:
        """Cases, one after another, until ``deadline``; with ``ticks``, each write waits for
        one (and reads are left out)."""
        while clock() < deadline:
            steps = [
                intake_step(self.holder, self.rng),
                *case_steps(self.holder, self.implicated, self.rng),
            ]
            case_id, after = "", 0
            for step in steps:
                if ticks is not None:
                    if not step.write:
                        continue
                    await ticks.get()
                if clock() >= deadline:
                    return
                body = await self.send(step, case_id, after, phase)
                if body is None:
                    break  # an error: this case cannot go on
                if step.kind == "intake":
                    case_id = body["id"]
                if step.write:
                    after = int(body["position"])

    async def close(self) -> None:
        await self.http.aclose()


async def pace(ticks: asyncio.Queue[None], rate: float, deadline: float, clients: int) -> None:
    """A tick every 1/``rate`` seconds (on deadlines, not sleeps, so no drift); at the
    deadline one more per client, which each finds too late and stops."""
    start = clock()
    n = 0
    while True:
        due = start + n / rate
        if due >= deadline:
            await asyncio.sleep(max(deadline - clock(), 0))
            for _ in range(clients):
                ticks.put_nowait(None)
            return
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        ticks.put_nowait(None)
        n += 1


async def sample_memory(services: Services, stop: asyncio.Event) -> None:
    while not stop.is_set():
        services.sample_rss()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run_phases(services: Services, secrets: dict[str, str]) -> tuple[Phase, Phase]:
    clients = [
        Client(services.url, secrets, AGENCIES[i % len(AGENCIES)], seed=i) for i in range(CLIENTS)
    ]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(services, stop))
    try:
        deadline = clock() + WARMUP_SECONDS
        await asyncio.gather(*(c.walk(deadline, None, None) for c in clients[:WARMUP_CLIENTS]))

        sustained = Phase("sustained")
        began = clock()
        deadline = began + LOAD_SECONDS
        await asyncio.gather(*(c.walk(deadline, sustained, None) for c in clients))
        sustained.seconds = clock() - began

        await asyncio.to_thread(catch_up, services, sustained)
        paced = Phase(f"paced {PACED_RATE}/s")
        ticks: asyncio.Queue[None] = asyncio.Queue()
        began = clock()
        deadline = began + PACED_SECONDS
        await asyncio.gather(
            pace(ticks, PACED_RATE, deadline, len(clients)),
            *(c.walk(deadline, paced, ticks) for c in clients),
        )
        paced.seconds = clock() - began
        await asyncio.to_thread(catch_up, services, paced)
        return sustained, paced
    finally:
        stop.set()
        await sampler
        await asyncio.gather(*(c.close() for c in clients))


def catch_up(services: Services, phase: Phase) -> None:
    last = max((p for _, p in phase.writes), default=0)
    try:
        wait_until(
            lambda: services.inbox_position() >= last,
            CATCH_UP_TIMEOUT,
            f"the inbox to reach position {last} after the {phase.name} phase",
        )
    except AssertionError as e:
        phase.errors.append(str(e))


def lags(phase: Phase, seen: list[tuple[float, int]]) -> None:
    """Each write's lag: when the inbox first showed its position, less its answer's time."""
    positions = [p for _, p in seen]
    for answered, position in phase.writes:
        i = bisect.bisect_left(positions, position)
        if i == len(seen):
            phase.errors.append(f"the inbox never showed position {position}")
            continue
        shown = seen[i][0]
        if shown < answered:
            phase.early += 1
        phase.lags.append(max(shown - answered, 0.0) * 1000)


# ------------------------------------------------------------------------ reporting


def report(sustained: Phase, paced: Phase, services: Services, where: str) -> None:
    line = "-" * 96
    print()
    print(line)
    print(
        f"load test over HTTP on PostgreSQL ({where}): cbcm api, relay, inbox projector and "
        "nats-server as processes"
    )
    print(
        f"{CLIENTS} clients; sustained {sustained.seconds:.1f} s as fast as answered; paced "
        f"{paced.seconds:.1f} s at {PACED_RATE} writes/s; latency = request sent to answer read"
    )
    print(f"{'':30}{'phase':>11}{'requests':>9}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max':>9}")
    for phase in (sustained, paced):
        for kind, values in phase.latencies.items():
            print(
                f"{kind:30}{phase.name:>11}{len(values):>9}{len(values) / phase.seconds:>8.1f}"
                f"{pct(values, 50):>9.1f}{pct(values, 99):>9.1f}{max(values):>9.1f}"
            )
        writes = phase.write_latencies
        print(
            f"{'all writes':30}{phase.name:>11}{len(writes):>9}"
            f"{len(writes) / phase.seconds:>8.1f}{pct(writes, 50):>9.1f}{pct(writes, 99):>9.1f}"
            f"{max(writes, default=math.nan):>9.1f}"
        )
    print("end-to-end lag, write answered -> inbox read model showing its position (ms):")
    for phase in (sustained, paced):
        print(
            f"  {phase.name:12} writes {len(phase.lags):6}  p50 {pct(phase.lags, 50):7.1f}  "
            f"p99 {pct(phase.lags, 99):7.1f}  max {max(phase.lags, default=math.nan):7.1f}  "
            f"(shown before the answer arrived: {phase.early})"
        )
    print(
        f"errors: {len(sustained.errors)} sustained, {len(paced.errors)} paced; "
        "resident memory, at the warm-up -> peak (MB): "
        + ", ".join(
            f"{n} {services.first_rss[n] / 2**20:.0f} -> {rss / 2**20:.0f}"
            for n, rss in services.peak_rss.items()
        )
    )
    print(line)


def record_figures(sustained: Phase, paced: Phase, services: Services) -> None:
    bench = "load test, HTTP (#7)"
    early = sustained.early
    figures = [
        (f"requests/s, {CLIENTS} clients", sustained.requests / sustained.seconds, "req/s"),
        ("write p50, sustained", pct(sustained.write_latencies, 50), "ms"),
        ("write p99, sustained", pct(sustained.write_latencies, 99), "ms"),
        ("read ?after= p99, sustained", pct(sustained.latencies["read inbox (?after=)"], 99), "ms"),
        ("lag p50, sustained", pct(sustained.lags, 50), "ms"),
        ("lag p99, sustained", pct(sustained.lags, 99), "ms"),
        ("writes in the inbox before their answer", 100 * early / max(len(sustained.lags), 1), "%"),
        (f"writes/s done, paced {PACED_RATE}/s", len(paced.writes) / paced.seconds, "writes/s"),
        (f"write p99, paced {PACED_RATE}/s", pct(paced.write_latencies, 99), "ms"),
        (f"lag p50, paced {PACED_RATE}/s", pct(paced.lags, 50), "ms"),
    ]
    for name, value, unit in figures:
        better: Literal["higher", "lower"] = "lower" if unit in ("ms", "%") else "higher"
        record(Figure(bench, name, "postgres", value, unit, better=better))
    record(
        Figure(
            bench,
            f"lag p99, paced {PACED_RATE}/s",
            "postgres",
            pct(paced.lags, 99),
            "ms",
            target=Target("value", "<", LAG_TARGET_MS),
            better="lower",
        )
    )
    errors = len(sustained.errors) + len(paced.errors)
    no_error = Target("value", "<", 1)
    record(Figure(bench, "errors", "postgres", errors, "", target=no_error, better="lower"))
    for name, rss in services.peak_rss.items():
        record(Figure(bench, f"peak RSS, {name}", "postgres", rss / 2**20, "MB", better="lower"))


# ------------------------------------------------------------------------ the test


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


def test_load_over_http(postgres_url: str, tmp_path: Path, nats_server: EmbeddedNats) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir, event_store=postgres_url)
    app = complaint_mechanism(settings)
    try:
        build_network(app)
        network = app.recorder.max_notification_id() or 0
        from services.event_store.config import describe, persistence_env  # noqa: PLC0415

        where = describe(persistence_env(settings))
    finally:
        app.close()
    secrets = tokens(data_dir)
    services = Services(data_dir, postgres_url, nats_server)
    try:
        services.start()
        wait_until(lambda: services.inbox_position() >= network, 60, "the inbox to start")

        def healthy() -> bool:
            services.check_alive()
            try:
                return httpx.get(f"{services.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "the API to answer")
        services.start_poller()
        wait_until(services.seen, 10, "the poller to see the inbox")
        sustained, paced = asyncio.run(run_phases(services, secrets))
        time.sleep(0.2)  # the poller's last line
        services.check_alive()
    finally:
        services.stop()
    seen = services.seen()
    for phase in (sustained, paced):
        lags(phase, seen)
    report(sustained, paced, services, where)
    record_figures(sustained, paced, services)
    errors = sustained.errors + paced.errors
    assert not errors, f"{len(errors)} errors, first: {errors[:5]}"
    assert sustained.requests > 0 and paced.writes
