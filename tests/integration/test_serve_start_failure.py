"""``cbcm serve`` failing part-way through its start (ADR 34, attack review): what it started
is stopped, nats-server first among the things that would otherwise outlive it (it runs in a
session of its own, holding its port and its JetStream directory). Before, a failure after
nats-server's start left it running, or left the supervisor waiting for ever on children
nobody stopped."""

from __future__ import annotations

import multiprocessing.process
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from services.nats.server import free_port
from services.runtime.forking import Forker
from services.runtime.supervisor import Supervisor
from services.settings import Settings
from tests import forked_targets


class FailingAtTheThird(Forker):
    """Starts children until the third, which fails as a fork can (no process left)."""

    def __init__(self) -> None:
        super().__init__([], forked_targets.wait_for_sigterm)
        self.started: list[multiprocessing.process.BaseProcess] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str]
    ) -> multiprocessing.process.BaseProcess:
        if len(self.started) == 2:
            raise OSError(11, "Resource temporarily unavailable")
        process = super().start(name, args, env)
        self.started.append(process)
        return process


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """The supervisor installs its SIGTERM and SIGINT handlers: the test process's come back."""
    term, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, interrupt)


def test_a_start_that_fails_part_way_stops_what_it_started(
    tmp_path: Path, own_handlers: None
) -> None:
    fork = FailingAtTheThird()
    settings = Settings(
        data_dir=tmp_path,
        http_addr=f"127.0.0.1:{free_port()}",
        embedded_nats_port=free_port(),
    )
    supervisor = Supervisor(settings, fork)
    # when the third child cannot be started
    with structlog.testing.capture_logs(), pytest.raises(OSError):
        supervisor.run()
    # then nats-server and the two children started are stopped, not left running
    assert supervisor.nats is not None and supervisor.nats.process is not None
    assert supervisor.nats.process.poll() is not None
    assert len(fork.started) == 2
    for child in fork.started:
        child.join(10)
        assert child.exitcode is not None


def test_a_module_that_fails_to_import_is_left_to_the_children_that_need_it() -> None:
    # a preloaded module that cannot be imported (a broken install of one channel's library)
    # does not stop the stack: it is said, and the child that needs it fails alone
    fork = Forker(["tests.forked_preload", "tests.no_such_module"], forked_targets.report)
    with structlog.testing.capture_logs() as logs:
        fork.preload()
    assert [(e["event"], e["module"]) for e in logs] == [
        ("serve.preload_failed", "tests.no_such_module")
    ]
