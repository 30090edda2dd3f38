"""Each test's CPU time, for finding where the suite's time goes (``docs/testing.md``).

Opt-in: ``pytest -p tests.cpu_log`` with ``CBCM_TEST_CPU_LOG=FILE``. Appends one line per test
phase: the test's id, the phase (setup, call, teardown), and the CPU seconds (user + system)
of the worker process and of the child processes it reaped during that phase (a ``cbcm``
command, a Node tool; a server still running is counted when it is stopped). The load of the
machine changes wall times much more than CPU times, so this ranks tests fairly on a shared
machine. Not a test and not a timing assertion: figures for a person to read.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Generator

import pytest


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _log(nodeid: str, phase: str, seconds: float) -> None:
    target = os.environ.get("CBCM_TEST_CPU_LOG")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        out.write(f"{seconds:.3f}\t{phase}\t{nodeid}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    started = _cpu()
    yield
    _log(item.nodeid, "setup", _cpu() - started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    started = _cpu()
    yield
    _log(item.nodeid, "call", _cpu() - started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    started = _cpu()
    yield
    _log(item.nodeid, "teardown", _cpu() - started)


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, None, None]:
    started = _cpu()
    yield
    _log(f"<collection {os.getpid()}>", "collect", _cpu() - started)
