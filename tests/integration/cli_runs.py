"""``cbcm`` commands run in the test's process, as typer's ``CliRunner`` runs them, with
cbcm's click command built once per process rather than at every run.

``CliRunner().invoke(cli, ...)`` converts the Typer app into its click command tree each
time it is called (every group, command and parameter of ``cbcm``: about 22 ms of CPU,
half of a ``cbcm audit case`` on a small store), and the custody and audit tests run
``cbcm`` a few hundred times. The tree depends on the app alone and click keeps no state in
it between runs (each run makes its own context), so it is built once here and handed to
the same ``CliRunner.invoke``: the same isolation, arguments, environment, exit codes and
output.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any
from unittest import mock

import typer.main
import typer.testing
from typer.testing import CliRunner, Result

from services.cli.main import cli


@cache
def _cbcm_command() -> Any:
    return typer.main.get_command(cli)


def _command_of(app: typer.Typer) -> Any:
    return _cbcm_command() if app is cli else typer.main.get_command(app)


_ONE_AT_A_TIME = threading.Lock()
"""A run swaps the process's stdout and environment (``CliRunner``'s isolation) and here
typer's converter: never two at once (a test may run one in a thread)."""


def run_cbcm(args: Sequence[str], env: Mapping[str, str | None] | None = None) -> Result:
    """``CliRunner().invoke(cli, args, env=env)``, on the click command built once."""
    with _ONE_AT_A_TIME, mock.patch.object(typer.testing, "_get_command", _command_of):
        return CliRunner().invoke(cli, list(args), env=env)
