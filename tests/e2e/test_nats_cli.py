"""``cbcm nats``, run as an operator runs it (issue #6, ADR 6)."""

from __future__ import annotations

import asyncio
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import nats

from services.bootstrap import complaint_mechanism
from services.nats.client import nats_connect_options
from services.nats.server import ConfiguredNats, free_port
from services.settings import Settings
from tests.api_world import build_network

CBCM = Path(sys.executable).parent / "cbcm"


def cbcm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return subprocess.run(
        [str(CBCM), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in shlex.split(path.read_text()))


def test_nats_setup_writes_a_network_that_starts_and_admits_its_users(tmp_path: Path) -> None:
    port = free_port()
    done = cbcm(
        "nats",
        "setup",
        str(tmp_path),
        "--agency",
        "alpha",
        "--agency",
        "beta",
        "--port",
        str(port),
    )
    assert done.returncode == 0, done.stderr

    printed = cbcm("nats", "config", "--agency", "beta", "--agency", "alpha")
    assert (tmp_path / "cbcm.conf").read_text() == printed.stdout
    seeds = sorted((tmp_path / "nkeys").iterdir())
    assert {s.stem for s in seeds} >= {"relay", "provision", "agency-alpha", "agency-beta"}
    assert all(stat.S_IMODE(s.stat().st_mode) == 0o600 for s in seeds)
    assert stat.S_IMODE((tmp_path / "tls" / "server-key.pem").stat().st_mode) == 0o600

    server = ConfiguredNats(
        tmp_path / "server",
        port=port,
        config_file=tmp_path / "cbcm.conf",
        environment=env_file(tmp_path / "nats-server.env"),
    ).start()
    try:
        client = env_file(tmp_path / "env" / "agency-alpha.env")
        settings = Settings(**{k.removeprefix("CBCM_").lower(): v for k, v in client.items()})

        async def connect() -> str:
            nc = await nats.connect(
                client["CBCM_NATS_URL"],
                allow_reconnect=False,
                max_reconnect_attempts=1,
                **nats_connect_options(settings, "agency-alpha"),
            )
            await nc.close()
            return str(nc.connected_server_version)

        assert asyncio.run(connect())
        # before the relay and the checkpoint publisher made their streams: nothing to make
        waiting = cbcm(
            "nats",
            "provision",
            "--agency",
            "alpha",
            "--agency",
            "beta",
            env=env_file(tmp_path / "env" / "provision.env"),
        )
        assert waiting.returncode == 3, waiting.stderr
        assert "alpha: CBCM_EVENTS agency-alpha: waiting: no stream CBCM_EVENTS yet" in (
            waiting.stdout
        )
    finally:
        server.stop()


def test_nats_setup_again_keeps_every_key_and_adds_the_new_agencys(tmp_path: Path) -> None:
    assert cbcm("nats", "setup", str(tmp_path), "--agency", "alpha").returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "nkeys").iterdir()}
    ca = (tmp_path / "tls" / "ca.pem").read_bytes()

    again = cbcm("nats", "setup", str(tmp_path), "--agency", "alpha", "--agency", "gamma")

    assert again.returncode == 0, again.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "nkeys").iterdir()}
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"agency-gamma.nk"}
    assert (tmp_path / "tls" / "ca.pem").read_bytes() == ca
    assert "AGENCY_GAMMA" in (tmp_path / "cbcm.conf").read_text()


def test_nats_config_refuses_an_agency_code_that_is_no_subject_token() -> None:
    done = cbcm("nats", "config", "--agency", "Bad.Code")

    assert done.returncode == 2
    assert done.stderr.startswith("cbcm: error: agency 'Bad.Code' is not an agency code")


def test_nats_provision_needs_the_networks_nats() -> None:
    done = cbcm("nats", "provision")

    assert done.returncode == 2
    assert "CBCM_NATS_URL is not set" in done.stderr


def test_nats_config_takes_the_networks_registered_agencies_not_a_demo_list(
    tmp_path: Path,
) -> None:
    # given an empty store: nothing to configure, and it says so
    env = {"CBCM_DATA_DIR": str(tmp_path)}
    empty = cbcm("nats", "config", env=env)
    assert empty.returncode == 2
    assert "--agency" in empty.stderr
    # when the network registers its agencies
    app = complaint_mechanism(Settings(data_dir=tmp_path))
    try:
        build_network(app)
    finally:
        app.close()
    # then the configuration has an account for each, and for no other
    printed = cbcm("nats", "config", env=env)
    assert printed.returncode == 0, printed.stderr
    assert "for the agencies: ngo-a, ocha, unhcr, wfp." in printed.stdout
