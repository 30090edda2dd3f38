"""``cbcm serve``: the whole stack on embedded defaults, supervised.

Starts nats-server (unless ``CBCM_NATS_URL`` names one), then the relay, the three projection
services, the HTTP API, the audit checkpoint publisher and a local audit witness as child
processes. A child that dies is logged and restarted with a growing delay; Ctrl-C or SIGTERM
stops them all (children first, the bus last).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from services.nats_server import EmbeddedNats
from services.settings import Settings

SERVICES: dict[str, list[str]] = {
    "relay": ["relay"],
    "project-inbox": ["project", "inbox"],
    "project-assistance": ["project", "assistance"],
    "project-stats": ["project", "stats"],
    "api": ["api"],
    "audit-checkpoint": ["audit", "checkpoint"],
    "audit-witness": ["audit", "witness"],
}

log = structlog.get_logger()


def cbcm_command() -> list[str]:
    """How to run this same ``cbcm`` in a child process."""
    beside = Path(sys.executable).parent / "cbcm"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "services.cli"]


@dataclass
class Child:
    """One supervised service process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)  # noqa: S603 - our own command
        self.started_at = time.monotonic()
        log.info("service_started", child=self.name, pid=self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def schedule_restart(self, code: int) -> None:
        # Back off 1, 2, 4... up to 30 s; a child that ran for a minute starts over at 1 s.
        if time.monotonic() - self.started_at > 60:
            self.restarts = 0
        delay = min(30.0, 2.0**self.restarts)
        self.restarts += 1
        self.next_start = time.monotonic() + delay
        self.process = None
        log.warning("service_exited", child=self.name, code=code, restart_in_s=delay)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()


@dataclass
class Supervisor:
    """Runs the children until asked to stop."""

    settings: Settings
    children: list[Child] = field(default_factory=list)
    nats: EmbeddedNats | None = None
    stopping: bool = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        nats_url = self.settings.nats_url
        if nats_url is None:
            self.nats = EmbeddedNats(
                data_dir / "nats", port=self.settings.embedded_nats_port
            ).start()
            nats_url = self.nats.url
            log.info("nats_started", url=nats_url, store_dir=str(data_dir / "nats"))
        env = {**os.environ, "CBCM_NATS_URL": nats_url, "CBCM_DATA_DIR": str(data_dir)}
        self.children = [
            Child(name, [*cbcm_command(), *args], env) for name, args in SERVICES.items()
        ]
        for child in self.children:
            child.start()
        try:
            while not self.stopping:
                self._watch()
                time.sleep(0.2)
        finally:
            self._shutdown()
        return 0

    def _watch(self) -> None:
        if self.nats is not None and self.nats.process is not None:
            code = self.nats.process.poll()
            if code is not None:
                log.warning("nats_exited", code=code)
                self.nats.start()
                log.info("nats_restarted", url=self.nats.url)
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.next_start:
                    child.start()
                continue
            code = child.exited()
            if code is not None:
                child.schedule_restart(code)

    def _shutdown(self, grace: float = 10.0) -> None:
        for child in self.children:
            child.stop()
        deadline = time.monotonic() + grace
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service_killed", child=child.name)
                child.process.kill()
                child.process.wait()
        if self.nats is not None:
            self.nats.stop()
        log.info("stopped")
