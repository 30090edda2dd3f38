"""The relay's backlog catch-up (issue #16): ``cbcm relay`` publishing a backlog, next to
nats-py alone publishing the same number of messages of the same sizes, in the same run;
the relay before issue #16 (commit ``96afc45``) and this tree's, on SQLite and PostgreSQL.

"The relay publishes its backlog at 0.13 (PostgreSQL) to 0.23 (SQLite) of what nats-py alone
publishes, for the same messages in the same run"; the issue wants at least 0.5.

Workload, written once per store by this tree: the demo network and ``walk_cases`` until at
least ``CBCM_BENCH_BACKLOG_EVENTS`` events (5,000 with ``--quick``, else 12,000), no relay
running. The data directory (store file on SQLite, the key ring on both) is kept pristine
and copied for every run; on PostgreSQL the relay's recorded position is deleted before each
run, so that every relay starts from zero on the same backlog.

Each run has a fresh nats-server (free port, temporary store). A relay, before or after, is
started as production runs it (``python -m services.cli relay`` with ``PYTHONPATH`` at its
tree) and timed from the first message it stores in ``CBCM_EVENTS`` to the message of the
last published position, by the server's timestamps of the two (start-up left out). The
baseline, nats-py alone: as many messages as the relay published, of the stream's average
payload size and subject length, with the relay's headers, published with ``publish_async``
in windows of 500 gathered (as the relay did before #16) to a fresh file-storage stream, and
timed the same way, by the server's timestamps of its first and last message.

``CBCM_BENCH_BACKLOG_ROUNDS`` rounds (3) rotate the order of the three, so drift on a loaded
machine falls on each alike; the medians are recorded: "relay backlog publish rate" before
and after, each against the nats-py baseline (target: ratio >= 0.5). Nothing is asserted but
sanity (every run publishes every published position, the two relays the same stream).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
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
import psycopg
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from contracts.subjects import PREVIOUS_POSITION_HEADER, STREAM
from services.nats.server import EmbeddedNats
from services.relay.relay import APPLICATION_NAME, EXPECTED_LAST_SEQUENCE_HEADER, MSG_ID_HEADER
from tests.bench.results import Figure, Target, quick, record, store_kind

pytestmark = pytest.mark.bench

BEFORE_COMMIT = "96afc45"
"""The last commit of main before the relay's pipeline of issue #16."""
REPO = Path(__file__).resolve().parents[2]
EVENTS = int(os.environ.get("CBCM_BENCH_BACKLOG_EVENTS", "5000" if quick() else "12000"))
ROUNDS = int(os.environ.get("CBCM_BENCH_BACKLOG_ROUNDS", "3"))
RAW_WINDOW = 500
RUN_TIMEOUT = 300.0
POLL = 0.05
TARGET = Target("ratio", ">=", 0.5)
BENCH = "relay backlog (#16)"

WRITER = """
import json, random, sys
from datetime import timedelta
from pathlib import Path
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, demo_start, walk_cases
from services.settings import Settings

data_dir, store, target = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
app = complaint_mechanism(Settings(data_dir=data_dir, event_store=store))
try:
    start = demo_start()
    build_demo_network(app, start)
    rng = random.Random(7)
    walked = 0
    while (app.recorder.max_notification_id() or 0) < target:
        walk_cases(app, 200, rng, start + timedelta(hours=1, days=walked))
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
    print(json.dumps({"last": last, "published": published}))
finally:
    app.close()
"""


@dataclass(frozen=True)
class Timed:
    messages: int
    seconds: float
    cpu_us: float = float("nan")
    """CPU time (user + system, every thread) per message of the publishing process and
    its child processes (the relay's translating process)."""
    cpu_own_us: float = float("nan")
    """Of which the publishing process's own (the rest: its translating process's)."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")


class _Position(msgspec.Struct):
    position: int | None = None


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    env.pop("PYTHONPATH", None)
    env.update(PYTHONPATH=str(root), **extra)
    return env


@pytest.fixture
def before_tree() -> Iterator[Path]:
    """Commit ``BEFORE_COMMIT`` extracted into a temporary directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cbcm-before-16-"))
    try:
        archive = subprocess.Popen(
            ["git", "-C", str(REPO), "archive", BEFORE_COMMIT], stdout=subprocess.PIPE
        )
        extracted = subprocess.run(
            ["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=False
        )
        assert archive.stdout is not None
        archive.stdout.close()
        assert archive.wait() == 0, f"git archive {BEFORE_COMMIT} failed"
        assert extracted.returncode == 0
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_backlog(data_dir: Path, store: str) -> tuple[int, float]:
    """The demo load into ``store``; the last published position and the seconds taken."""
    data_dir.mkdir(parents=True)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(data_dir), store, str(EVENTS)],
        cwd=REPO, env=_env(REPO), capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, f"the demo load failed:\n{done.stderr[-3000:]}"
    import json  # noqa: PLC0415

    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["published"] > 0
    return int(out["published"]), time.perf_counter() - began


def reset_relay_position(store: str) -> None:
    """Delete the relay's recorded position from a PostgreSQL store (SQLite: a fresh copy)."""
    if store.startswith("sqlite"):
        return
    base, _, query = store.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("schema", "public")
    with psycopg.connect(base, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
            "AND column_name = 'application_name'",
            (schema,),
        ).fetchall()
        for (table,) in tables:
            conn.execute(
                psycopg.sql.SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                    psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
                ),
                (APPLICATION_NAME,),
            )


async def _server_span(js: nats.js.JetStreamContext, stream: str, last_seq: int) -> float:
    first = await js.get_msg(stream, 1)
    top = await js.get_msg(stream, last_seq)
    assert first.time is not None and top.time is not None
    return (top.time - first.time).total_seconds()


def _descendants(pid: int) -> list[int]:
    """``pid`` and the processes it started, theirs too (the relay's translating process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue  # the thread ended meanwhile
    return found


def _cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU time so far of process ``pid`` and its child processes (every
    thread of each): all the CPU a relay uses, whether it translates in a thread or in a
    process of its own (``children=False``: the process's own alone)."""
    total = 0
    for each in _descendants(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def time_relay(
    process: subprocess.Popen[bytes], url: str, last: int
) -> tuple[Timed, float, float]:
    """The relay's publish rate (server timestamps, first to last message), and the stream's
    average payload size and subject length."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.perf_counter() + RUN_TIMEOUT
        cpu_first: tuple[int, float] | None = None
        own_first = 0.0
        while time.perf_counter() < deadline:
            try:
                info = await js.stream_info(STREAM)
                seq = info.state.last_seq
            except nats.js.errors.NotFoundError:
                seq = 0
            if seq > 0 and cpu_first is None:
                cpu_first = (seq, _cpu_seconds(process.pid))  # start-up left out
                own_first = _cpu_seconds(process.pid, children=False)
            if seq > 0:
                top = await js.get_msg(STREAM, seq)
                position = msgspec.json.decode(top.data or b"{}", type=_Position).position
                if position is not None and position >= last:
                    cpu = _cpu_seconds(process.pid)
                    own = _cpu_seconds(process.pid, children=False)
                    seconds = await _server_span(js, STREAM, seq)
                    first = await js.get_msg(STREAM, 1)
                    subject = (len(first.subject) + len(top.subject)) / 2
                    payload = (info.state.bytes / seq) - subject - 60  # headers and framing
                    assert cpu_first is not None
                    sampled = seq - cpu_first[0]
                    cpu_us = (cpu - cpu_first[1]) / sampled * 1e6 if sampled > 0 else math.nan
                    own_us = (own - own_first) / sampled * 1e6 if sampled > 0 else math.nan
                    timed = Timed(seq - 1, seconds, cpu_us, own_us)
                    return timed, max(payload, 1.0), subject
            assert process.poll() is None, f"the relay exited with {process.returncode}"
            await asyncio.sleep(POLL)
        raise AssertionError(f"the relay did not publish position {last} in time")
    finally:
        await nc.close()


async def time_raw(url: str, count: int, payload_size: float, subject_size: float) -> Timed:
    """nats-py alone: ``count`` messages published with ``publish_async`` in windows of
    ``RAW_WINDOW`` gathered; first to last message by the server's timestamps."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="RAWBENCH", subjects=["rawbench.>"], retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE, num_replicas=1, duplicate_window=120.0,
            )
        )  # fmt: skip
        cpu = time.process_time()
        prefix = "rawbench.v1.evt.agency.case."
        subject = prefix + "e" * max(round(subject_size) - len(prefix), 1)
        payload = b"p" * round(payload_size)
        for first in range(0, count + 1, RAW_WINDOW):
            futures = [
                await js.publish_async(
                    subject,
                    payload,
                    stream="RAWBENCH",
                    headers={
                        MSG_ID_HEADER: f"0123456789abcdef:{i + 1}",
                        PREVIOUS_POSITION_HEADER: str(i),
                        EXPECTED_LAST_SEQUENCE_HEADER: str(i),
                    },
                )
                for i in range(first, min(first + RAW_WINDOW, count + 1))
            ]
            await asyncio.gather(*futures)
        cpu_us = (time.process_time() - cpu) / (count + 1) * 1e6
        return Timed(count, await _server_span(js, "RAWBENCH", count + 1), cpu_us)
    finally:
        await nc.close()


def test_relay_backlog(store_url: str, tmp_path: Path, before_tree: Path) -> None:
    kind = store_kind(store_url)
    trees = {"before": before_tree, "after": REPO}
    pristine = tmp_path / "pristine"
    if kind == "sqlite":
        store_url = f"sqlite:///{pristine / 'events.sqlite3'}"
    last, written = write_backlog(pristine, store_url)
    rates: dict[str, list[Timed]] = {"before": [], "after": [], "raw": []}
    shape = (1.0, 1.0)
    load = os.getloadavg()[0]
    print(f"\nrelay backlog on {kind}: demo load to position {last} written in {written:.0f} s")
    print(
        f"{'round':>5}  {'who':<26}{'messages':>10}{'seconds':>9}{'msgs/s':>10}{'CPU us/msg':>12}"
    )
    order = ["before", "after", "raw"]
    for r in range(ROUNDS):
        for who in order[r % 3 :] + order[: r % 3]:
            run = tmp_path / f"r{r}-{who}"
            server = EmbeddedNats(run / "nats").start()
            try:
                if who == "raw":
                    count = rates["after"][-1].messages if rates["after"] else last
                    timed = asyncio.run(time_raw(server.url, count, *shape))
                else:
                    data_dir = run / "data"
                    shutil.copytree(pristine, data_dir)
                    store = store_url
                    if kind == "sqlite":
                        store = f"sqlite:///{data_dir / 'events.sqlite3'}"
                    reset_relay_position(store)
                    env = _env(
                        trees[who], CBCM_DATA_DIR=str(data_dir), CBCM_EVENT_STORE=store,
                        CBCM_NATS_URL=server.url, CBCM_LOG_FORMAT="json",
                    )  # fmt: skip
                    with (run / "relay.log").open("ab") as out:
                        process = subprocess.Popen(
                            [sys.executable, "-m", "services.cli", "relay"],
                            cwd=trees[who], env=env, stdout=out, stderr=subprocess.STDOUT,
                        )  # fmt: skip
                    try:
                        timed, payload, subject = asyncio.run(time_relay(process, server.url, last))
                        shape = (payload, subject)
                    finally:
                        process.terminate()
                        process.wait(30)
                rates[who].append(timed)
                print(
                    f"{r + 1:>5}  {who:<26}{timed.messages:>10}"
                    f"{timed.seconds:>9.2f}{timed.rate:>10.0f}{timed.cpu_us:>12.1f}"
                )
            finally:
                server.stop()
    if rates["before"] and rates["after"]:
        assert rates["before"][0].messages == rates["after"][0].messages, "the relays differ"
    median = {who: statistics.median(t.rate for t in timings) for who, timings in rates.items()}
    print(
        f"medians: before {median['before']:.0f}/s, after {median['after']:.0f}/s, nats-py "
        f"{median['raw']:.0f}/s; ratios to nats-py: before {median['before'] / median['raw']:.2f}, "
        f"after {median['after'] / median['raw']:.2f}; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    cpu = {who: statistics.median(t.cpu_us for t in timings) for who, timings in rates.items()}
    own = statistics.median(t.cpu_own_us for t in rates["after"])
    half = max(own, cpu["after"] - own)
    print(
        f"after #16: {own:.0f} us of it in the publishing process, {cpu['after'] - own:.0f} us in "
        f"its translating process (none: it translates in a thread); on two cores to itself the "
        f"slower half sets the rate: nats-py / {half:.0f} us = {cpu['raw'] / half:.2f}"
    )
    print(
        f"CPU per message (medians): before {cpu['before']:.0f} us, after {cpu['after']:.0f} us, "
        f"nats-py {cpu['raw']:.0f} us; ratios (nats-py / relay): before "
        f"{cpu['raw'] / cpu['before']:.2f}, after {cpu['raw'] / cpu['after']:.2f} (what one core "
        "to itself would give, whatever the load)"
    )
    for who, name in (("before", f"before #16 ({BEFORE_COMMIT})"), ("after", "after #16")):
        record(
            Figure(
                BENCH,
                f"relay backlog CPU per message, {name}",
                kind,
                cpu[who],
                "us",
                baseline=cpu["raw"],
                baseline_name="nats-py publish_async alone, same messages (CPU per message)",
                better="lower",
            )
        )
    for who, name in (("before", f"before #16 ({BEFORE_COMMIT})"), ("after", "after #16")):
        record(
            Figure(
                BENCH,
                f"relay backlog publish rate, {name}",
                kind,
                median[who],
                "msgs/s",
                baseline=median["raw"],
                baseline_name=(
                    f"nats-py publish_async alone, windows of {RAW_WINDOW} (median of {ROUNDS})"
                ),
                target=TARGET if who == "after" else None,
            )
        )
