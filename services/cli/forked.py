"""The body of each child of ``cbcm serve``, forked from the supervisor once it has imported
``PRELOAD`` (``services.runtime.forking``, ADR 34): ``cbcm ARGS``, the same command line a
separate ``cbcm`` process would run, in the environment the supervisor gives it."""

from __future__ import annotations

import os
import sys

import setproctitle
import structlog

from services.cli.main import main

PRELOAD: tuple[str, ...] = (
    # this module: the command line, and what every service's start shares
    __name__,
    "services.cli.common",
    "services.settings",
    "services.bootstrap",
    "services.runtime.logging",
    "services.runtime.metrics",
    "services.event_store.config",
    "services.event_store.custody",
    "services.event_store.errors",
    "services.event_store.schema",
    "services.event_store.personal_data.kek",
    "services.nats.client",
    "services.nats.config",
    # cbcm relay
    "services.relay.relay",
    # cbcm project NAME
    "services.projector",
    "services.projector.runner",
    "services.projector.storage",
    "services.projector.publication",
    # cbcm notify
    "services.notify.service",
    "services.notify.settings",
    "services.notify.metrics",
    # cbcm api
    "services.api.app",
    "services.api.serving",
    "uvicorn",
    # cbcm audit checkpoint, cbcm audit witness
    "services.audit.checkpoints",
    "services.audit.keys",
    "services.audit.note",
    "services.audit.witness",
    # cbcm webhooks deliver
    "services.webhooks.deliverer",
)
"""The modules the children of ``cbcm serve`` import before they serve: imported once, by
the supervisor before its first fork. One left out here costs each child its import, nothing
else."""


def run_service(args: list[str], env: dict[str, str]) -> None:
    """``cbcm ARGS`` in environment ``env``, its process title its command line. What the
    fork copied of the supervisor is set as a fresh ``cbcm`` process has it: the logging
    configuration (the service configures its own), the environment (the handling of the
    signals ``Forker`` sets first)."""
    structlog.reset_defaults()
    setproctitle.setproctitle(" ".join(["cbcm", *args]))
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["cbcm", *args]
    main()
