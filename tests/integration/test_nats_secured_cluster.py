"""A secured three-node cluster from ``cbcm nats setup --node ...``: TLS on clients and
routes, routes authenticated, the per-agency accounts on every node; run on three real
nats-server processes (free loopback ports, temp dirs)."""

from __future__ import annotations

import asyncio
import shlex
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from services.nats.client import nats_servers
from services.nats.server import ConfiguredNats, free_port
from services.nats.setup import ClusterNode, NatsSetup, write_nats_setup
from services.relay.relay import ensure_stream

AGENCIES = ("unicef", "wfp")


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, quoted = line.partition("=")
        values[name] = shlex.split(quoted)[0] if quoted else ""
    return values


def ports(count: int) -> list[int]:
    found: set[int] = set()
    while len(found) < count:
        found.add(free_port())
    return sorted(found)


async def connect(setup: NatsSetup, user: str, url: str | None = None) -> nats.NATS:
    context = ssl.create_default_context(cafile=str(setup.ca_file))
    return await nats.connect(
        nats_servers(url or setup.url),
        nkeys_seed=str(setup.seed_files[user]),
        inbox_prefix=f"_INBOX.{user}",
        tls=context,
        connect_timeout=2,
        max_reconnect_attempts=1,
    )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[NatsSetup, dict[str, ConfiguredNats]]]:
    """One cluster for the module: forming it (JetStream's meta group electing a leader) is
    most of a test's time, and no test here changes what another looks at."""
    base = tmp_path_factory.mktemp("secured-cluster")
    numbers = ports(6)
    nodes = [ClusterNode(f"n{i + 1}", "127.0.0.1", numbers[i], numbers[i + 3]) for i in range(3)]
    setup = write_nats_setup(base / "nats", AGENCIES, nodes=nodes)
    servers = {
        node.name: ConfiguredNats(
            store_dir=base / "logs" / node.name,
            port=node.port,
            config_file=setup.config_file,
            environment=read_env(setup.directory / "nodes" / f"{node.name}.env"),
        )
        for node in nodes
    }
    try:
        for server in servers.values():
            server.store_dir.mkdir(parents=True, exist_ok=True)
            server.start()
        yield setup, servers
    finally:
        for server in servers.values():
            server.stop()


async def r3_stream_when_clustered(setup: NatsSetup, within: float = 60.0) -> int:
    """Create the event stream with three replicas as the relay; how many peers hold it."""
    nc = await connect(setup, "relay")
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within
        while True:
            try:
                info = await ensure_stream(js, replicas=3)
                assert info.cluster is not None
                return 1 + len(info.cluster.replicas or [])
            except (nats.js.errors.Error, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def r3_stream_peers(setup: NatsSetup) -> set[str]:
    """The names of the servers holding the event stream (its leader and its replicas)."""
    nc = await connect(setup, "relay")
    try:
        info = await nc.jetstream().stream_info("CBCM_EVENTS")
        assert info.cluster is not None and info.cluster.leader is not None
        return {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
    finally:
        await nc.close()


async def test_three_nodes_form_a_cluster_over_authenticated_tls_routes(
    cluster: tuple[NatsSetup, dict[str, ConfiguredNats]], tmp_path: Path
) -> None:
    setup, servers = cluster
    # the configuration is a cluster's, with TLS verified both ways and a route password
    config = setup.config_file.read_text()
    assert "verify: true" in config and "$CBCM_NATSD_ROUTE_PASSWORD" in config
    # an R3 stream is held by all three nodes: the routes carry JetStream's replication
    assert await r3_stream_when_clustered(setup) == 3
    # the relay publishes through one node and an agency's account reads its own events
    # through another (per-agency accounts on every node)
    first, *_, last = (s.url.replace("nats://", "tls://") for s in servers.values())
    relay = await connect(setup, "relay", first)
    try:
        ack = await relay.jetstream().publish(
            "cbcm.v1.evt.unicef.case.received", b"{}", stream="CBCM_EVENTS"
        )
        assert ack.seq == 1
    finally:
        await relay.close()
    # the inbox projector, connected to another node, reads it back from the replicated stream
    projector = await connect(setup, "project-inbox", last)
    try:
        stored = await projector.jetstream().get_msg("CBCM_EVENTS", 1)
        assert stored.subject == "cbcm.v1.evt.unicef.case.received"
    finally:
        await projector.close()
    # and an agency's account, on any node, has no JetStream API of its own to ask
    agency = await connect(setup, "agency-wfp", last)
    try:
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await agency.request("$JS.API.STREAM.INFO.CBCM_EVENTS", b"", timeout=2)
    finally:
        await agency.close()


async def test_a_server_without_the_route_password_does_not_join(
    cluster: tuple[NatsSetup, dict[str, ConfiguredNats]], tmp_path: Path
) -> None:
    setup, servers = cluster
    assert await r3_stream_when_clustered(setup) == 3
    logs = {name: server.store_dir / "nats-server.log" for name, server in servers.items()}
    before = {name: log.stat().st_size for name, log in logs.items()}
    # given a fourth server with the network's certificate but a made-up route password
    n1 = read_env(setup.directory / "nodes" / "n1.env")
    client, route = ports(2)
    rogue_env = {
        **n1,
        "CBCM_NATSD_SERVER_NAME": "rogue",
        "CBCM_NATSD_PORT": str(client),
        "CBCM_NATSD_CLUSTER_PORT": str(route),
        "CBCM_NATSD_STORE_DIR": str(tmp_path / "rogue-js"),
        "CBCM_NATSD_ROUTE_PASSWORD": '"guessed"',
    }
    for name in ("CBCM_NATSD_ROUTE_1", "CBCM_NATSD_ROUTE_2", "CBCM_NATSD_ROUTE_3"):
        rogue_env[name] = n1[name].replace(n1["CBCM_NATSD_ROUTE_PASSWORD"].strip('"'), "guessed")
    (tmp_path / "rogue").mkdir()
    rogue = ConfiguredNats(
        store_dir=tmp_path / "rogue",
        port=client,
        config_file=setup.config_file,
        environment=rogue_env,
    )

    def refusals() -> dict[str, int]:
        """Route log-ins refused by each genuine node since the rogue was started."""
        counts = {}
        for name, log in logs.items():
            with log.open("rb") as f:
                f.seek(before[name])
                counts[name] = f.read().lower().count(b"authentication error")
        return counts

    await asyncio.to_thread(rogue.start)
    try:
        # then every genuine node refuses its routes, again each time it retries
        deadline = time.monotonic() + 30
        while min(refusals().values()) < 3:
            assert time.monotonic() < deadline, f"refusals seen: {refusals()}"
            await asyncio.sleep(0.1)
        # and it never sees the cluster's stream, whose peers stay the three genuine nodes
        nc = await connect(setup, "relay", f"tls://127.0.0.1:{client}")
        try:
            js = nc.jetstream(timeout=1.0)
            for _ in range(3):
                with pytest.raises((nats.js.errors.Error, nats.errors.TimeoutError)):
                    await js.stream_info("CBCM_EVENTS")
        finally:
            await nc.close()
        assert await r3_stream_peers(setup) == {"n1", "n2", "n3"}
    finally:
        await asyncio.to_thread(rogue.stop)
