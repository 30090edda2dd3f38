"""A country's history (issue #16): relay catch-up, read-model rebuilds and reads at the size
of a decade of a country's complaints, each next to a baseline measured in the same run.

The store: ``CBCM_BENCH_EVENTS`` events (default 50,000; ``--quick``: 20,000; the issue's
country-decade: 3,000,000) written by ``tests.bench.country``: real cases walked by the
application, replicated with fresh ids over ten years, through the production encoder and
recorder (sealed personal data, hash chain, writer marks, tiles). ``CBCM_BENCH_COUNTRY_CACHE``
names a directory where it is kept for later runs (3 million events: about 2 GB); each run
works on a copy, so that every relay starts from zero. ``CBCM_BENCH_COUNTRY_STREAM`` names a
directory where the nats-server's JetStream files are kept (one directory per size): a run
that finds there a stream ending at the store's last published position skips the relay
(its figures are then not measured) and rebuilds from that stream; for repeated rebuild
measurements, with the same ``CBCM_BENCH_COUNTRY_CACHE``.

Then, with an embedded nats-server:

- *relay catch-up*: ``cbcm relay`` (a process, as in production) publishes the whole store
  from zero into ``CBCM_EVENTS``; timed by the server's timestamps of the first and the last
  message (start-up left out; from the process's start also printed). The issue's bound:
  under 3 minutes for 3 million. Baseline: nats-py ``publish_async`` alone, windows of 500
  gathered, messages of the stream's average sizes with the relay's headers, to a fresh
  stream of the same server (``min(messages, 200,000)``: a rate, the baseline the time it
  would take for every message).
- *rebuilds*: each read model ``cbcm projections rebuild`` covers (inbox, assistance, stats,
  register), from the whole stream, into a SQLite file and into PostgreSQL schemas
  (``CBCM_TEST_POSTGRES_URL`` or the embedded server), alternating; the issue's bound: each
  under 3 minutes. Baseline: nats-py reading the stream alone as a rebuild reads it (a pull
  consumer of its own, one raw pull request of a batch at a time, the messages gathered by
  the subscription's callback: ``services.projector.replay.PullReader``), nothing decoded or
  applied; the first 200,000 messages: a rate, the baseline the time it would take for every
  message. (Until ADR 28's pull reading, the rebuild read, and the baseline was, an ordered
  push consumer read by ``next_msg``; that reading, and nats-py's ``PullSubscription.fetch``,
  are printed beside it for comparison, not recorded.)
- *reads*: ``cbcm api`` (a process) over those read models, SQLite then PostgreSQL; one client,
  one request at a time: an agency's inbox (``GET /v1/inbox/{agency}``, each agency in turn,
  as its focal point: its first page, the API's default of 50 cases; and, as another figure,
  every page of a walk to the inbox's end following ``next``, each page a request), one
  case's inbox row (``GET /v1/inbox/cases/{id}``) and the case
  itself (``GET /v1/cases/{id}``, from the event store, its personal data read recorded as
  in production) for cases of those inboxes; p50 and p99 of each. The issue's bound: p99
  under 50 ms. Baseline: ``GET /healthz`` through the same client and server, interleaved
  (the HTTP path's floor).

The load average is printed with every part (the machine is shared). Figures are printed and
recorded for ``cbcm bench``, never asserted; the checks are that the relay published every
published position and that each rebuild reached it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.subjects import EVENT_SUBJECTS, STREAM
from domain.actors import Role
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.demo.network import AGENCIES
from services.identity.tokens import issue_token
from services.nats.server import EmbeddedNats, free_port
from services.projector import projection_named
from services.projector.replay import PullReader, rebuild_consumer_config
from services.projector.runner import rebuild
from services.projector.storage import read_model_store
from services.settings import Settings
from tests.bench import test_relay_backlog as backlog
from tests.bench.country import Generated, country_store
from tests.bench.results import Figure, Target, quick, record
from tests.bench.test_event_flow import CBCM, Timed, pct
from tests.read_model_places import Places

pytestmark = pytest.mark.bench

EVENTS = int(os.environ.get("CBCM_BENCH_EVENTS", "20000" if quick() else "50000"))
READ_MODELS = tuple(
    name
    for name in os.environ.get(
        "CBCM_BENCH_COUNTRY_READ_MODELS", "inbox,assistance,stats,register"
    ).split(",")
    if name
)
"""The read models rebuilt (a 3-million run on a shared machine may take one or two; none,
``CBCM_BENCH_COUNTRY_READ_MODELS=``: the relay's catch-up alone, no rebuild and no reads)."""
BACKENDS = tuple(os.environ.get("CBCM_BENCH_COUNTRY_BACKENDS", "sqlite,postgres").split(","))
"""The read models' databases: rebuilt into, then read through the API."""
REQUESTS = int(os.environ.get("CBCM_BENCH_COUNTRY_REQUESTS", "100" if quick() else "300"))
"""Requests of each kind per read-model backend (0: the reads are not measured)."""
WALKS = int(os.environ.get("CBCM_BENCH_COUNTRY_WALKS", "-1"))
"""How many of the ``REQUESTS`` rounds also walk an inbox to its end (-1, the default: every
round; a walk is about 90 pages at 3 million events, so 0 makes a reads run minutes
shorter, without the walk's figure)."""
STREAM_KEPT = os.environ.get("CBCM_BENCH_COUNTRY_STREAM")
"""Where the published stream is kept between runs (the module docstring)."""
READS = {
    "inbox": "inbox, first page",
    "inbox walk": "inbox, each page of a walk",
    "inbox case": "inbox case",
    "case": "case",
}
"""The reads timed, as the figures name them (an inbox page: the API's default size, 50)."""
RAW_MAX = 200_000
THREE_MINUTES = Target("value", "<", 180.0)
FIFTY_MS = Target("value", "<", 50.0)


def size_label(events: int) -> str:
    return f"{events / 1e6:g}M events" if events >= 1_000_000 else f"{events:,} events"


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def last_published(settings: Settings) -> int:
    """The position of the store's last published event (what the relay must reach)."""
    app = complaint_mechanism(settings)
    try:
        position = app.recorder.max_notification_id() or 0
        while position > 0:
            first = max(1, position - 999)
            for n in reversed(app.recorder.select_notifications(first, 1000, stop=position)):
                if is_published(app.mapper.to_domain_event(n)):
                    return int(n.id)
            position = first - 1
        return 0
    finally:
        app.close()


def _process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([CBCM, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    where = Path(STREAM_KEPT) / f"country-{EVENTS}" if STREAM_KEPT else tmp_path / "nats"
    server = EmbeddedNats(where).start()
    try:
        yield server
    finally:
        server.stop()


def catch_up(
    data: Path, store: str, env: dict[str, str], url: str, last: int, log: Path
) -> tuple[backlog.Timed, float, float, float]:
    """The relay from zero: its timing (server timestamps), seconds from its start, and the
    stream's average payload and subject sizes."""
    backlog.RUN_TIMEOUT = 3600.0  # a country's backlog takes longer than the demo's
    began = time.perf_counter()
    process = _process(["relay"], env, log)
    try:
        timed, payload, subject = asyncio.run(backlog.time_relay(process, url, last))
        from_start = time.perf_counter() - began
    finally:
        _stop(process)
    return timed, from_start, payload, subject


async def consume_alone(url: str, sample: int, how: str) -> tuple[Timed, int]:
    """nats-py reading the stream alone, its first ``sample`` messages (a rate), nothing
    decoded or applied, and the stream's message count. ``how``: ``pull`` as a rebuild reads
    it (``PullReader``, batches of 512), ``fetch`` (nats-py's ``PullSubscription.fetch`` of
    512 on a pull consumer), ``ordered`` (an ordered push consumer read by ``next_msg``, as
    rebuilds read before ADR 28's pull reading)."""
    import nats as nats_py  # noqa: PLC0415
    from nats.js.api import DeliverPolicy  # noqa: PLC0415

    nc = await nats_py.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM)).state
        last = min(state.last_seq, state.first_seq + sample - 1)
        began = time.perf_counter()
        count = 0
        seq = state.first_seq - 1
        if how == "ordered":
            sub = await js.subscribe(
                EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )  # fmt: skip
            while seq < last:
                msg = await sub.next_msg(timeout=10)
                seq = msg.metadata.sequence.stream
                count += 1
            await sub.unsubscribe()
        elif how == "fetch":
            name = "bench-fetch-alone"
            await js.add_consumer(STREAM, rebuild_consumer_config(name))
            pull = await js.pull_subscribe_bind(name, stream=STREAM)
            while seq < last:
                msgs = await pull.fetch(min(512, last - seq), timeout=10)
                seq = msgs[-1].metadata.sequence.stream
                count += len(msgs)
            await pull.unsubscribe()
            await js.delete_consumer(STREAM, name)
        else:
            reader = PullReader(nc, "bench-pull-alone", batch=512)
            await reader.open()
            try:
                while seq < last:
                    msgs = await reader.fetch(min(512, last - seq))
                    seq = msgs[-1].metadata.sequence.stream
                    count += len(msgs)
            finally:
                await reader.close()
        seconds = time.perf_counter() - began
        return Timed(count, seconds), int(state.messages)
    finally:
        await nc.close()


async def stream_last_position(url: str) -> int | None:
    """The position of the stream's last message (``None``: no stream, or empty)."""
    import nats as nats_py  # noqa: PLC0415
    import nats.js.errors  # noqa: PLC0415

    nc = await nats_py.connect(url)
    try:
        js = nc.jetstream()
        try:
            state = (await js.stream_info(STREAM)).state
        except nats.js.errors.NotFoundError:
            return None
        if state.messages == 0:
            return None
        raw = await js.get_msg(STREAM, seq=state.last_seq)
        return int(json.loads(raw.data or b"{}").get("position") or 0)
    finally:
        await nc.close()


def tokens(data: Path) -> dict[str, str]:
    return {
        a.code: issue_token(
            data,
            user=f"fp-{a.code}-1",
            agency=a.code,
            roles=[Role.FOCAL_POINT],
            ttl=timedelta(hours=2),
        )
        for a in AGENCIES
    }


def reads(url: str, secrets: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Latencies (ms) of each kind of read, and of ``/healthz`` interleaved. The inbox is
    read as a client pages it: its first page (``inbox``), and every page of a walk to its
    end, each page a request (``inbox walk``)."""
    out: dict[str, list[float]] = {
        "healthz": [], "inbox": [], "inbox walk": [], "inbox case": [], "case": []
    }  # fmt: skip
    rng = random.Random(16)
    with httpx.Client(base_url=url, timeout=60) as client:

        def timed(kind: str, path: str, token: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            began = time.perf_counter()
            answer = client.get(path, headers=headers)
            if kind:
                out[kind].append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
            return answer.json()

        def walk(code: str, kind: str) -> list[str]:
            """Every page of the agency's inbox, following ``next``: its case ids."""
            page = timed(kind, f"/v1/inbox/{code}", secrets[code])
            found = [i["case_id"] for i in page["items"]]
            while page["next"] is not None:
                page = timed(kind, page["next"], secrets[code])
                found += [i["case_id"] for i in page["items"]]
            assert len(found) == len(set(found)), "a walk listed a case twice"
            return found

        cases: list[tuple[str, str]] = []
        for code in secrets:  # warm-up, and the cases to read (untimed)
            cases += [(code, case_id) for case_id in walk(code, "")]
        assert cases, "no open case in any inbox"
        print(f"inboxes: {len(cases)} open cases over {len(secrets)} agencies")
        codes = list(secrets)
        for i in range(requests):
            code = codes[i % len(codes)]
            timed("healthz", "/healthz", None)
            timed("inbox", f"/v1/inbox/{code}", secrets[code])
            holder, case_id = rng.choice(cases)
            timed("healthz", "/healthz", None)
            timed("inbox case", f"/v1/inbox/cases/{case_id}", secrets[holder])
            timed("case", f"/v1/cases/{case_id}", secrets[holder])
            timed("healthz", "/healthz", None)
            if WALKS < 0 or i < WALKS:
                walk(code, "inbox walk")
    return out


def serve_and_read(
    env: dict[str, str], secrets: dict[str, str], log: Path, requests: int
) -> dict[str, list[float]]:
    port = free_port()
    process = _process(["api"], env | {"CBCM_HTTP_ADDR": f"127.0.0.1:{port}"}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API did not answer"
            time.sleep(0.1)
        return reads(url, secrets, requests)
    finally:
        _stop(process)


def test_a_countrys_history(
    postgres_server_url: str, tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    label = size_label(EVENTS) + (" (quick mode)" if quick() else "")
    print(f"\na country's history: {label}; {load()}")
    made: Generated = country_store(EVENTS, tmp_path / "generated")
    print(
        f"store: {made.events} events, {made.cases} cases ({made.open_cases} left open), "
        + (
            "reused from the cache"
            if made.reused
            else f"template of {made.template_events} events walked in "
            f"{made.template_seconds:.0f} s, replicated at {made.rate:.0f} events/s "
            f"({made.write_seconds:.0f} s); {load()}"
        )
    )
    data = tmp_path / "data"
    began = time.perf_counter()
    shutil.copytree(made.settings.data_dir, data)
    print(f"copied for this run in {time.perf_counter() - began:.0f} s")
    store = f"sqlite:///{data / 'events.sqlite3'}"
    settings = Settings(data_dir=data, event_store=store)
    places = Places("postgres", tmp_path, postgres_server_url)
    pg_settings = Settings(data_dir=data, event_store=store, read_model_store=places.schema_url)
    last = last_published(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")} | {
        "CBCM_DATA_DIR": str(data),
        "CBCM_EVENT_STORE": store,
        "CBCM_NATS_URL": nats_server.url,
        "CBCM_LOG_FORMAT": "json",
    }
    try:
        # ---- relay catch-up from zero, then nats-py alone on a sample (unless the stream
        # was kept by an earlier run: CBCM_BENCH_COUNTRY_STREAM)
        relayed: tuple[backlog.Timed, float, backlog.Timed, str] | None = None
        if asyncio.run(stream_last_position(nats_server.url)) == last:
            print(f"relay skipped: the stream kept in {nats_server.store_dir} ends at {last}")
        else:
            timed, from_start, payload, subject = catch_up(
                data, store, env, nats_server.url, last, tmp_path / "relay.log"
            )
            relay_load = load()
            raw = asyncio.run(
                backlog.time_raw(nats_server.url, min(timed.messages, RAW_MAX), payload, subject)
            )
            relayed = (timed, from_start, raw, relay_load)
            print(
                f"relay catch-up: {timed.messages} messages in {timed.seconds:.1f} s "
                f"({timed.rate:.0f}/s, {timed.cpu_us:.0f} us CPU each, {timed.cpu_own_us:.0f} "
                f"of them in the publishing process; {from_start:.1f} s from the process's "
                f"start); nats-py alone: {raw.rate:.0f}/s ({raw.cpu_us:.0f} us CPU each) on "
                f"{raw.messages}; ratio {timed.rate / raw.rate:.2f}; {relay_load}"
            )

        # ---- rebuilds, alternating backends; nats-py reading the stream alone
        rebuilt: dict[tuple[str, str], tuple[Timed, str]] = {}
        latencies: dict[str, dict[str, list[float]]] = {}
        read_load: dict[str, str] = {}
        reading, reading_cpu, messages = Timed(0, 0.0), 0.0, 0
        if READ_MODELS:
            alone: dict[str, tuple[Timed, float]] = {}
            for how in ("pull", "fetch", "ordered"):
                cpu = time.process_time()
                read, messages = asyncio.run(consume_alone(nats_server.url, RAW_MAX, how))
                alone[how] = (read, (time.process_time() - cpu) / read.messages * 1e6)
                print(
                    f"nats-py reading the stream alone ({how}): {read.rate:.0f}/s, "
                    f"{alone[how][1]:.0f} us CPU each, on {read.messages} of {messages}; "
                    f"{load()}"
                )
            reading, reading_cpu = alone["pull"]
        for name in READ_MODELS:
            for kind, where in (("sqlite", settings), ("postgres", pg_settings)):
                if kind not in BACKENDS:
                    continue
                target = read_model_store(where, name)
                try:
                    began, cpu = time.perf_counter(), time.process_time()
                    reached = asyncio.run(rebuild(projection_named(name), target, nats_server.url))
                    seconds = time.perf_counter() - began
                    cpu_us = (time.process_time() - cpu) / messages * 1e6
                finally:
                    target.close()
                assert reached == last, (name, kind, reached, last)
                at = (
                    f"{cpu_us:.0f} us CPU a message ({cpu_us / reading_cpu:.2f} x nats-py "
                    f"reading alone), {load()}"
                )
                rebuilt[(name, kind)] = (Timed(messages, seconds), at)
                print(
                    f"  {name:<11} on {kind:<9} {seconds:7.1f} s  "
                    f"{messages / seconds:8.0f} msgs/s; {at}"
                )

        # ---- reads through the API (over the read models rebuilt)
        secrets = tokens(data)
        for kind, extra in (
            ("sqlite", {}),
            ("postgres", {"CBCM_READ_MODEL_STORE": places.schema_url}),
        ):
            if kind not in BACKENDS or not READ_MODELS or REQUESTS == 0:
                continue
            latencies[kind] = serve_and_read(
                env | extra, secrets, tmp_path / f"api-{kind}.log", REQUESTS
            )
            read_load[kind] = load()
    finally:
        places.close()

    # ---- report
    print("-" * 100)
    print(f"a country's history, {label} ({made.cases} cases, {made.open_cases} open)")
    record_all(
        made, label, relayed, reading, reading_cpu, rebuilt, latencies, read_load,
    )  # fmt: skip
    print("-" * 100)


def record_all(
    made: Generated,
    label: str,
    relayed: tuple[backlog.Timed, float, backlog.Timed, str] | None,
    reading: Timed,
    reading_cpu: float,
    rebuilt: dict[tuple[str, str], tuple[Timed, str]],
    latencies: dict[str, dict[str, list[float]]],
    read_load: dict[str, str],
) -> None:
    bench = "country's history (#16)"
    big = made.events >= 3_000_000
    if not made.reused:
        record(
            Figure(
                bench,
                f"store generation, {label}",
                "sqlite",
                made.rate,
                "events/s",
                baseline=made.template_events / made.template_seconds,
                baseline_name="the template walked through the application (events/s)",
            )
        )
    if relayed is not None:
        timed, from_start, raw, relay_load = relayed
        print(
            f"relay catch-up {timed.seconds:8.1f} s  ({timed.rate:.0f}/s, {timed.cpu_us:.0f} us "
            f"CPU a message; nats-py alone {raw.rate:.0f}/s, {raw.cpu_us:.0f} us; "
            f"{from_start:.1f} s from the process's start; {relay_load})"
        )
        record(
            Figure(
                bench,
                f"relay catch-up from zero, {label} ({timed.cpu_us:.0f} us CPU a message, "
                f"{relay_load})",
                "sqlite",
                timed.seconds,
                "s",
                baseline=timed.messages / raw.rate,
                baseline_name="nats-py publish_async alone at its rate, same messages",
                target=THREE_MINUTES if big else None,
                better="lower",
            )
        )
    for (name, kind), (t, at) in rebuilt.items():
        print(f"{name} rebuild on {kind}: {t.seconds:.1f} s ({t.rate:.0f}/s; {at})")
        record(
            Figure(
                bench,
                f"{name} rebuild, {label} ({at})",
                kind,
                t.seconds,
                "s",
                baseline=t.messages / reading.rate,
                baseline_name=(
                    f"nats-py reading the stream alone as the rebuild reads it (its pull "
                    f"consumer, one pull request of 512 at a time; {reading_cpu:.0f} us CPU a "
                    f"message)"
                ),
                target=THREE_MINUTES if big else None,
                better="lower",
            )
        )
    for kind, kinds in latencies.items():
        floor = pct(kinds["healthz"], 99)
        for what in ("inbox", "inbox walk", "inbox case", "case"):
            if not kinds[what]:
                continue  # no walk asked (CBCM_BENCH_COUNTRY_WALKS=0)
            p50, p99 = pct(kinds[what], 50), pct(kinds[what], 99)
            print(
                f"GET {READS[what]:<28} on {kind:<9} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                f"({len(kinds[what])} requests; /healthz p50 {pct(kinds['healthz'], 50):.1f} "
                f"p99 {floor:.1f} ms; {read_load[kind]})"
            )
            record(
                Figure(
                    bench,
                    f"GET {READS[what]} p99, {label} ({read_load[kind]})",
                    kind,
                    p99,
                    "ms",
                    baseline=floor,
                    baseline_name="GET /healthz p99, same client and server, interleaved",
                    target=FIFTY_MS if big else None,
                    better="lower",
                )
            )
