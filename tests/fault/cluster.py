"""What the NATS fault tests share (issue #7): a real three-node JetStream cluster run from
``deploy/nats/cluster/node.conf`` on free loopback ports and temp dirs, the cbcm processes
on it, and the end-of-run checks: the stream against the store, each live read model
against a fresh rebuild.

Processes, intake and read-model comparison come from the crash-recovery test
(``tests/integration/test_crash_recovery.py``), which set the pattern: real ``cbcm``
subprocesses killed and restarted, intake through the real application in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors

from contracts.subjects import EVENT_SUBJECTS, STREAM
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.nats.client import nats_servers
from services.nats.server import ConfiguredNats, free_port
from services.projector.runner import read_model_path, read_position
from tests.fault.stack import rebuild_and_compare
from tests.integration.test_crash_recovery import (
    READ_MODELS,
    Service,
    _tail,
    wait_until,
)

NODE_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster" / "node.conf"
NODES = ("n1", "n2", "n3")

ELECTION_TIMEOUT_MAX = 9.0
"""nats-server's longest raft election timeout (``maxElectionTimeoutDefault`` in
server/raft.go, 4 to 9 s at random): how long followers may wait for a lost leader before
one of them campaigns."""
RELAY_MAX_BACKOFF = 5.0
"""The relay's longest pause between retries (``Relay(max_backoff=...)``)."""
RELAY_PUBLISH_TIMEOUT = 5.0
"""How long the relay waits for a window's acknowledgements (``Relay(publish_timeout=...)``)."""
PAUSE_BOUND = 2 * ELECTION_TIMEOUT_MAX + RELAY_MAX_BACKOFF + RELAY_PUBLISH_TIMEOUT
"""The longest publish pause a stopped node may cause, generously: two full election
rounds (the stream's and, if the node led it too, the meta group's or a second try), then a
relay that has just backed off as far as it goes and waits out one window's timeout."""


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class NatsCluster:
    """Three nats-server processes from the committed cluster configuration."""

    root: Path
    nodes: dict[str, ConfiguredNats] = field(init=False)

    def __post_init__(self) -> None:
        ports = _distinct_free_ports(2 * len(NODES))
        client, route = ports[: len(NODES)], ports[len(NODES) :]
        routes = {
            f"CBCM_NATSD_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{port}"
            for i, port in enumerate(route)
        }
        self.nodes = {}
        for i, name in enumerate(NODES):
            store = self.root / name
            store.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = ConfiguredNats(
                store_dir=store,
                port=client[i],
                config_file=NODE_CONF,
                environment={
                    "CBCM_NATSD_SERVER_NAME": name,
                    "CBCM_NATSD_HOST": "127.0.0.1",
                    "CBCM_NATSD_PORT": str(client[i]),
                    "CBCM_NATSD_CLUSTER_PORT": str(route[i]),
                    "CBCM_NATSD_STORE_DIR": f'"{store / "jetstream"}"',
                    **routes,
                },
            )

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated: ``CBCM_NATS_URL`` for the cluster."""
        return ",".join(node.url for node in self.nodes.values())

    def running(self) -> list[str]:
        return [
            name
            for name, node in self.nodes.items()
            if node.process is not None and node.process.poll() is None
        ]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes.values():
            node.start()
        wait_until(self._jetstream_answers, timeout, "the cluster's JetStream to answer")
        return self

    def start_node(self, name: str) -> None:
        self.nodes[name].start()

    def stop_node(self, name: str, *, kill: bool = False) -> None:
        """SIGTERM (nats-server shuts down, handing over what it leads) or SIGKILL."""
        node = self.nodes[name]
        assert node.process is not None
        if kill:
            node.process.kill()
            node.process.wait(10)
        else:
            node.stop()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def log_tail(self, name: str, lines: int = 15) -> str:
        return _tail(self.nodes[name].store_dir / "nats-server.log", lines)

    def _jetstream_answers(self) -> bool:
        return asyncio.run(self._account_info())

    async def _account_info(self) -> bool:
        try:
            nc = await self.connect()
        except (nats.errors.Error, OSError, TimeoutError):
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return False
        finally:
            await nc.close()

    async def connect(self) -> nats.NATS:
        """A client of the running nodes (not reconnecting: for one look)."""
        urls = [self.nodes[name].url for name in self.running()]
        return await nats.connect(
            nats_servers(",".join(urls)),
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,
        )

    def stream_leader(self, stream: str = STREAM) -> str | None:
        async def look() -> str | None:
            nc = await self.connect()
            try:
                info = await nc.jetstream(timeout=5).stream_info(stream)
                return None if info.cluster is None else info.cluster.leader
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                return None
            finally:
                await nc.close()

        return asyncio.run(look())

    def stream_replicas_current(self, stream: str = STREAM) -> bool:
        """The stream has a leader and every other node's replica is current."""

        async def look() -> bool:
            nc = await self.connect()
            try:
                info = await nc.jetstream(timeout=5).stream_info(stream)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                return False
            finally:
                await nc.close()
            cluster = info.cluster
            if cluster is None or cluster.leader is None:
                return False
            replicas = cluster.replicas or []
            return len(replicas) == len(NODES) - 1 and all(
                peer.current and not peer.offline for peer in replicas
            )

        return asyncio.run(look())

    def stream_count(self, stream: str = STREAM) -> int | None:
        """Messages in the stream (None: no answer now, no quorum say)."""

        async def look() -> int | None:
            try:
                nc = await self.connect()
            except (nats.errors.Error, OSError, TimeoutError):
                return None
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
                return int(info.state.messages)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                return None
            finally:
                await nc.close()

        return asyncio.run(look())

    def stream_record(self) -> list[tuple[int, datetime]]:
        """Every message of ``CBCM_EVENTS`` in stream order: its store position and the time
        JetStream stored it."""

        async def read() -> list[tuple[int, datetime]]:
            nc = await self.connect()
            try:
                js = nc.jetstream(timeout=10)
                info = await js.stream_info(STREAM)
                last = int(info.state.last_seq)
                record: list[tuple[int, datetime]] = []
                if not info.state.messages:
                    return record
                sub = await js.subscribe(EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True)
                try:
                    seq = 0
                    while seq < last:
                        msg = await sub.next_msg(timeout=10)
                        seq = msg.metadata.sequence.stream
                        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                        position = int(msg_id.rpartition(":")[2])
                        record.append((position, msg.metadata.timestamp))
                finally:
                    await sub.unsubscribe()
                return record
            finally:
                await nc.close()

        return asyncio.run(read())


# ---------------------------------------------------------------------------------- services


def cbcm_env(data_dir: Path, event_store: str, nats_url: str) -> dict[str, str]:
    """The environment of a cbcm process on the cluster (R3 streams)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return env | {
        "CBCM_DATA_DIR": str(data_dir),
        "CBCM_EVENT_STORE": event_store,
        "CBCM_NATS_URL": nats_url,
        "CBCM_NATS_REPLICAS": "3",
        "CBCM_LOG_FORMAT": "json",
    }


def logged_entries(service: Service, event: str) -> list[dict[str, Any]]:
    """The JSON log entries ``event`` of the current run of ``service``."""
    with service.log.open("rb") as f:
        f.seek(service._run_starts_at)
        lines = f.read().decode(errors="replace").splitlines()
    marker = f'"event": "{event}"'
    entries = []
    for line in lines:
        if marker in line:
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
    return entries


def projector_services(env: dict[str, str], logs: Path) -> dict[str, Service]:
    return {
        name: Service(name, ["project", name], env, logs, working="projector.batch")
        for name in READ_MODELS
    }


def published_positions(app: ComplaintMechanism) -> list[int]:
    """Positions of the store's events the relay publishes, in order."""
    return [
        n.id
        for n in app.recorder.select_notifications(1, 10_000_000)
        if is_published(app.mapper.to_domain_event(n))
    ]


def longest_pause(record: list[tuple[int, datetime]]) -> tuple[float, int]:
    """The longest time between two consecutive messages of the stream, in seconds, and
    the position of the message that ended it."""
    longest, after = 0.0, 0
    for (_, before), (position, at) in itertools.pairwise(record):
        gap = (at - before).total_seconds()
        if gap > longest:
            longest, after = gap, position
    return longest, after


def assert_stream_is_the_store(cluster: NatsCluster, expected: list[int]) -> None:
    """One message per published position, in store order: nothing lost, nothing twice."""
    in_stream = [position for position, _ in cluster.stream_record()]
    if in_stream != expected:
        duplicated = [p for p, n in Counter(in_stream).items() if n > 1][:5]
        missing = sorted(set(expected) - set(in_stream))[:5]
        raise AssertionError(
            f"the stream is not the store: {len(in_stream)} messages for {len(expected)} "
            f"events; duplicated {duplicated}, missing {missing}"
        )


def wait_for_read_models(data_dir: Path, last: int, services: list[Service]) -> None:
    """Every read model reaches the store's last position (a projector dying fails it)."""
    paths = {name: read_model_path(data_dir, name) for name in READ_MODELS}

    def watch() -> None:
        for service in services:
            service.check_alive()

    try:
        wait_until(
            lambda: all(read_position(path) >= last for path in paths.values()),
            120,
            f"every read model at position {last}",
            watch,
            0.2,
        )
    except AssertionError as e:
        where = {name: read_position(path) for name, path in paths.items()}
        tails = "\n".join(f"--- {s.name}:\n{_tail(s.log, 10)}" for s in services)
        raise AssertionError(f"{e}; read models at {where}\n{tails}") from None
    assert {name: read_position(path) for name, path in paths.items()} == dict.fromkeys(
        READ_MODELS, last
    )


def assert_read_models_equal_a_rebuild(
    data_dir: Path, env: dict[str, str], logs: Path, out: Path, last: int
) -> None:
    """``cbcm projections rebuild NAME --into FILE`` for each read model, compared table by
    table and row by row with the live one (whose projector has stopped)."""
    live = {name: read_model_path(data_dir, name) for name in READ_MODELS}
    rebuild_and_compare(env, live, out, logs, last)
