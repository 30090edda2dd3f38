"""``cbcm serve``'s children are forked from the supervisor once it has imported them
(``services.runtime.forking``, ADR 34): each runs in the environment it is given and exits
with its own code, and none is forked while another thread could hold a lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from services.runtime.forking import Forker
from tests import forked_targets

REPO = Path(__file__).resolve().parents[2]


def supervised(scene: str, seen: Path) -> list[str]:
    """Run ``tests.forked_targets.<scene>(seen)`` in an interpreter of its own, whose one
    thread is the supervisor's as in ``cbcm serve`` (a pytest-xdist worker runs a thread of
    its own: its children are spawned instead); the lines it wrote to ``seen``."""
    call = f"from tests.forked_targets import {scene}; {scene}({str(seen)!r})"
    done = subprocess.run([sys.executable, "-c", call], cwd=REPO, check=False, timeout=60)
    assert done.returncode == 0
    return seen.read_text(encoding="utf-8").splitlines()


def test_a_child_runs_in_its_own_environment_and_exits_with_its_own_code(tmp_path: Path) -> None:
    # its own environment only, what the supervisor imported before the fork, and the exit
    # code the configuration refusal stops a stack with
    assert supervised("supervise", tmp_path / "seen") == ["given", "True", "2"]


def test_no_child_is_forked_while_another_thread_holds_a_lock() -> None:
    forker = Forker([], forked_targets.take_the_lock)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with forked_targets.HELD:
            taken.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        child = forker.start("child", [], {})
        child.join(60)
    finally:
        release.set()
        holder.join()
    # forked, it would have copied the lock held, and waited for it in vain (exit 1)
    assert child.exitcode == 0


def test_a_child_sent_sigterm_as_it_is_forked_stops(tmp_path: Path) -> None:
    # before it handles SIGTERM as a new interpreter does, the child runs a copy of the
    # supervisor's handler, which only marks that copy as stopping: the child would run on,
    # and the supervisor wait out its grace before killing it
    assert supervised("stopped_at_fork", tmp_path / "seen") == [str(-signal.SIGTERM)]
