"""What the fault tests share: cbcm services as real processes, killed and restarted at will,
and the end-state checks (the stream holds the store, each read model equals a fresh
rebuild).

Every wait is on a condition with a deadline (``wait_until``). Each process logs (JSON) to
``<logs>/<name>.log``; a failure quotes the tail of the relevant log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from contracts.subjects import EVENT_SUBJECTS, STREAM
from services.projector.runner import read_position

CBCM = str(Path(sys.executable).parent / "cbcm")
REPO = Path(__file__).resolve().parents[2]
READ_MODELS = ("inbox", "assistance", "stats")


# ---------------------------------------------------------------------------------- waiting


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    watch: Callable[[], None] = lambda: None,
    interval: float = 0.05,
) -> Any:
    """Poll ``condition`` until true, calling ``watch`` (which may fail fast) between polls."""
    deadline = time.monotonic() + timeout
    while True:
        watch()
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout}s waiting for {said}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------- processes


def service_env(**values: str) -> dict[str, str]:
    """This process's environment without any ``CBCM_*`` of its own, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return env | {"CBCM_LOG_FORMAT": "json"} | values


class Service:
    """One process (a ``cbcm`` command by default), killed and restarted at will; its runs
    append to one log file, each after a marker line."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        logs: Path,
        working: str,
        *,
        command: list[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = [*(command or [CBCM]), *args]
        self.env = env
        self.log = logs / f"{name}.log"
        self.working = working
        """A log event showing the current run is doing its work (not still starting)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._lock = threading.RLock()
        self._run_starts_at = 0
        """Offset in the log where the current run's output begins."""

    def start(self) -> None:
        with self._lock:
            self.starts += 1
            with self.log.open("ab") as out:
                out.write(f"=== test: start #{self.starts} of {self.name}\n".encode())
                out.flush()
                self._run_starts_at = out.tell()
                self.process = subprocess.Popen(
                    self.argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
                )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.kills += 1
        with self.log.open("ab") as out:
            out.write(f"=== test: SIGKILL #{self.kills} of {self.name}\n".encode())

    def down(self) -> threading.RLock:
        """Held while the process is down on purpose (between a kill and its restart)."""
        return self._lock

    def output(self) -> bytes:
        """What the current run has written so far."""
        with self.log.open("rb") as f:
            f.seek(self._run_starts_at)
            return f.read()

    def logged(self, event: str, *or_text: str) -> bool:
        """The current run (its own output only) has logged ``event`` (or any of the texts)."""
        output = self.output()
        texts = (f'"event": "{event}"', *or_text)
        return any(text.encode() in output for text in texts)

    def is_working(self) -> bool:
        return self.logged(self.working)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Fail at once (with its log) if the process exited without being asked to."""
        with self._lock:
            assert self.process is not None
            code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.name} exited on its own with code {code}; its log ends:\n{tail(self.log)}"
            )

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.name} did not stop within {timeout}s of SIGTERM; its log ends:\n"
                f"{tail(self.log)}"
            ) from None

    def reap(self) -> None:
        """Clean-up after a test: kill if still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_cbcm(args: list[str], env: dict[str, str], log: Path, timeout: float = 120) -> int:
    """Run one ``cbcm`` command to its end, its output in ``log``; its exit code."""
    with log.open("wb") as out:
        done = subprocess.run(
            [CBCM, *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return done.returncode


# ---------------------------------------------------------------------------------- read models


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a read model (SQLite's own excepted), all rows, sorted."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            table: sorted(
                (tuple(row) for row in db.execute(f'SELECT * FROM "{table}"')),
                key=repr,
            )
            for table in tables
        }
    finally:
        db.close()


def differences(name: str, live: Path, fresh: Path) -> list[str]:
    """What differs between the live read model and a fresh rebuild, for people."""
    a, b = dump(live), dump(fresh)
    problems: list[str] = []
    if sorted(a) != sorted(b):
        problems.append(
            f"{name}: tables differ: only live {sorted(set(a) - set(b))}, "
            f"only fresh {sorted(set(b) - set(a))}"
        )
    for table in sorted(set(a) & set(b)):
        if a[table] == b[table]:
            continue
        only_live = Counter(a[table]) - Counter(b[table])
        only_fresh = Counter(b[table]) - Counter(a[table])
        first_live = sorted(only_live, key=repr)[:3]
        first_fresh = sorted(only_fresh, key=repr)[:3]
        problems.append(
            f"{name}.{table}: live has {len(a[table])} rows, fresh rebuild {len(b[table])}; "
            f"{sum(only_live.values())} only live (first: {first_live}), "
            f"{sum(only_fresh.values())} only fresh (first: {first_fresh})"
        )
    return problems


def rebuild_and_compare(
    env: dict[str, str],
    live: dict[str, Path],
    into: Path,
    logs: Path,
    last: int,
) -> None:
    """``cbcm projections rebuild NAME --into FILE`` for each read model (in parallel); each
    must reach ``last`` and equal its live read model, table by table and row by row."""
    fresh = {name: into / f"fresh-{name}.sqlite3" for name in live}
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, path in fresh.items():
        log = logs / f"rebuild-{name}.log"
        with log.open("wb") as out:
            running[name] = (
                subprocess.Popen(
                    [CBCM, "projections", "rebuild", name, "--into", str(path)],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
    for name, (process, log) in running.items():
        code = process.wait(120)
        assert code == 0, f"rebuild of {name} exited with {code}:\n{tail(log)}"
        assert read_position(fresh[name]) == last, f"rebuild of {name}:\n{tail(log)}"
    problems = [p for name, path in live.items() for p in differences(name, path, fresh[name])]
    assert not problems, "live read models differ from a fresh rebuild:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------- the stream


async def _stream_positions(url: str) -> tuple[int, list[int]]:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        count, last = int(info.state.messages), int(info.state.last_seq)
        positions: list[int] = []
        if count:
            sub = await js.subscribe(EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True)
            try:
                seq = 0
                while seq < last:
                    msg = await sub.next_msg(timeout=10)
                    seq = msg.metadata.sequence.stream
                    msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                    positions.append(int(msg_id.rpartition(":")[2]))
            finally:
                await sub.unsubscribe()
        return count, positions
    finally:
        await nc.close()


def stream_positions(url: str) -> tuple[int, list[int]]:
    """The stream's message count, and the store positions of all its messages in order."""
    return asyncio.run(_stream_positions(url))


def check_stream_is_store(url: str, stored: list[int]) -> None:
    """The stream holds every published event of the store (``stored``: their positions)
    exactly once, in store order."""
    count, in_stream = stream_positions(url)
    assert count == len(stored), f"{count} messages in the stream, {len(stored)} events stored"
    if in_stream != stored:
        duplicated = [p for p, n in Counter(in_stream).items() if n > 1][:5]
        missing = sorted(set(stored) - set(in_stream))[:5]
        raise AssertionError(
            f"the stream is not the store: duplicated {duplicated}, missing {missing}"
        )
