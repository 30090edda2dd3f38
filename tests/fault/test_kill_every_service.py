"""Every service SIGKILLed in turn under load (issue #7): nothing lost, nothing twice.

The stack of ``cbcm serve`` as separate real processes, each restarted by the test after it
is killed (as the supervisor would): the relay, the three projectors, the HTTP API, the
audit checkpoint publisher and the witness, on a real nats-server and the event store on a
real PostgreSQL. Concurrent clients send complaints and each accepted case's assessment
over HTTP the whole time, every command with its own Idempotency-Key, sent again with the
same key after a 503 or a connection error until accepted.

Each service in turn, at a random moment while it is at work, is SIGKILLed and kept down
until intake has gone on without it (the API excepted: its clients retry), then started
again and must be back at work. At the end: every command accepted exactly once (with its
key's record), nothing but 2xx and well-formed 503 answered, every read model at the
store's last published position and equal to a fresh rebuild, the stream the store, and
the hash chain verified against the checkpoints the witness kept across the kills.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
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

CLIENTS = 6
BETWEEN = 40
"""Commands accepted while a service is at work, before it is killed."""
WITHOUT = 20
"""Commands accepted while a service (not the API) is down, before it is started again."""
AFTER = 60
"""Commands accepted after the last restart."""
SEED = 20260311


def test_every_service_killed_in_turn_under_load_loses_nothing_and_records_nothing_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    server = EmbeddedNats(tmp_path / "nats").start()
    settings = Settings(data_dir=data_dir, event_store=postgres_url)
    app = complaint_mechanism(settings)
    build_network(app)  # the registry the clients' commands need
    address = f"127.0.0.1:{free_port()}"
    base = f"http://{address}"
    env = service_env(
        CBCM_DATA_DIR=str(data_dir),
        CBCM_EVENT_STORE=postgres_url,
        CBCM_NATS_URL=server.url,
        CBCM_HTTP_ADDR=address,
        CBCM_CHECKPOINT_SECONDS="1",
        CBCM_CHECKPOINT_EVENTS="100",
    )

    def api_ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    services = {
        "relay": Service("relay", ["relay"], env, logs, working="relay.resuming"),
        **{
            f"project-{name}": Service(
                f"project-{name}", ["project", name], env, logs, working="projector.batch"
            )
            for name in READ_MODELS
        },
        "api": Service("api", ["api"], env, logs, working="", ready=api_ready),
        "audit-checkpoint": Service(
            "audit-checkpoint",
            ["audit", "checkpoint"],
            env,
            logs,
            working="audit.checkpoint_published",
        ),
        "audit-witness": Service(
            "audit-witness", ["audit", "witness"], env, logs, working="audit.checkpoint_witnessed"
        ),
    }
    intake = Intake(base, data_dir, clients=CLIENTS, retry=True)
    downtime: dict[str, float] = {}

    def watch() -> None:
        intake.check()
        for service in services.values():
            service.check_alive()

    def accepted() -> int:
        return len(intake.accepted())

    try:
        for service in services.values():
            service.start()
        wait_until(services["api"].is_working, 90, "the API to be ready", watch)
        intake.start()

        for name, victim in services.items():
            # given the service at work while commands flow
            wait_until(victim.is_working, 60, f"{name} at work", watch)
            before = accepted()
            wait_until(lambda b=before: accepted() >= b + BETWEEN, 60, "intake", watch)
            time.sleep(rng.uniform(0.0, 0.3))  # a random moment of its work
            # when it is SIGKILLed
            with victim.down():
                victim.kill()
                killed_at = time.monotonic()
                if name == "api":
                    time.sleep(rng.uniform(0.2, 1.0))  # clients meet connection errors
                else:
                    # then intake goes on without it
                    now = accepted()
                    wait_until(
                        lambda n=now: accepted() >= n + WITHOUT,
                        60,
                        f"intake while {name} is down",
                        intake.check,
                    )
                victim.start()
            # and it is back at work once started again
            wait_until(victim.is_working, 60, f"{name} at work again", watch)
            downtime[name] = time.monotonic() - killed_at
        last_start = accepted()
        wait_until(lambda: accepted() >= last_start + AFTER, 60, "intake after the kills", watch)
        intake.finish()
        intake_done = time.monotonic()

        # then every command was accepted once, and nothing but 2xx and 503 was answered
        answers = Counter(s for c in intake.commands for _, s in c.answers)
        statuses = {s for s in answers if isinstance(s, int)}
        assert statuses <= {200, 201, 503}, answers
        problems = [p for c in intake.commands for p in c.problems]
        assert not problems, problems[:5]
        contents = store_contents(app)
        wrong = check_accepted_once(intake.commands, contents)
        assert not wrong, f"{len(wrong)} commands recorded wrongly: {wrong[:5]}"
        last = contents.published[-1]

        # and every read model reaches the store's last published position
        paths = {name: read_model_path(data_dir, name) for name in READ_MODELS}
        try:
            wait_until(
                lambda: all(read_position(p) >= last for p in paths.values()),
                90,
                "every read model at the last position",
                watch,
                0.2,
            )
        except AssertionError as e:
            where = {name: read_position(p) for name, p in paths.items()}
            tails = "\n".join(f"--- {s.name}:\n{tail(s.log, 10)}" for s in services.values())
            raise AssertionError(f"{e}; last {last}, read models at {where}\n{tails}") from None
        caught_up = time.monotonic() - intake_done

        # and the stream is the store
        check_stream_is_store(server.url, contents.published)

        # and the witness has kept a checkpoint of this run's head, or near it
        wait_until(
            lambda: services["audit-witness"].logged("audit.checkpoint_witnessed"),
            30,
            "a checkpoint witnessed",
            watch,
        )

        # and every service stops cleanly on SIGTERM (uvicorn re-raises the signal it caught)
        for service in services.values():
            clean = {0, -signal.SIGTERM} if service.name == "api" else {0}
            code = service.terminate()
            assert code in clean, f"{service.name} exited with {code}:\n{tail(service.log)}"

        # and each read model equals a fresh rebuild
        rebuild_and_compare(env, paths, tmp_path, logs, last)

        # and the hash chain verifies against the witness's checkpoints
        code = run_cbcm(["audit", "verify"], env, logs / "verify.log")
        assert code == 0, tail(logs / "verify.log")

        print(
            f"\n{len(intake.commands)} commands ({len(intake.accepted('intake'))} complaints), "
            f"answers {dict(answers)}, {len(contents.published)} events published; down "
            + ", ".join(f"{n} {d:.1f}s" for n, d in downtime.items())
            + f"; caught up {caught_up:.1f}s after intake; total {time.monotonic() - began:.0f}s"
        )
    finally:
        intake.abandon()
        for service in services.values():
            service.reap()
        app.close()
        server.stop()
