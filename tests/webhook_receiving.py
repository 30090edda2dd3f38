"""A real webhook receiver for the tests (issue #19): ``tests/webhook_receiver/receiver.mjs``,
Node's http server verifying each delivery with the ``standardwebhooks`` npm package (an
implementation that is not ours, in another language), installed from its committed
package-lock.json. Node and npm are required: the tests fail, never skip, without them."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

RECEIVER_DIR = Path(__file__).resolve().parent / "webhook_receiver"


def install_receiver() -> Path:
    """``npm ci`` once (under a lock: test workers may get here together)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the webhook tests need node and npm on PATH (Node 20)")
    lock = RECEIVER_DIR / "package-lock.json"
    installed = RECEIVER_DIR / "node_modules" / ".package-lock.json"
    with (RECEIVER_DIR / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=RECEIVER_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"npm ci failed: {done.stderr[-2000:]}"
    return RECEIVER_DIR / "receiver.mjs"


class NodeReceiver:
    """One receiver process: ``routes`` maps a path to the secret it verifies with."""

    def __init__(self, log: Path, routes: dict[str, str], port: int = 0) -> None:
        self.script = install_receiver()
        self.log = log
        self.routes = routes
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> NodeReceiver:
        self.process = subprocess.Popen(
            ["node", str(self.script), str(self.port), str(self.log), json.dumps(self.routes)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening "), f"the receiver did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def verified(self, path: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["path"] == path and line["ok"]]


def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait until ``check()`` is true (polling a condition, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
