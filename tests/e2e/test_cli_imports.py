"""`cbcm --help` and the commands that need neither the web app nor NATS import neither
(issue #13): the help took 1.4 s of CPU, 9.7 s on a loaded machine, because it imported the
whole HTTP application. Checked by what a fresh interpreter has imported, not by a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("fastapi", "starlette", "uvicorn", "nats", "psycopg", "services.api.app")

PROBE = """
import json, sys
from services.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="cbcm", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY_ROOTS})))
"""


def imported_by(args: list[str], data_dir: Path) -> list[str]:
    roots = sorted({h.split(".")[0] for h in HEAVY})
    code = PROBE.replace("{HEAVY_ROOTS}", repr(set(roots)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**env, "CBCM_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    return [m for m in json.loads(last) if m.startswith(HEAVY)]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["audit", "--help"],
        ["token", "--user", "fp-1", "--agency", "unhcr", "--role", "focal_point"],
        ["contracts", "schema"],
    ],
)
def test_help_and_light_commands_import_neither_the_web_app_nor_nats(
    args: list[str], tmp_path: Path
) -> None:
    assert imported_by(args, tmp_path) == []
