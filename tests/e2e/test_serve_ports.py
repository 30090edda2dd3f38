"""Addresses already in use are refused up front, in one line (issue #12).

``cbcm serve`` restarted the API forever, with growing waits, when CBCM_HTTP_ADDR was taken;
now it refuses before starting anything, as it does for the NATS port, and so does
``cbcm api``. A worker's metrics address that is bad or taken is refused the same way, and a
child of ``cbcm serve`` that refuses its configuration stops the stack instead of looping.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.nats.server import free_port
from tests.e2e.test_serve import CBCM, START_WITHIN

EXIT_CONFIG = 2


@pytest.fixture
def taken() -> Iterator[str]:
    """An address another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def environment(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CBCM_DATA_DIR": str(data_dir),
        "CBCM_WITNESS_DIR": str(data_dir.parent / "witness"),
        **settings,
    }
    for name in ("CBCM_NATS_URL", "CBCM_EVENT_STORE", "CBCM_METRICS_ADDR", "CBCM_LOG_FORMAT"):
        if name not in settings:
            env.pop(name, None)
    return env


def cbcm(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CBCM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_refuses_a_taken_http_address_before_starting_anything(
    tmp_path: Path, taken: str
) -> None:
    nats_port = free_port()
    env = environment(
        tmp_path / "data", CBCM_HTTP_ADDR=taken, CBCM_EMBEDDED_NATS_PORT=str(nats_port)
    )
    started = time.monotonic()
    done = cbcm(env, "serve")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip().splitlines() == [
        f"cbcm: error: CBCM_HTTP_ADDR {taken}: the address is already in use (another cbcm, "
        "or another program, listens there): stop it or set CBCM_HTTP_ADDR"
    ]
    assert time.monotonic() - started < 10
    # nothing was started: no nats-server, no data dir
    assert not port_open(nats_port)
    assert not (tmp_path / "data").exists()


def test_serve_refuses_an_http_address_that_is_not_host_port(tmp_path: Path) -> None:
    done = cbcm(environment(tmp_path / "data", CBCM_HTTP_ADDR="localhost"), "serve")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip() == "cbcm: error: CBCM_HTTP_ADDR 'localhost' is not HOST:PORT"


def test_api_refuses_a_taken_http_address(tmp_path: Path, taken: str) -> None:
    done = cbcm(environment(tmp_path / "data", CBCM_HTTP_ADDR=taken), "api")
    assert done.returncode == EXIT_CONFIG
    assert "the address is already in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # in JSON mode (a service), that one line is JSON
    as_service = cbcm(
        environment(tmp_path / "data", CBCM_HTTP_ADDR=taken, CBCM_LOG_FORMAT="json"), "api"
    )
    assert as_service.returncode == EXIT_CONFIG
    (line,) = as_service.stderr.strip().splitlines()
    entry = json.loads(line)
    assert (entry["event"], entry["service"], entry["level"]) == ("cli.failed", "api", "error")
    assert entry["exit_code"] == EXIT_CONFIG
    assert "already in use" in entry["error"]


@pytest.mark.parametrize("bad", ["taken", "127.0.0.1", "127.0.0.1:http"])
def test_a_worker_refuses_a_bad_or_taken_metrics_address(
    tmp_path: Path, taken: str, bad: str
) -> None:
    address = taken if bad == "taken" else bad
    env = environment(
        tmp_path / "data",
        CBCM_METRICS_ADDR=address,
        CBCM_NATS_URL=f"nats://127.0.0.1:{free_port()}",  # never reached
    )
    done = cbcm(env, "relay")
    assert done.returncode == EXIT_CONFIG, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cbcm: error: ")
    assert address in line
    assert "Traceback" not in done.stderr


def test_serve_stops_when_a_child_refuses_its_configuration(tmp_path: Path) -> None:
    # given a public key file the witness cannot use: it exits with the configuration code
    not_a_key = tmp_path / "public.pem"
    not_a_key.write_text("not a key\n")
    env = environment(
        tmp_path / "data",
        CBCM_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        CBCM_EMBEDDED_NATS_PORT=str(free_port()),
        CBCM_AUDIT_PUBLIC_KEY_FILE=str(not_a_key),
        CBCM_LOG_FORMAT="json",
    )
    # (a bound on a hang, not on speed: every child starts before the witness refuses, which
    # takes as long as a stack's start, over a minute when two suites share two cores)
    done = cbcm(env, "serve", timeout=START_WITHIN)
    # then serve stops the stack with that code, rather than restart the witness forever
    assert done.returncode == EXIT_CONFIG
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    refused = [e for e in entries if e["event"] == "serve.service_refused"]
    assert [e["child"] for e in refused] == ["audit-witness"]
    assert not [e for e in entries if e["event"] == "serve.service_exited"]
    failed = [e for e in entries if e["event"] == "cli.failed"]
    assert [e["service"] for e in failed] == ["audit-witness"]
    assert "not a PEM public key" in failed[0]["error"]
    assert entries[-1]["event"] == "serve.stopped"
