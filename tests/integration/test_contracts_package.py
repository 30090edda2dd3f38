"""``contracts/`` builds as its own distribution, ``cbcm-contracts`` (issue #19): a wheel built
offline from that folder alone (``contracts/pyproject.toml``, no build isolation), installed
into a fresh virtual environment without the server, decodes the relay's real messages into
typed Structs."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.relay.translation import encode, to_cloud_event
from services.settings import Settings

REPO = Path(__file__).resolve().parents[2]
START = datetime(2025, 9, 1, tzinfo=UTC)

DECODE = """
import json, sys
from contracts.catalogue import decode_message
from contracts.case import CaseReceivedV1
from contracts.envelope import CloudEvent

kinds = {}
for line in open(sys.argv[1], "rb"):
    message = decode_message(line.rstrip(b"\\n"))
    assert isinstance(message, CloudEvent)
    assert message.dataschema == "urn:cbcm:schema:" + message.type
    kinds[message.type] = type(message.data).__name__
    if isinstance(message.data, CaseReceivedV1):
        assert message.data.received_at.tzinfo is not None
for server_module in ("services", "domain", "eventsourcing", "nats"):
    try:
        __import__(server_module)
    except ImportError:
        continue
    raise SystemExit(server_module + " is importable: not a fresh environment")
print(json.dumps(kinds))
"""


def relay_messages(tmp: Path) -> list[bytes]:
    """What the relay publishes for the demo network and a few cases."""
    settings = Settings(data_dir=tmp / "data", event_store=f"sqlite:///{tmp / 'events.sqlite3'}")
    app = complaint_mechanism(settings)
    try:
        build_demo_network(app, START)
        walk_cases(app, 3, random.Random(4), START.replace(hour=6))
        return [
            encode(
                to_cloud_event(
                    app.mapper.to_domain_event(n), source="urn:cbcm:store:test", position=n.id
                )
            )
            for n in app.recorder.select_notifications(1, 10_000)
        ]
    finally:
        app.close()


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def test_the_contracts_wheel_alone_decodes_real_messages_into_typed_structs(
    tmp_path: Path,
) -> None:
    # given the contracts folder, copied (a build writes beside its sources)
    source = tmp_path / "cbcm-contracts"
    shutil.copytree(
        REPO / "contracts", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    # when its wheel is built offline, without build isolation
    dist = tmp_path / "dist"
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, source)
    [wheel] = dist.glob("cbcm_contracts-*-py3-none-any.whl")

    # then it holds the contracts package, typed, and nothing of the server
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.split("/")[0] for n in names if not n.startswith("cbcm_contracts-")}
    assert packaged == {"contracts"}
    assert "contracts/py.typed" in names and "contracts/catalogue.py" in names
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    assert "Name: cbcm-contracts" in metadata and "Requires-Dist: msgspec" in metadata

    # when it is installed into a fresh environment with msgspec, its one dependency (copied
    # from this environment: offline), and nothing else
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    here = Path(sysconfig.get_path("platlib"))
    shutil.copytree(Path(msgspec.__file__).parent, site / "msgspec")
    for info in here.glob("msgspec-*.dist-info"):
        shutil.copytree(info, site / info.name)
    run(*pip, "--python", python, "install", "--no-index", "--no-deps", "-q", wheel)
    run(*pip, "--python", python, "check")

    # then the relay's real messages decode there into typed Structs, each naming its schema
    messages = tmp_path / "messages.jsonl"
    raw = relay_messages(tmp_path)
    messages.write_bytes(b"\n".join(raw) + b"\n")
    kinds = json.loads(run(python, "-c", DECODE, messages, cwd=tmp_path))
    assert len(raw) > 50
    assert kinds["org.psea.cbcm.case.received.v1"] == "CaseReceivedV1"
    assert kinds["org.psea.cbcm.network.established.v1"] == "NetworkEstablishedV1"
    assert len(kinds) > 10
