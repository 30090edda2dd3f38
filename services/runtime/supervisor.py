"""``cbcm serve``: the whole stack on embedded defaults, supervised.

Starts nats-server (unless ``CBCM_NATS_URL`` names one), then the relay, the four projection
services, the notifier (idle without an SMTP server or SMS gateway), the HTTP API, the audit
checkpoint publisher, a local audit witness and the webhook deliverer as child processes,
each forked from the supervisor once it has imported the application (``Forker``, ADR 34).
A child that dies is logged and restarted with a growing delay, unless it exits with the
configuration exit code (2: restarting cannot help), which stops the stack; Ctrl-C or SIGTERM
stops them all (children first, the bus last: nats-server runs in a session of its own, so a
Ctrl-C in the terminal reaches it only through us).

Before starting anything it refuses an HTTP address (``CBCM_HTTP_ADDR``) or a NATS port that
is not free. Each worker (relay, projectors, notifier, checkpoint publisher, witness) serves its
Prometheus metrics on a free port of its own on 127.0.0.1 (``CBCM_METRICS_ADDR`` in its
environment), and so does the API (``CBCM_API_METRICS_ADDR``: never on its HTTP port); one
start-up line ``serve.metrics`` lists them.
"""

from __future__ import annotations

import errno
import multiprocessing.process
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from services.nats.server import EmbeddedNats, free_port
from services.runtime.forking import Forker
from services.settings import Settings

SERVICES: dict[str, list[str]] = {
    "relay": ["relay"],
    "project-inbox": ["project", "inbox"],
    "project-assistance": ["project", "assistance"],
    "project-stats": ["project", "stats"],
    "project-register": ["project", "register"],
    "notify": ["notify"],
    "api": ["api"],
    "audit-checkpoint": ["audit", "checkpoint"],
    "audit-witness": ["audit", "witness"],
    "webhooks": ["webhooks", "deliver"],
}

WORKERS: frozenset[str] = frozenset(SERVICES) - {"api"}
"""The children that serve metrics on the address ``CBCM_METRICS_ADDR`` gives."""

METRICS_SETTING: dict[str, str] = {
    **dict.fromkeys(WORKERS, "CBCM_METRICS_ADDR"),
    "api": "CBCM_API_METRICS_ADDR",
}
"""Every child serves its metrics on an address of its own, given in this setting."""

EXIT_CONFIG = 2
"""A child exiting with this (bad configuration) is not restarted: the stack stops."""

log = structlog.get_logger()


class AddressInUse(RuntimeError):
    """An address the stack must listen on is not HOST:PORT, or is already taken."""


def check_free(addr: str, setting: str) -> tuple[str, int]:
    """``addr`` (HOST:PORT) as host and port, if this process could listen on it now;
    ``AddressInUse`` naming ``setting`` if not."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise AddressInUse(f"{setting} {addr!r} is not HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as e:
        raise AddressInUse(f"{setting} {addr!r}: {e.strerror or e}") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(where)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"{setting} {addr}: the address is already in use (another cbcm, or "
                    f"another program, listens there): stop it or set {setting}"
                ) from None
            raise AddressInUse(f"{setting} {addr}: cannot listen there: {e.strerror}") from None
    return host, int(port)


@dataclass
class Child:
    """One supervised service process: ``cbcm ARGS`` in environment ``env``."""

    name: str
    args: list[str]
    env: dict[str, str]
    fork: Forker
    process: multiprocessing.process.BaseProcess | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0

    def start(self) -> None:
        self.process = self.fork.start(self.name, self.args, self.env)
        self.started_at = time.monotonic()
        log.info("serve.service_started", child=self.name, pid=self.process.pid)

    def exited(self) -> int | None:
        """Its exit code once it has exited (a signal's as its negative), else None."""
        return None if self.process is None else self.process.exitcode

    def schedule_restart(self, code: int) -> None:
        # Back off 1, 2, 4... up to 30 s; a child that ran for a minute starts over at 1 s.
        if time.monotonic() - self.started_at > 60:
            self.restarts = 0
        delay = min(30.0, 2.0**self.restarts)
        self.restarts += 1
        self.next_start = time.monotonic() + delay
        if self.process is not None:
            self.process.close()  # its sentinel descriptor: a restart loop leaks none
        self.process = None
        log.warning("serve.service_exited", child=self.name, code=code, restart_in_s=delay)

    def stop(self) -> None:
        if self.process is not None and self.process.exitcode is None:
            self.process.terminate()


@dataclass
class Supervisor:
    """Runs the children until asked to stop."""

    settings: Settings
    fork: Forker
    """How the children start (``cbcm serve``: ``cbcm ARGS`` forked, ``services.cli.forked``)."""
    children: list[Child] = field(default_factory=list)
    nats: EmbeddedNats | None = None
    stopping: bool = False
    exit_code: int = 0
    prepare_store: Callable[[], None] | None = None
    """Run once after the addresses are checked, before nats-server and any worker start
    (``cbcm serve`` gives the embedded SQLite store its tables there)."""
    prepare_nats: Callable[[str], None] | None = None
    """Run once on the embedded nats-server before any worker starts (``cbcm serve`` creates
    the event stream there, so a projector that starts before the relay finds it)."""

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("serve.stop_requested", signal=signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        """Run the stack until a signal (0), or until a child refuses its configuration
        (``EXIT_CONFIG``). Raises ``AddressInUse`` or ``NatsServerError`` before starting
        anything when an address to listen on is taken."""
        check_free(self.settings.http_addr, "CBCM_HTTP_ADDR")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.fork.preload()  # before anything runs that a failure here would leave behind
        if self.prepare_store is not None:
            self.prepare_store()
        log.info(
            "serve.for_development",
            note="one machine, every key in the data dir: for development and demonstrations; "
            "in production run each service under systemd (deploy/systemd)",
        )
        try:
            # from nats-server's start on, whatever fails stops what has started (nats-server
            # runs in a session of its own: left, it would hold its port and its directory)
            self._start(data_dir)
            while not self.stopping:
                self._watch()
                time.sleep(0.2)
        finally:
            self._shutdown()
        return self.exit_code

    def _start(self, data_dir: Path) -> None:
        """nats-server (unless one is named), then the children."""
        nats_url = self.settings.nats_url
        if nats_url is None:
            self.nats = EmbeddedNats(
                data_dir / "nats", port=self.settings.embedded_nats_port
            ).start()
            nats_url = self.nats.url
            log.info("serve.nats_started", url=nats_url, store_dir=str(data_dir / "nats"))
            if self.prepare_nats is not None:
                self.prepare_nats(nats_url)
        env = {**os.environ, "CBCM_NATS_URL": nats_url, "CBCM_DATA_DIR": str(data_dir)}
        for setting in set(METRICS_SETTING.values()):
            env.pop(setting, None)  # one address per child, below
        named = sorted(METRICS_SETTING)
        metrics = {
            name: f"127.0.0.1:{port}"
            for name, port in zip(named, self._metrics_ports(len(named)), strict=True)
        }
        self.children = [
            Child(name, args, {**env, METRICS_SETTING[name]: metrics[name]}, self.fork)
            for name, args in SERVICES.items()
        ]
        log.info("serve.metrics", metrics=metrics)
        for child in self.children:
            child.start()

    def _metrics_ports(self, count: int) -> list[int]:
        """``count`` free ports, distinct, and none the API's or the bus's."""
        taken = {self.settings.embedded_nats_port, int(self.settings.http_addr.rpartition(":")[2])}
        ports: list[int] = []
        while len(ports) < count:
            port = free_port()
            if port not in taken:
                taken.add(port)
                ports.append(port)
        return ports

    def _watch(self) -> None:
        if self.nats is not None and self.nats.process is not None:
            code = self.nats.process.poll()
            if code is not None:
                log.warning("serve.nats_exited", code=code)
                self.nats.start()
                log.info("serve.nats_restarted", url=self.nats.url)
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.next_start:
                    child.start()
                continue
            code = child.exited()
            if code == EXIT_CONFIG:
                # its configuration is refused (its own error line says why): a restart
                # would be refused again, forever
                log.error("serve.service_refused", child=child.name, code=code)
                child.process = None
                self.exit_code = EXIT_CONFIG
                self.stopping = True
                return
            if code is not None:
                child.schedule_restart(code)

    def _shutdown(self, grace: float = 10.0) -> None:
        for child in self.children:
            child.stop()
        deadline = time.monotonic() + grace
        for child in self.children:
            if child.process is None:
                continue
            child.process.join(max(0.1, deadline - time.monotonic()))
            if child.process.exitcode is None:
                log.warning("serve.service_killed", child=child.name)
                child.process.kill()
                child.process.join()
        if self.nats is not None:
            self.nats.stop()
        log.info("serve.stopped", code=self.exit_code)
