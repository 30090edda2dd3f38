"""The key ceremony of docs/key-ceremony.md, command by command (issue #17): the keys made
once by `cbcm keys init`, a store run on them as the units name them, the KEK rotated and
its successor readable by the services' group, nothing replaced by a second run."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.audit.keys import key_id, read_private_key, read_public_key
from services.cli.main import cli

KEYS = (
    "kek/active",
    "kek/ring",
    "event-cipher.key",
    "writer.key",
    "audit-signing-key.pem",
    "audit-public-key.pem",
    "audit-log-origin",
)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def cbcm(env: dict[str, str], *argv: str) -> Done:
    """``cbcm`` in this process (the commands' own code, without a start-up per call)."""
    done = CliRunner().invoke(cli, list(argv), env=env)
    code = done.exit_code
    if isinstance(done.exception, SystemExit) and isinstance(done.exception.code, int):
        code = done.exception.code
    elif done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return Done(code, done.stdout, done.stderr)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    made = cbcm({}, "keys", "init", str(tmp_path / "etc" / "keys"))
    assert made.returncode == 0, made.stderr
    return tmp_path / "etc" / "keys"


def service_env(keys: Path, data_dir: Path) -> dict[str, str]:
    """What the units set (deploy/systemd), with the event cipher on as on PostgreSQL."""
    return {
        "CBCM_DATA_DIR": str(data_dir),
        "CBCM_KEK_DIR": str(keys / "kek"),
        "CBCM_EVENT_CIPHER": "on",
        "CBCM_EVENT_CIPHER_KEY_FILE": str(keys / "event-cipher.key"),
        "CBCM_WRITER_KEY_FILE": str(keys / "writer.key"),
        "CBCM_AUDIT_SIGNING_KEY_FILE": str(keys / "audit-signing-key.pem"),
        "CBCM_AUDIT_PUBLIC_KEY_FILE": str(keys / "audit-public-key.pem"),
        "CBCM_AUDIT_LOG_ORIGIN": (keys / "audit-log-origin").read_text().strip(),
    }


def test_keys_init_makes_every_key_once_private_and_never_replaces_one(keys: Path) -> None:
    # then every key is there, readable by its owner only, the directory 0700
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    before = {}
    for name in KEYS:
        path = keys / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        before[name] = path.read_bytes()
    # and the checkpoint key pair is one pair
    private = read_private_key(keys / "audit-signing-key.pem")
    assert key_id(read_public_key(keys / "audit-public-key.pem")) == key_id(private)
    # when it runs again, nothing is replaced, and no secret is printed
    again = cbcm({}, "keys", "init", str(keys))
    assert again.returncode == 0 and again.stdout.count("kept ") == 6, again.stdout
    assert {name: (keys / name).read_bytes() for name in KEYS} == before
    for secret in ("event-cipher.key", "writer.key"):
        assert before[secret].decode().strip() not in again.stdout


def test_a_store_runs_on_the_ceremony_keys_and_the_kek_rotates_readable_by_the_services(
    keys: Path, tmp_path: Path
) -> None:
    env = service_env(keys, tmp_path / "data")
    # given the ring readable in place by the services' group (2750, as the guide says)
    ring = keys / "kek"
    ring.chmod(0o2750)
    for key in ring.iterdir():
        key.chmod(0o640)
    # when a store is written with these keys and verified
    demo = cbcm(env, "demo", "--cases", "3")
    assert demo.returncode == 0, demo.stderr
    verified = cbcm(env, "audit", "verify", "--no-checkpoints")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout
    old = (ring / "active").read_text().strip()
    # and the KEK is rotated (as root, umask 0027)
    umask = os.umask(0o027)
    try:
        rotated = cbcm(env, "keys", "rotate")
    finally:
        os.umask(umask)
    assert rotated.returncode == 0, rotated.stderr
    new = (ring / "active").read_text().strip()
    assert new != old and f"active key-encryption key {new}" in rotated.stdout
    # then the new KEK is readable by the services' group at once, and nothing is left
    # wrapped under the old one
    assert stat.S_IMODE((ring / f"{new}.key").stat().st_mode) == 0o640
    status = cbcm(env, "keys", "status")
    assert status.returncode == 0 and old not in status.stdout.replace(f'"{new}"', ""), (
        status.stdout
    )
    # and the old KEK cannot be retired before every process has seen the rotation
    early = cbcm(env, "keys", "retire", old)
    assert early.returncode == 1 and "retire it after 120 s" in early.stderr, early.stderr
    # and the store still verifies and reads with the rotated ring
    assert cbcm(env, "audit", "verify", "--no-checkpoints").returncode == 0
