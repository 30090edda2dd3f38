"""PostgreSQL restarted under load (issue #7): the API answers 503, recovers, writes nothing
partly.

A PostgreSQL server of this test's own holds the event store; ``cbcm api`` (uvicorn) runs as
a real process on it. Concurrent clients send complaints and each accepted case's assessment,
every command with its own Idempotency-Key and never retried (so that what was refused stays
refused). The server is stopped twice under that load, once with ``pg_ctl stop -m fast``
(sessions terminated, transactions rolled back) and once with ``-m immediate`` (as a crash:
recovery from the WAL on the next start), each time kept down until the clients have met
the outage, then started again.

While it is down the API answers ``503`` problem+json with ``Retry-After``, never a 500 and
never a hang; once it is back the API answers 2xx again without being restarted. At the end
every command answered 2xx is in the store exactly once (with its key's record), every other
recorded nothing, and the hash chain verifies. The relay and the three projectors run through
it all as processes (they wait the outage out): the stream is then the store, and each read
model equals a fresh rebuild.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats, free_port
from services.projector.runner import read_model_path, read_position
from services.settings import Settings
from tests.api_world import build_network
from tests.fault.stack import (
    READ_MODELS,
    Intake,
    OwnPostgres,
    Service,
    check_accepted_once,
    check_stream_is_store,
    rebuild_and_compare,
    run_cbcm,
    service_env,
    store_contents,
    tail,
    wait_until,
)

pytestmark = pytest.mark.fault

CLIENTS = 8
BEFORE = 150
"""Commands accepted before each outage."""
DURING = 40
OUTAGE = 3.0
"""The server stays down until the clients have met this many 503 answers, and for at least
this many seconds."""
AFTER = 150
"""Commands accepted after each recovery before the next step."""
RECOVERY = 10.0
"""Seconds the API gets, once the server accepts connections, to answer 2xx again."""
SETTLED = 2.0
"""After the first 2xx of a recovery, every answer this much later must be 2xx."""


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    # Not under pytest's tmp_path: the server runs as another user when we are root.
    home = Path(tempfile.mkdtemp(prefix="cbcm-fault-pg-"))
    server = OwnPostgres(home)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(home, ignore_errors=True)


def accepted_since(intake: Intake, moment: float) -> int:
    return sum(1 for s in intake.answers_since(moment) if isinstance(s, int) and s < 300)


def test_the_api_answers_503_while_postgres_restarts_and_records_nothing_partly(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    store = own_postgres.url
    settings = Settings(data_dir=data_dir, event_store=store)
    app = complaint_mechanism(settings)
    build_network(app)  # the registry the clients' commands need
    app.close()
    address = f"127.0.0.1:{free_port()}"
    nats_server = EmbeddedNats(tmp_path / "nats").start()
    env = service_env(
        CBCM_DATA_DIR=str(data_dir),
        CBCM_EVENT_STORE=store,
        CBCM_HTTP_ADDR=address,
        CBCM_NATS_URL=nats_server.url,
    )
    api = Service("api", ["api"], env, logs, working="")
    flow = [
        Service("relay", ["relay"], env, logs, working="relay.resuming"),
        *(
            Service(f"project-{name}", ["project", name], env, logs, working="projector.batch")
            for name in READ_MODELS
        ),
    ]
    base = f"http://{address}"

    def ready() -> bool:
        try:
            status = httpx.get(f"{base}/status", timeout=5).json()
            return bool(status["event_store"]["reachable"])
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    intake = Intake(base, data_dir, clients=CLIENTS, retry=False)
    windows: list[dict[str, float]] = []

    def watch() -> None:
        api.check_alive()
        intake.check()
        for service in flow:
            service.check_alive()

    try:
        for service in flow:
            service.start()
        api.start()
        wait_until(ready, 60, "the API to be ready", watch)
        intake.start()
        began = time.monotonic()
        wait_until(lambda: accepted_since(intake, began) >= BEFORE, 60, "intake", watch)

        for mode in ("fast", "immediate"):
            # given commands flowing, when PostgreSQL stops
            stopped = time.monotonic()
            own_postgres.stop(mode)
            wait_until(
                lambda s=stopped: (
                    intake.answers_since(s).count(503) >= DURING and time.monotonic() - s >= OUTAGE
                ),
                60,
                f"{DURING} answers 503 during the outage ({mode})",
                watch,
            )
            # and starts again
            own_postgres.start()
            up = time.monotonic()
            first_ok = wait_until(
                lambda u=up: _first_accepted(intake, u), RECOVERY, f"a 2xx after {mode}", watch
            )
            wait_until(
                lambda u=up: accepted_since(intake, u) >= AFTER,
                60,
                f"intake after the {mode} restart",
                watch,
            )
            late = [s for s in intake.answers_since(first_ok + SETTLED) if s not in (200, 201)]
            assert not late, f"after recovering from {mode}, still answered {Counter(late)}"
            unavailable = [
                t for c in intake.commands for t, s in c.answers if s == 503 and t >= stopped
            ]
            windows.append(
                {
                    "down_s": up - stopped,
                    "first_503_after_stop_s": min(unavailable) - stopped,
                    "503_window_s": max(unavailable) - min(unavailable),
                    "first_2xx_after_start_s": first_ok - up,
                    "answered_503": len(unavailable),
                }
            )
        intake.finish()

        # then the API never answered anything but 2xx or 503, and each 503 as a problem
        answers = Counter(s for c in intake.commands for _, s in c.answers)
        assert set(answers) <= {200, 201, 503}, answers
        problems = [p for c in intake.commands for p in c.problems]
        assert not problems, problems[:5]
        # and a command the API could not tell about ("outcome unknown": the server went
        # away during its commit) is accepted when sent again with its key
        unknown = intake.settle()
        assert all(c.accepted for c in unknown), [c.answers for c in unknown if not c.accepted]
        assert api.starts == 1 and api.running(), "the API was restarted"
        # (uvicorn shuts down, then re-raises the signal it caught)
        assert api.terminate() in (0, -signal.SIGTERM), tail(api.log)

        # and every accepted command is in the store once, every refused one not at all
        app = complaint_mechanism(settings)
        try:
            contents = store_contents(app)
        finally:
            app.close()
        wrong = check_accepted_once(intake.commands, contents)
        assert not wrong, f"{len(wrong)} commands recorded wrongly: {wrong[:5]}"
        # and the hash chain verifies
        code = run_cbcm(["audit", "verify", "--no-checkpoints"], env, logs / "verify.log")
        assert code == 0, tail(logs / "verify.log")

        # and the relay and the projectors, which waited the outages out, caught up: the
        # stream is the store, and each read model equals a fresh rebuild
        last = contents.published[-1]
        paths = {name: read_model_path(data_dir, name) for name in READ_MODELS}
        wait_until(
            lambda: all(p.exists() and read_position(p) >= last for p in paths.values()),
            90,
            "every read model at the last position",
            lambda: [service.check_alive() for service in flow],
        )
        check_stream_is_store(nats_server.url, contents.published)
        for service in flow:
            code = service.terminate()
            assert code == 0, f"{service.name} exited with {code}:\n{tail(service.log)}"
        rebuild_and_compare(env, paths, tmp_path, logs, last)

        print(
            f"\n{len(intake.commands)} commands, answers {dict(answers)} "
            f"({len(unknown)} of unknown outcome, settled), "
            f"{len(contents.published)} events published; outages: "
            + "; ".join(
                f"{mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in w.items())
                for mode, w in zip(("fast", "immediate"), windows, strict=True)
            )
        )
    finally:
        intake.abandon()
        api.reap()
        for service in flow:
            service.reap()
        nats_server.stop()


def _first_accepted(intake: Intake, moment: float) -> float | None:
    times = [
        t
        for c in intake.commands
        for t, s in c.answers
        if t >= moment and isinstance(s, int) and 200 <= s < 300
    ]
    return min(times) if times else None
