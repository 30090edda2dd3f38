"""The ``cbcm`` command line.

Configuration comes from the environment (``CBCM_*``, see ``services.settings``). A problem
the user can fix (bad input, bad configuration, an unreachable store, a command the domain
refuses) is one line on stderr and a non-zero exit, never a traceback; anything else is a
bug and keeps its traceback. A long-running service (relay, projector, checkpoint publisher,
witness, api, serve) configures its logging first, so in JSON mode that line is JSON
(``cli.failed``; a bug's traceback is one ``cli.crashed`` line).

Exit codes: 0 done; 1 refused by a business rule; 2 bad usage or configuration (click's own
usage errors are 2 as well); 3 the event store cannot be reached; 4 `audit verify` found
damage; 5 `audit verify` has no signed checkpoint to hold the store to; 6 `share open`: the
share does not open with this key.

One module per command group, each with ``register(cli)``, which adds its commands to the
root; this module only builds the root, registers the groups in the order ``cbcm --help``
lists them, and holds the entry point. What they share is in ``services.cli.common``. Each
command imports its heavy dependencies when it runs, so that ``cbcm --help`` stays fast.
"""

from __future__ import annotations

import gc

import typer

from services.cli import (
    audit,
    bench,
    contracts,
    db,
    demo,
    keys,
    nats,
    notify,
    prevention,
    projections,
    retention,
    sharing,
    stack,
    stats,
    token,
    webhooks,
)
from services.cli.common import known_failure, log, one_line, report
from services.runtime.logging import json_mode

cli = typer.Typer(
    name="cbcm",
    help="Inter-agency PSEA community-based complaint mechanism.",
    no_args_is_help=True,
    add_completion=False,
    # plain click messages: one 'Error: ...' line rather than a boxed panel
    rich_markup_mode=None,
    # a bug shows the ordinary traceback, without local variables (they may hold personal data)
    pretty_exceptions_enable=False,
)

GROUPS = (
    bench,  # cbcm bench
    demo,  # cbcm demo
    stack,  # cbcm serve, relay, project, api
    notify,  # cbcm notify
    token,  # cbcm token
    contracts,  # cbcm contracts schema, asyncapi
    nats,  # cbcm nats config, setup, provision
    sharing,  # cbcm agency keygen, cbcm share open
    stats,  # cbcm stats export
    prevention,  # cbcm prevention report
    projections,  # cbcm projections rebuild
    audit,  # cbcm audit checkpoint, witness, verify, case
    retention,  # cbcm retention run
    keys,  # cbcm keys rotate, retire, status
    webhooks,  # cbcm webhooks deliver, register, list, deliveries...
    db,  # cbcm db init, migrate, status, grants
)
"""Every command group, in the order ``cbcm --help`` lists them (commands before groups)."""

for group in GROUPS:
    group.register(cli)


def main() -> None:
    """Console-script entry point: a failure whose cause is known (a key ring, a key file, an
    address, the store, NATS, the file system) is one line and an exit code, never a
    traceback; a bug keeps its traceback (one JSON line in JSON mode)."""
    try:
        cli(prog_name="cbcm")
    except Exception as e:
        known = known_failure(e)
        if known is not None:
            code, what = known
            report(f"{what}: {one_line(e)}", code)
            raise SystemExit(code) from None
        if not json_mode():
            raise
        log.critical("cli.crashed", exc_info=True)  # the traceback, in one JSON line
        raise SystemExit(1) from None
    finally:
        # the process ends here: the interpreter's last garbage collections would walk every
        # object of every module imported (0.1 s of CPU for a projector, 0.3 s for the API)
        # only to free memory the exit frees anyway; what is frozen they skip
        gc.freeze()


if __name__ == "__main__":
    main()
