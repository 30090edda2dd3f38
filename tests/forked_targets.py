"""Bodies for the processes ``tests/unit/test_forking.py`` starts (module-level functions: a
spawned child imports them by name)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from services.runtime.forking import Forker

HELD = threading.Lock()
"""Held by a thread of the test while it starts a child: a forked child would inherit it held."""


def report(args: list[str], env: dict[str, str]) -> None:
    """Write what the child sees to ``args[0]``, then exit with ``args[1]``."""
    os.environ.clear()
    os.environ.update(env)
    seen = os.environ.get("CBCM_TEST_SEEN", "")
    preloaded = "tests.forked_preload" in sys.modules
    Path(args[0]).write_text(f"{seen}\n{preloaded}\n", encoding="utf-8")
    raise SystemExit(int(args[1]))


def take_the_lock(args: list[str], env: dict[str, str]) -> None:
    """Exit 0 if ``HELD`` can be taken within a second, 1 if not (a copy of a held lock)."""
    raise SystemExit(0 if HELD.acquire(timeout=1) else 1)


def supervise(seen: str) -> None:
    """As ``cbcm serve`` does, from a process of one thread: fork a child that runs ``report``,
    wait for it, and add its exit code to what it wrote to ``seen``."""
    assert threading.active_count() == 1
    child = Forker(["tests.forked_preload"], report).start(
        "child", [seen, "2"], {"CBCM_TEST_SEEN": "given"}
    )
    child.join(30)
    with open(seen, "a", encoding="utf-8") as out:
        out.write(f"{child.exitcode}\n")


def stopped_at_fork(seen: str) -> None:
    """As ``cbcm serve`` does (its own SIGTERM handler installed, one thread), fork a child that
    is sent SIGTERM the instant it exists, before it could set its own handling; write the
    child's exit code to ``seen``."""
    assert threading.active_count() == 1
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)  # the supervisor's, in short
    os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
    child = Forker([], report).start("child", [seen, "0"], {})
    child.join(30)
    with open(seen, "a", encoding="utf-8") as out:
        out.write(f"{child.exitcode}\n")


def wait_for_sigterm(args: list[str], env: dict[str, str]) -> None:
    """Run until stopped (SIGTERM's default action), at most a minute."""
    threading.Event().wait(60)
