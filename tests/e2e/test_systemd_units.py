"""The systemd units under deploy/systemd: valid for systemd, hardened, and running commands
that exist."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
CBCM = Path(sys.executable).parent / "cbcm"
INSTALLED = "/opt/cbcm/bin/cbcm"
HARDENING = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "true",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


def services() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def service_section(unit: Path) -> dict[str, list[str]]:
    """Every key of the unit's [Service] section with all its values (keys repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_accepts_every_unit_without_a_warning(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    for unit in UNITS.iterdir():
        if unit.suffix in {".service", ".timer", ".target"}:
            text = unit.read_text().replace(INSTALLED, str(CBCM))
            (tmp_path / unit.name).write_text(text)
    checked = sorted(str(p) for p in tmp_path.iterdir())
    run = subprocess.run(
        [analyze, "verify", "--man=no", *checked], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


@pytest.mark.parametrize("unit", services(), ids=lambda p: p.name)
def test_every_service_is_hardened_and_reads_its_keys_as_credentials(unit: Path) -> None:
    settings = service_section(unit)
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], f"{unit.name}: {key}={settings.get(key)}"
    assert settings["User"] == ["cbcm"]
    assert any("%d/" in v for v in settings["Environment"]), "keys come from credentials"
    assert all(not v.startswith("CBCM_DATA_DIR=/etc") for v in settings["Environment"])


@pytest.mark.parametrize("unit", services(), ids=lambda p: p.name)
def test_every_service_runs_a_cbcm_command_that_exists(unit: Path) -> None:
    (command,) = service_section(unit)["ExecStart"]
    program, *args = command.split()
    assert program == INSTALLED
    args = [a.replace("%i", "inbox") for a in args]
    run = subprocess.run(
        [str(CBCM), *args, "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert run.returncode == 0, run.stderr


def test_the_timer_runs_retention_and_the_target_starts_every_service() -> None:
    timer = configparser.ConfigParser(strict=False)
    timer.read(UNITS / "cbcm-retention.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert (UNITS / "cbcm-retention.service").exists()
    wanted = (UNITS / "cbcm.target").read_text()
    for name in ("cbcm-api", "cbcm-relay", "cbcm-checkpoint", "cbcm-retention.timer"):
        assert name in wanted
    for read_model in ("inbox", "assistance", "stats", "register"):
        assert f"cbcm-project@{read_model}.service" in wanted
