"""NATS faults under load (issue #7): a three-node JetStream cluster, R3 streams, the relay
and the three projectors as real ``cbcm`` processes, intake through the real application.

- One node stopped mid-stream (SIGKILL of the node leading ``CBCM_EVENTS``): nothing lost,
  and the longest pause between two stored messages is bounded by the election
  (``PAUSE_BOUND``, derived from nats-server's election timeout); the pause is printed.
- Two nodes stopped (no quorum): intake is still accepted into the event store, the relay
  waits, and everything catches up once the nodes are back.

Every run ends with the stream against the store (one message per published position, in
order) and each live read model against a fresh ``cbcm projections rebuild --into``.

Every process gets every node's URL (``CBCM_NATS_URL=a,b,c``, the client's server pool), so
each may be connected to the node that is stopped and must fail over.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.bootstrap import complaint_mechanism
from services.settings import Settings
from tests.fault.cluster import (
    ELECTION_TIMEOUT_MAX,
    NODES,
    PAUSE_BOUND,
    RELAY_MAX_BACKOFF,
    NatsCluster,
    assert_read_models_equal_a_rebuild,
    assert_stream_is_the_store,
    cbcm_env,
    logged_entries,
    longest_pause,
    projector_services,
    published_positions,
    wait_for_read_models,
)
from tests.integration.test_crash_recovery import Intake, Service, _tail, wait_until

pytestmark = pytest.mark.fault

BEFORE_FAULT = 1_000
"""Messages in the stream before the fault ..."""
AFTER_FAULT = 500
"""... and events stored after publishing resumed (or, with two nodes down, during the
outage and again after the nodes are back)."""


@pytest.fixture(params=["postgres", "sqlite"])
def event_store(request: pytest.FixtureRequest) -> str:
    name = "postgres_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(name))


class Run:
    """One fault run: the cluster, intake, the relay and the projectors."""

    def __init__(self, event_store: str, tmp_path: Path) -> None:
        self.began = time.monotonic()
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.cluster = NatsCluster(tmp_path / "nats")
        self.env = cbcm_env(self.data_dir, event_store, self.cluster.url)
        self.relay = Service("relay", ["relay"], self.env, self.logs, working="relay.resuming")
        self.projectors: dict[str, Service] = {}
        self.app = complaint_mechanism(Settings(data_dir=self.data_dir, event_store=event_store))
        self.intake = Intake(self.app, make_holes=False)
        self.down: set[str] = set()

    def services(self) -> list[Service]:
        return [self.relay, *self.projectors.values()]

    def watch(self) -> None:
        self.intake.check()
        for service in self.services():
            service.check_alive()

    def start(self) -> str:
        """Cluster, relay, intake, projectors; until ``BEFORE_FAULT`` messages are in the
        stream. The name of the node leading the stream then."""
        self.cluster.start()
        self.relay.start()
        self.intake.start()
        wait_until(self.relay.is_working, 60, "the relay at work", self.watch)
        self.projectors = projector_services(self.env, self.logs)
        for projector in self.projectors.values():
            projector.start()
        wait_until(
            lambda: all(p.is_working() for p in self.projectors.values()),
            60,
            "every projector at work",
            self.watch,
        )
        wait_until(
            lambda: (self.cluster.stream_count() or 0) >= BEFORE_FAULT,
            120,
            f"{BEFORE_FAULT} messages in the stream",
            self.watch,
        )
        # the leader may have moved meanwhile: the fault goes to whoever leads now
        return wait_until(self.cluster.stream_leader, 30, "the stream's leader", self.watch)

    def finish(self) -> int:
        """Stop intake; wait for the stream and the read models; compare both with the
        store and a rebuild; stop every process cleanly. The number of events."""
        self.intake.stop_when.set()
        self.intake.join(60)
        assert not self.intake.is_alive(), "intake did not stop"
        self.intake.check()
        expected = published_positions(self.app)
        last = expected[-1]
        wait_until(
            lambda: self.cluster.stream_count() == len(expected),
            120,
            lambda: (
                f"{len(expected)} messages in the stream (has {self.cluster.stream_count()})"
                f"\n{_tail(self.relay.log)}"
            ),
            self.watch,
            0.2,
        )
        assert_stream_is_the_store(self.cluster, expected)
        wait_for_read_models(self.data_dir, last, self.services())
        for service in self.services():
            code = service.terminate()
            assert code == 0, f"{service.name} exited with {code}:\n{_tail(service.log)}"
        assert_read_models_equal_a_rebuild(self.data_dir, self.env, self.logs, self.tmp_path, last)
        return len(expected)

    def close(self) -> None:
        self.intake.stop_when.set()
        for service in self.services():
            service.reap()
        self.intake.join(30)
        self.app.close()
        self.cluster.stop()


def test_one_node_stopped_mid_stream_loses_nothing_and_pauses_no_longer_than_an_election(
    event_store: str, tmp_path: Path
) -> None:
    run = Run(event_store, tmp_path)
    try:
        # given intake flowing through the relay to the projectors on a three-node cluster
        leader = run.start()

        # when the node leading the stream is SIGKILLed mid-stream
        at_fault = run.cluster.stream_count() or 0
        run.cluster.stop_node(leader, kill=True)
        stopped = time.monotonic()

        # then publishing resumes on the other two (a new leader elected), intake going on
        resumed_at = wait_until(
            lambda: (count := run.cluster.stream_count() or 0) > at_fault + 100 and count,
            60,
            lambda: (
                f"publishing to resume on two nodes\n--- relay:\n{_tail(run.relay.log)}\n"
                + "\n".join(f"--- {n}:\n{run.cluster.log_tail(n)}" for n in run.cluster.running())
            ),
            run.watch,
        )
        resumed_after = time.monotonic() - stopped
        stored_then = run.intake.stored()
        wait_until(
            lambda: run.intake.stored() >= stored_then + AFTER_FAULT,
            60,
            f"{AFTER_FAULT} more events",
            run.watch,
        )

        # and the node, started again, catches up
        run.cluster.start_node(leader)
        wait_until(run.cluster.stream_replicas_current, 60, "every replica current", run.watch)

        # and nothing is lost or doubled, and the read models equal a rebuild
        events = run.finish()
        pause, after = longest_pause(run.cluster.stream_record())
        print(
            f"\n{event_store.partition(':')[0]}: killed {leader} (stream leader) at "
            f"{at_fault} messages; longest publish pause {pause:.2f}s (before position "
            f"{after}), bound {PAUSE_BOUND:.0f}s (election timeout up to "
            f"{ELECTION_TIMEOUT_MAX:.0f}s); {resumed_at} messages by {resumed_after:.1f}s "
            f"after the kill; {events} events in all; {time.monotonic() - run.began:.1f}s"
        )
        assert pause <= PAUSE_BOUND, f"publishing paused {pause:.1f}s, beyond an election"
    finally:
        run.close()


def test_two_nodes_stopped_intake_goes_on_and_the_relay_catches_up_when_they_return(
    event_store: str, tmp_path: Path
) -> None:
    run = Run(event_store, tmp_path)
    try:
        # given intake flowing on a three-node cluster
        leader = run.start()

        # when two nodes stop (the stream's leader and another): no quorum
        stopped = [leader, next(n for n in NODES if n != leader)]
        for name in stopped:
            run.cluster.stop_node(name)
        stopped_at = run.intake.stored()
        outage_began = time.monotonic()

        # then intake is still accepted into the event store, and the relay waits
        wait_until(
            lambda: run.intake.stored() >= stopped_at + AFTER_FAULT,
            120,
            f"{AFTER_FAULT} events stored during the outage",
            run.watch,
        )

        # (until it has backed off to its longest pause: an outage, not a hiccup)
        def relay_waits_its_longest() -> bool:
            paused = logged_entries(run.relay, "relay.paused")
            return any(entry.get("retry_in", 0) >= RELAY_MAX_BACKOFF for entry in paused)

        wait_until(
            relay_waits_its_longest,
            90,
            lambda: f"the relay to back off to {RELAY_MAX_BACKOFF}s\n{_tail(run.relay.log)}",
            run.watch,
            0.2,
        )
        in_stream = run.cluster.stream_count()
        assert in_stream is None or in_stream < len(published_positions(run.app))
        outage = time.monotonic() - outage_began

        # when the nodes return
        for name in stopped:
            run.cluster.start_node(name)
        back = time.monotonic()
        stored_back = run.intake.stored()
        behind = len(published_positions(run.app))
        wait_until(
            lambda: (run.cluster.stream_count() or 0) >= behind,
            120,
            f"the relay to catch up to {behind} messages",
            run.watch,
            0.2,
        )
        caught_up = time.monotonic() - back
        wait_until(
            lambda: run.intake.stored() >= stored_back + AFTER_FAULT,
            60,
            f"{AFTER_FAULT} events after the outage",
            run.watch,
        )

        # then the relay catches up: nothing lost or doubled, read models equal a rebuild
        events = run.finish()
        print(
            f"\n{event_store.partition(':')[0]}: stopped {stopped} for {outage:.1f}s "
            f"({stored_back - stopped_at} events stored meanwhile, the stream at "
            f"{in_stream}); the relay caught up to {behind} messages {caught_up:.1f}s after they "
            f"returned; {events} events in all; {time.monotonic() - run.began:.1f}s"
        )
    finally:
        run.close()
