"""The systemd units under deploy/systemd: valid for systemd, hardened, and running commands
that exist."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

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


# ------------------------------------------------ every key path the code reads (ADR 26)

CEREMONY = UNITS.parents[1] / "docs" / "key-ceremony.md"
ETC, STATE = "/etc/cbcm", "/var/lib/cbcm"


def credentials(unit: Path) -> dict[str, str]:
    """``LoadCredential=ID:SOURCE`` of the unit: ID -> SOURCE."""
    return dict(v.split(":", 1) for v in service_section(unit).get("LoadCredential", []))


def _environment(unit: Path) -> dict[str, str]:
    return dict(v.split("=", 1) for v in service_section(unit)["Environment"])


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``/etc/cbcm/keys`` as the key ceremony leaves it after a writer-key rotation (made by
    the code: ``cbcm keys init``, then the rotation's last step, which retires the old key
    into ``writer-retired/``), with a NATS seed for each service; the root standing for
    ``/``, the current writer key's id and the retired one's."""
    from services.cli.main import cli  # noqa: PLC0415
    from services.event_store.custody import (  # noqa: PLC0415
        WriterKey,
        install_key,
        load_writer_key,
    )

    root = tmp_path_factory.mktemp("host")
    keys = root / ETC.lstrip("/") / "keys"
    done = CliRunner().invoke(cli, ["keys", "init", str(keys)])
    assert done.exit_code == 0, done.output
    old = load_writer_key(keys / "writer.key", create=False)
    new = WriterKey(os.urandom(32))
    install_key(keys / "writer.key", new, old)
    for unit in services():
        for source in credentials(unit).values():
            if Path(source).name.startswith("nats-"):  # made by `cbcm nats setup`
                seed = root / source.lstrip("/").replace("%i", "stats")
                seed.write_text("SUAEXAMPLE\n")
    return root, new.key_id, old.key_id


def _view(unit: Path, root: Path, creds: Path) -> dict[str, str]:
    """The environment the unit gives its service (``%d``: its credentials directory, with
    a copy of each credential under its id, as systemd makes it), paths under ``root``."""
    creds.mkdir(parents=True, exist_ok=True)
    for name, source in credentials(unit).items():
        src = root / source.lstrip("/").replace("%i", "stats")
        assert src.is_file(), f"{unit.name}: LoadCredential={name}:{source}: no such key file"
        shutil.copyfile(src, creds / name)
    env = {}
    for key, given in _environment(unit).items():
        value = given.replace("%d", str(creds))
        if value.startswith(("/etc/", "/var/")):
            value = str(root / value.lstrip("/"))
        env[key] = value
    return env


@pytest.mark.parametrize("unit", services(), ids=lambda p: p.name)
def test_every_key_path_the_code_reads_is_where_the_unit_puts_it(
    unit: Path, ceremony: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path the code derives from the unit's settings (the key files, the KEK ring, the
    retired writer keys beside the writer key, the erasure ledger's directory) is one the
    unit hands over, read-only, or its writable state."""
    from services.event_store.config import persistence_env  # noqa: PLC0415
    from services.event_store.custody import (  # noqa: PLC0415
        load_writer_key,
        retired_keys,
        staged_key_path,
    )
    from services.settings import Settings  # noqa: PLC0415

    root, current, _retired = ceremony
    env = _view(unit, root, tmp_path / "credentials")
    section = service_section(unit)
    # every credential handed is read through a setting, and every %d setting is handed
    handed = set(credentials(unit))
    named = {v.rsplit("/", 1)[1] for k, v in _environment(unit).items() if "%d/" in v}
    assert handed == named, f"{unit.name}: credentials {handed}, settings read {named}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    store = persistence_env(settings)
    # the writer key the code marks with is the current one, handed as a credential
    writer = Path(store["CBCM_WRITER_KEY_FILE"])
    assert writer.parent == tmp_path / "credentials"
    assert load_writer_key(writer, create=False).key_id == current
    assert "CBCM_WRITER_KEY_CREATE" not in store, "a service never makes a writer key"
    # the retired writer keys the code looks for beside it are not handed (ADR 26: no
    # service needs them), nor is a staged key: a service holds the current key only
    assert retired_keys(writer) == {}
    assert not staged_key_path(writer).exists()
    # the erasure ledger and the high-water mark go to the writable state directory
    ledger = Path(store["CBCM_ERASURE_LEDGER_DIR"])
    assert section["StateDirectory"] == ["cbcm"]
    assert ledger.is_relative_to(root / STATE.lstrip("/")), ledger
    # every other key file a setting names exists in the service's view, and what is read
    # in place (the KEK ring) lies under a read-only path
    for field in ("event_cipher_key_file", "audit_signing_key_file", "nats_nkey_seed_file"):
        path = getattr(settings, field)
        assert path is None or Path(path).is_file(), f"{unit.name}: {field}={path}"
    assert settings.kek_dir is not None and (settings.kek_dir / "ring").exists()
    assert section["ReadOnlyPaths"] == [ETC]
    assert settings.kek_dir.is_relative_to(root / ETC.lstrip("/"))


def test_the_ceremonys_commands_find_the_retired_writer_keys(
    ceremony: tuple[Path, str, str],
) -> None:
    """What needs a retired writer key (verify's marks before a rotation, learn-erasures'
    notices told before it, a host's catch-up) runs as the key ceremony runs its commands:
    with ``CBCM_WRITER_KEY_FILE`` in ``/etc/cbcm/keys``, beside ``writer-retired/``."""
    from services.event_store.custody import RETIRED_DIR, retired_keys  # noqa: PLC0415

    root, _current, retired = ceremony
    text = CEREMONY.read_text()
    settings = set(re.findall(r"CBCM_WRITER_KEY_FILE=([^\s`]+)", text))
    assert settings == {f"{ETC}/keys/writer.key"}, settings
    (writer,) = settings
    assert f"`{ETC}/keys/{RETIRED_DIR}/`" in text  # the table of keys names where they are
    assert list(retired_keys(root / writer.lstrip("/"))) == [retired]
    # and the units say why they hand the writer key alone
    for unit in services():
        if "writer.key" in credentials(unit):
            assert "writer-retired" in unit.read_text(), f"{unit.name}: say it is not handed"
