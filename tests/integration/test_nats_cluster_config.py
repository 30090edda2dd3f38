"""deploy/nats/cluster (issue #7): the loopback set of env files runs the committed node.conf
as three distinct nodes that route to each other; without its environment a node refuses to
start. (The fault tests run the same node.conf as a live cluster.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from services.nats.server import nats_server_binary

CLUSTER = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster"
NODE_CONF = CLUSTER / "node.conf"


def env_file(name: str) -> dict[str, str]:
    """KEY=VALUE lines as ``set -a; . FILE`` reads them."""
    values: dict[str, str] = {}
    for line in (CLUSTER / f"{name}.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key] = " ".join(shlex.split(value))
    return values


def check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(nats_server_binary()), "-c", str(NODE_CONF), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_each_node_env_gives_every_variable_of_the_node_configuration() -> None:
    wanted = set(re.findall(r"\$(CBCM_NATSD_[A-Z0-9_]+)", NODE_CONF.read_text()))
    for name in ("n1", "n2", "n3"):
        env = env_file(name)
        assert set(env) == wanted, name
        result = check_config(env)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_the_three_nodes_are_distinct_and_route_to_each_other() -> None:
    nodes = [env_file(name) for name in ("n1", "n2", "n3")]
    assert len({env["CBCM_NATSD_SERVER_NAME"] for env in nodes}) == 3
    assert len({env["CBCM_NATSD_STORE_DIR"] for env in nodes}) == 3
    ports = [env[key] for env in nodes for key in ("CBCM_NATSD_PORT", "CBCM_NATSD_CLUSTER_PORT")]
    assert len(set(ports)) == 6
    cluster_routes = {f"nats-route://127.0.0.1:{env['CBCM_NATSD_CLUSTER_PORT']}" for env in nodes}
    for env in nodes:
        assert env["CBCM_NATSD_HOST"] == "127.0.0.1"
        routes = {env[f"CBCM_NATSD_ROUTE_{i}"] for i in (1, 2, 3)}
        assert routes == cluster_routes


def test_a_node_without_its_environment_refuses_to_start() -> None:
    result = check_config({})
    assert result.returncode != 0
    assert "CBCM_NATSD_" in result.stderr
