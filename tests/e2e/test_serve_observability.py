"""``cbcm serve`` watched as an on-call person would (issue #12): one start-up line lists each
worker's metrics address (the API's too: never its HTTP port, issue #16), each worker serves
its own ``cbcm_*`` metrics beside the process and GC collectors, and a clean start and stop of
an idle stack writes only JSON lines, none of them a warning or an error.

One stack run serves the module's tests: started on free ports and a temp data dir, scraped,
left idle a moment, then SIGTERM to its process group (what Ctrl-C in a terminal or systemd's
stop does: serve and its children get it at once). What the run showed (its log lines, its
scrapes, its exit code) is kept as JSON beside the run's xdist workers, so that a worker that
gets some of these tests after another worker ran them reads the same run instead of starting
a second stack.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.nats.server import free_port
from tests.e2e.test_serve import CBCM, START_WITHIN, wait_until

OWN_PREFIX = {
    "api": "cbcm_http_",
    "relay": "cbcm_relay_",
    "project-inbox": "cbcm_projector_",
    "project-assistance": "cbcm_projector_",
    "project-stats": "cbcm_projector_",
    "project-register": "cbcm_projector_",
    "notify": "cbcm_notify_",
    "audit-checkpoint": "cbcm_checkpoint_",
    "audit-witness": "cbcm_witness_",
    "webhooks": "cbcm_webhook_",
}
COLLECTORS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_")
EVENT_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
IDLE_SECONDS = 2.0


@dataclass
class IdleRun:
    stderr: list[str] = field(default_factory=list)
    stdout: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    scrapes: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    metrics_on_http_port: int = 0
    """The status of GET /metrics on the API's own address."""


def _entries(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def _metrics_line(path: Path) -> dict[str, str] | None:
    for entry in _entries(path):
        if entry.get("event") == "serve.metrics":
            return dict(entry["metrics"])
    return None


def _scrape(client: httpx.Client, address: str) -> str:
    try:
        return client.get(f"http://{address}/metrics").text
    except httpx.TransportError:
        return ""


def _series(text: str) -> set[str]:
    """The names of the samples served (a family declared without any sample is left out:
    it says nothing a dashboard or an alert would read)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture(scope="module")
def idle_run(tmp_path_factory: pytest.TempPathFactory, testrun_uid: str) -> IdleRun:
    """The run, once for all the workers of this pytest run: the first to ask makes it
    (the others wait on the lock meanwhile), the others read it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's directory, shared by its workers
    kept = base / f"serve-idle-{testrun_uid}.json"
    with (base / f"serve-idle-{testrun_uid}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kept.exists():
            return IdleRun(**json.loads(kept.read_text()))
        run = _idle_run(tmp_path_factory)
        kept.with_suffix(".tmp").write_text(json.dumps(dataclasses.asdict(run)))
        kept.with_suffix(".tmp").rename(kept)
        return run


def _idle_run(tmp_path_factory: pytest.TempPathFactory) -> IdleRun:
    base = tmp_path_factory.mktemp("serve-idle")
    http = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "CBCM_DATA_DIR": str(base / "data"),
        "CBCM_HTTP_ADDR": http,
        "CBCM_EMBEDDED_NATS_PORT": str(free_port()),
        "CBCM_LOG_FORMAT": "json",
    }
    for name in ("CBCM_NATS_URL", "CBCM_EVENT_STORE", "CBCM_METRICS_ADDR", "CBCM_API_METRICS_ADDR"):
        env.pop(name, None)
    err, out = base / "stderr.log", base / "stdout.log"
    run = IdleRun()
    # one client for every request (``httpx.get`` builds one, TLS context and all, per call)
    client = httpx.Client(timeout=5)
    with err.open("wb") as err_file, out.open("wb") as out_file:
        process = subprocess.Popen(
            [CBCM, "serve"], env=env, stdout=out_file, stderr=err_file, start_new_session=True
        )
    try:
        run.metrics = wait_until(lambda: _metrics_line(err), 30, "the serve.metrics line")

        def ready() -> bool:
            try:
                return client.get(f"http://{http}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, START_WITHIN, "/readyz")
        run.metrics_on_http_port = client.get(f"http://{http}/metrics").status_code
        for name, address in run.metrics.items():
            prefix = OWN_PREFIX.get(name, "cbcm_")
            deadline = time.monotonic() + 30
            text = _scrape(client, address)
            while prefix not in text and time.monotonic() < deadline:
                time.sleep(0.2)
                text = _scrape(client, address)
            run.scrapes[name] = text
        client.close()  # no connection left open as the stack stops
        time.sleep(IDLE_SECONDS)  # an idle, healthy stack: nothing to warn about
        os.killpg(process.pid, signal.SIGTERM)
        run.exit_code = process.wait(30)
    finally:
        client.close()
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()
    run.stderr = err.read_text(errors="replace").splitlines()
    run.stdout = out.read_text(errors="replace")
    return run


def test_serve_lists_each_workers_own_metrics_address_in_one_start_up_line(
    idle_run: IdleRun,
) -> None:
    lines = [line for line in idle_run.stderr if '"serve.metrics"' in line]
    assert len(lines) == 1, lines
    assert set(idle_run.metrics) == set(OWN_PREFIX)
    addresses = list(idle_run.metrics.values())
    assert len(set(addresses)) == len(addresses)
    assert all(address.startswith("127.0.0.1:") for address in addresses)


def test_the_api_serves_its_metrics_on_their_own_address_not_its_http_port(
    idle_run: IdleRun,
) -> None:
    assert idle_run.metrics_on_http_port == 404
    assert "cbcm_http_requests_total" in idle_run.scrapes["api"]


@pytest.mark.parametrize("worker", sorted(OWN_PREFIX))
def test_each_worker_serves_its_own_metrics_and_the_process_and_gc_collectors(
    idle_run: IdleRun, worker: str
) -> None:
    text = idle_run.scrapes[worker]
    assert text, f"{worker}: nothing served on {idle_run.metrics[worker]}"
    series = _series(text)
    own = OWN_PREFIX[worker]
    assert any(f.startswith(own) for f in series), (worker, sorted(series))
    for collector in COLLECTORS:
        assert any(f.startswith(collector) for f in series), (worker, collector)
    # and none of another worker's: a projector showing cbcm_relay_leader 0 would mislead
    others = {p for w, p in OWN_PREFIX.items() if p != own}
    strays = sorted(f for f in series if any(f.startswith(p) for p in others))
    assert strays == [], f"{worker} serves another worker's metrics: {strays}"


def test_a_clean_start_and_stop_of_an_idle_stack_logs_only_calm_json_lines(
    idle_run: IdleRun,
) -> None:
    assert idle_run.exit_code == 0
    assert idle_run.stdout == ""
    not_json, unnamed, loud = [], [], []
    for line in idle_run.stderr:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            not_json.append(line)
            continue
        if not (
            isinstance(entry, dict)
            and EVENT_NAME.match(str(entry.get("event", "")))
            and entry.get("service")
        ):
            unnamed.append(line)
        elif entry.get("level") not in ("info", "debug"):
            loud.append(line)
    assert not_json == [], "lines that are not JSON:\n" + "\n".join(not_json)
    assert unnamed == [], "lines without a dotted event or a service:\n" + "\n".join(unnamed)
    assert loud == [], "warnings or errors on a clean start and stop:\n" + "\n".join(loud)
    services = {json.loads(line)["service"] for line in idle_run.stderr}
    assert {"serve", *OWN_PREFIX} <= services
