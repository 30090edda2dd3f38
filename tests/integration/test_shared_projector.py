"""Several instances of a projection service on one durable consumer and one read model
(issue #7): a real nats-server, the real relay and every instance a real process.

Three ``cbcm project stats`` and three instances of a read model that keeps one row per
application (``tests/fault/applied_log.py``, run by the same projector runner) work while
intake walks demo cases into the store (SQLite) and the relay publishes them. One instance
of each read model is active, the two others stand by. Once each read model has applied a
good part of the stream, its active instance is SIGKILLed at a random moment of its work;
a standby takes over and the others carry on.

Then every event is applied exactly once and in store order (the applied log has one row per
stream message, in stream order, written by more than one process), the statistics equal a
fresh rebuild, the stream is the store, and the survivors stop cleanly on SIGTERM.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.nats.server import EmbeddedNats, free_port
from services.projector.runner import read_model_path, read_position
from services.settings import Settings
from tests.fault.applied_log import applications
from tests.fault.stack import (
    Service,
    check_stream_is_store,
    rebuild_and_compare,
    service_env,
    tail,
    wait_until,
)

START = datetime(2025, 9, 1, tzinfo=UTC)
TARGET_EVENTS = 2_400
"""Intake stops once the store holds at least this many events (and ``AFTER_KILLS``)."""
KILL_AT = 700
"""The active instance is killed once its read model has applied this position ..."""
AFTER_KILLS = 400
"""... and intake goes on for at least this many events after the kills."""
INSTANCES = 3
SEED = 20260307


class Walk(threading.Thread):
    """Demo cases walked into the store, ten at a time, until told to stop."""

    def __init__(self, app: ComplaintMechanism) -> None:
        super().__init__(name="intake", daemon=True)
        self.app = app
        self.error: BaseException | None = None
        self.stop_when = threading.Event()

    def stored(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def run(self) -> None:
        try:
            rng = random.Random(SEED)
            build_demo_network(self.app, START)
            while not self.stop_when.is_set():
                walk_cases(self.app, 10, rng, START + timedelta(hours=1))
        except BaseException as e:
            self.error = e


def active(group: list[Service]) -> Service | None:
    """The one instance whose current run took the lease, if exactly one did."""
    holding = [s for s in group if s.running() and s.logged("projector.active")]
    return holding[0] if len(holding) == 1 else None


@pytest.mark.fault  # SIGKILLs services under load, seven processes: `make fault`, like tests/fault
def test_instances_sharing_a_consumer_apply_each_event_once_in_order_when_the_active_is_killed(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    server = EmbeddedNats(tmp_path / "nats").start()
    store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    # every service is also given a server that is down, as a cluster node may be
    servers = f"nats://127.0.0.1:{free_port()},{server.url}"
    env = service_env(CBCM_DATA_DIR=str(data_dir), CBCM_EVENT_STORE=store, CBCM_NATS_URL=servers)
    applied = read_model_path(data_dir, "applied")
    groups = {
        "stats": [
            Service(f"stats-{i}", ["project", "stats"], env, logs, working="projector.batch")
            for i in range(INSTANCES)
        ],
        "applied": [
            Service(
                f"applied-{i}",
                [str(applied), servers],
                env,
                logs,
                working="projector.batch",
                command=[sys.executable, "-m", "tests.fault.applied_log"],
            )
            for i in range(INSTANCES)
        ],
    }
    paths = {"stats": read_model_path(data_dir, "stats"), "applied": applied}
    relay = Service("relay", ["relay"], env, logs, working="relay.resuming")
    services = [relay, *groups["stats"], *groups["applied"]]
    app = complaint_mechanism(Settings(data_dir=data_dir, event_store=store))
    walk = Walk(app)
    killed: dict[str, Service] = {}

    def watch() -> None:
        if walk.error is not None:
            raise AssertionError(f"intake failed: {walk.error!r}") from walk.error
        for service in services:
            if service not in killed.values():
                service.check_alive()

    try:
        # given three instances of each read model on its durable consumer, and the relay
        for service in services:
            service.start()
        walk.start()
        for name, group in groups.items():
            wait_until(lambda g=group: active(g), 60, f"one active {name} instance", watch)
            wait_until(
                lambda g=group: sum(s.logged("projector.standby") for s in g) == INSTANCES - 1,
                30,
                f"{INSTANCES - 1} {name} instances standing by",
                watch,
            )

        # when the active instance of each is SIGKILLed at a random moment of its work
        killed_at: dict[str, int] = {}
        for name, group in groups.items():
            wait_until(
                lambda n=name: read_position(paths[n]) >= KILL_AT, 60, f"{name} at {KILL_AT}", watch
            )
            victim = active(group)
            assert victim is not None and victim.is_working()
            time.sleep(rng.uniform(0.0, 0.3))  # a random moment of its run
            victim.kill()
            killed[name] = victim
            killed_at[name] = read_position(paths[name])

        # then a standby of each takes over and the stream is applied to its end
        for name, group in groups.items():
            survivors = [s for s in group if s is not killed[name]]
            wait_until(lambda g=survivors: active(g), 15, f"a {name} standby to take over", watch)
        after = walk.stored() + AFTER_KILLS
        wait_until(
            lambda: walk.stored() >= max(TARGET_EVENTS, after), 120, "intake after the kills", watch
        )
        walk.stop_when.set()
        walk.join(60)
        watch()
        stored = [
            n.id
            for n in app.recorder.select_notifications(1, 1_000_000)
            if is_published(app.mapper.to_domain_event(n))
        ]
        last = stored[-1]
        assert all(at < last for at in killed_at.values()), "a kill came after the catch-up"
        try:
            wait_until(
                lambda: all(read_position(p) >= last for p in paths.values()),
                60,
                "every read model at the last position",
                watch,
                0.2,
            )
        except AssertionError as e:
            tails = "\n".join(f"--- {s.name}:\n{tail(s.log, 10)}" for s in services)
            where = {n: read_position(p) for n, p in paths.items()}
            raise AssertionError(f"{e}; last {last}, read models at {where}\n{tails}") from None
        check_stream_is_store(server.url, stored)

        # and each event was applied exactly once, in store order, by more than one process
        rows = applications(applied)
        twice = [p for p, n in Counter(p for p, _ in rows).items() if n > 1][:5]
        assert not twice, f"applied more than once: {twice}"
        assert [p for p, _ in rows] == stored
        by = Counter(pid for _, pid in rows)
        assert killed["applied"].pid in by and len(by) >= 2, by

        # and the survivors stop cleanly; the statistics equal a fresh rebuild
        for service in services:
            if service not in killed.values():
                assert service.terminate() == 0, f"{service.name}:\n{tail(service.log)}"
        rebuild_and_compare(env, {"stats": paths["stats"]}, tmp_path, logs, last)
        print(
            f"\n{len(stored)} events; killed at {killed_at}; applied by {dict(by)}; "
            f"relay starts {relay.starts}"
        )
    finally:
        for service in services:
            service.reap()
        walk.stop_when.set()
        walk.join(30)
        app.close()
        server.stop()
