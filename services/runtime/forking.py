"""Service processes forked from a process that imported the application once.

``cbcm serve`` starts about ten children (relay, projectors, notifier, API, checkpoint
publisher, witness, webhook deliverer). As fresh ``cbcm`` interpreters, each imported the
application before doing anything: about 1 s of CPU each, ten times per stack and again at
every restart. A ``Forker`` imports the modules they use once, in the supervisor, and forks
each child from it (ADR 34): the children are the supervisor's own, so it waits for them,
reads their exit codes and stops them exactly as it did the ``cbcm`` processes.

A fork copies the forking process whole, but only its calling thread: a lock another thread
held stays held in the child for ever. So a child is forked only while the supervisor runs no
other Python thread (it polls its children from its one thread); should one ever be running,
the child is spawned as a fresh interpreter instead, which costs the imports again and nothing
else. (A native library's own threads are not Python's to see: numpy's OpenBLAS pool, started
by its import, is made safe by the library, which stops it around a fork with
``pthread_atfork``.) What a fork does inherit is set afresh in the child: the handling of
SIGTERM and SIGINT here (held back from the fork until then), the logging configuration and
the environment by the child's body (``services.cli.forked``). The imported modules are
frozen for the collector before each fork, so that they stay shared.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.process
import signal
import threading
from collections.abc import Callable, Sequence

import structlog

Target = Callable[[list[str], dict[str, str]], None]
"""A child's body: the arguments of its command and its whole environment. A module-level
function (a spawned child imports it by name)."""

log = structlog.get_logger()


class Forker:
    """Starts processes that run ``target(args, env)``, forked from this process once it has
    imported ``preload`` (at the first start)."""

    def __init__(self, preload: Sequence[str], target: Target) -> None:
        self._preload = tuple(preload)
        self._target = target
        self._loaded = False
        self._warned = False

    def start(
        self, name: str, args: list[str], env: dict[str, str]
    ) -> multiprocessing.process.BaseProcess:
        """A started process that runs ``target(args, env)``: forked, or spawned while this
        process runs another thread. SIGTERM and SIGINT are held back from the fork until the
        child handles them as a new interpreter does (this process's handlers would only have
        marked a copy of it as stopping): one sent at once is not lost, it stops the child."""
        process = self._process(name, args, env)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return process

    def preload(self) -> None:
        """Import ``preload`` now (once; else at the first start). A module that fails to
        import is said (``serve.preload_failed``) and passed over: each child that needs it
        imports it itself and fails as it would have, alone, restarted with its back-off,
        while the others serve."""
        if self._loaded:
            return
        self._loaded = True
        for module in self._preload:
            try:
                importlib.import_module(module)
            except Exception as e:
                log.warning("serve.preload_failed", module=module, error=type(e).__name__)

    def _process(
        self, name: str, args: list[str], env: dict[str, str]
    ) -> multiprocessing.process.BaseProcess:
        self.preload()
        # What is imported goes to the collector's permanent generation: a child's full
        # collections neither walk it (0.1 s to 0.3 s of CPU each) nor touch its pages,
        # which stay shared with this process instead of being copied into every child.
        gc.freeze()
        method = "fork" if threading.active_count() == 1 else "spawn"
        if method == "spawn" and not self._warned:
            self._warned = True
            log.warning(
                "serve.children_spawned",
                threads=threading.active_count(),
                note="another thread runs in the supervisor: its children start as fresh "
                "interpreters (slower), not forked",
            )
        context = _FORK if method == "fork" else _SPAWN
        return context.Process(target=_child, args=(self._target, args, env), name=name)


_STOPPING = {signal.SIGTERM, signal.SIGINT}


def _child(target: Target, args: list[str], env: dict[str, str]) -> None:
    """In the child: SIGTERM and SIGINT handled as in a new interpreter, then let through
    (one sent meanwhile is delivered now), then ``target(args, env)``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
    target(args, env)


_FORK = multiprocessing.get_context("fork")
_SPAWN = multiprocessing.get_context("spawn")
