"""Each test's CPU time, for finding where the suite's time goes (``docs/testing.md``).

Opt-in: ``pytest -p tests.cpu_log`` with ``CBCM_TEST_CPU_LOG=FILE``. Appends one line per test
phase, tab-separated: the CPU seconds (user + system) of the worker process and of the child
processes it reaped during that phase (a ``cbcm`` command, a Node tool; a server still running
is counted when it is stopped), the phase (setup, call, teardown), the test's id, and the
phase's wall seconds. The load of the machine changes wall times much more than CPU times, so
the CPU ranks tests fairly on a shared machine; a phase whose wall time is far above its CPU
time waited (a sleep, a timeout, a server), which is what leaves a core idle. Not a test and
not a timing assertion: figures for a person to read.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Generator

import pytest


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _log(nodeid: str, phase: str, seconds: float, wall: float) -> None:
    target = os.environ.get("CBCM_TEST_CPU_LOG")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        out.write(f"{seconds:.3f}\t{phase}\t{nodeid}\t{time.monotonic() - wall:.3f}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    started, wall = _cpu(), time.monotonic()
    yield
    _log(item.nodeid, "setup", _cpu() - started, wall)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    started, wall = _cpu(), time.monotonic()
    yield
    _log(item.nodeid, "call", _cpu() - started, wall)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    started, wall = _cpu(), time.monotonic()
    yield
    _log(item.nodeid, "teardown", _cpu() - started, wall)


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, None, None]:
    started, wall = _cpu(), time.monotonic()
    yield
    _log(f"<collection {os.getpid()}>", "collect", _cpu() - started, wall)
