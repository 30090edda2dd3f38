"""Case bundles an auditor verifies alone (issue #15), and interop: the same bundle (its
cosigned C2SP checkpoint and its RFC 6962 inclusion proofs) checked by an implementation
written from the specifications in another language (``tests/interop/verify.mjs``, Node with
@noble/ed25519 and @noble/hashes from the npm registry), not by our code. On SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import sign_checkpoint, tree_head
from services.audit.keys import LogIdentity, load_signing_key, witness_vkey
from services.audit.note import parse_note
from services.audit.witness import Cosigner, Outcome, WitnessBook
from services.demo.walk import build_demo_network, walk_cases
from services.event_store import chain
from services.event_store.store_id import store_id
from services.settings import Settings
from tests.integration.cli_runs import run_cbcm

START = datetime(2025, 9, 1, tzinfo=UTC)
ORIGIN = "cbcm.test/log/bundles"
INTEROP = Path(__file__).resolve().parents[1] / "interop"


@pytest.fixture(scope="session")
def node_verifier() -> Path:
    """The Node verifier with its locked dependencies installed (``npm ci``). Node and npm
    are required: the test fails, never skips, without them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the interop test needs node and npm on PATH (Node 20)")
    installed = INTEROP / "node_modules" / ".package-lock.json"
    lock = INTEROP / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=INTEROP,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed: {done.stderr[-2000:]}"
    return INTEROP / "verify.mjs"


def node_verify(script: Path, log: str, bundle: Path, *witnesses: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(script), log, str(bundle), *witnesses],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) == result["ok"], done.stderr
    return result


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("CBCM_AUDIT_LOG_ORIGIN", ORIGIN)
    yield {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": str(settings.event_store),
        "CBCM_AUDIT_LOG_ORIGIN": ORIGIN,
        "CBCM_WITNESS_DIR": str(settings.data_dir.parent / "no-witness-here"),
    }


def run(env: dict[str, str], *args: str) -> Any:
    return run_cbcm(["audit", *args], env=env)


def test_a_case_bundle_verifies_with_the_public_keys_alone_here_and_in_node(
    app: ComplaintMechanism,
    settings: Settings,
    env: dict[str, str],
    tmp_path: Path,
    node_verifier: Path,
) -> None:
    # given a store whose head an independent witness cosigned
    build_demo_network(app, START)
    walked = walk_cases(app, 4, random.Random(7), START)
    case = next(iter(walked.cases))
    key = load_signing_key(settings)
    log = LogIdentity(ORIGIN, key.public_key())
    witness = Cosigner("unicef.witness.cbcm.invalid", Ed25519PrivateKey.generate())
    head = chain.head(app.recorder)
    assert head is not None
    first = app.recorder.select_notifications(1, 1)[0]
    checkpoint = sign_checkpoint(
        key, store_id(first), head, datetime.now(UTC), tree_head(app.recorder, ORIGIN, head)
    )
    book_path = tmp_path / "unicef-witness" / "checkpoints.sqlite3"
    with WitnessBook.open(book_path) as book:
        assert book.record([checkpoint], log=log, cosigner=witness) == [(Outcome.RECORDED, None)]
        [held] = book.tree_heads(ORIGIN)
    assert len(parse_note(held.note)[1]) == 2  # the log's signature and the cosignature
    w = witness_vkey(witness.name, witness.key)

    # and verify, under a policy naming that witness, says who vouched
    done = run(env, "verify", "--witness-db", str(book_path), "--witness", w)
    assert done.exit_code == 0, done.output
    assert f"vouched for by: {witness.name} (to {held.size} events)" in done.output

    # when the case is exported, for an auditor without a grant
    out = tmp_path / "case.bundle.json"
    done = run(
        env,
        "export",
        str(case),
        "--out",
        str(out),
        "--witness-db",
        str(book_path),
        "--witness",
        w,
        "--auditor",
        "auditor-1",
    )
    assert done.exit_code == 0, done.output
    bundle = json.loads(out.read_text())
    assert bundle["format"] == "cbcm-audit-bundle/v1" and bundle["log"] == log.vkey
    assert bundle["replay"]["personal_data"] == "redacted"
    events = bundle["events"]
    assert len(events) >= 3 and all(e["inclusion_proof"] is not None for e in events)

    # then our verifier and the Node one both prove every event, and name the witness
    done = run(env, "verify-bundle", str(out), "--witness", w)
    assert done.exit_code == 0, done.output
    assert f"verified: {len(events)} events" in done.output and witness.name in done.output
    result = node_verify(node_verifier, log.vkey, out, w)
    assert result["ok"] and result["proven"] == len(events)
    assert result["cosigners"] == [witness.name] and result["origin"] == ORIGIN

    # and a changed byte of an event, a changed proof, another log's key, or a witness that
    # did not cosign, each fail in both
    def tampered(change: Any) -> Path:
        copy = json.loads(out.read_text())
        change(copy)
        path = tmp_path / f"tampered-{random.random()}.json"
        path.write_text(json.dumps(copy))
        return path

    def flip_state(b: dict[str, Any]) -> None:
        state = bytearray(base64.b64decode(b["events"][1]["state"]))
        state[len(state) // 2] ^= 1
        b["events"][1]["state"] = base64.b64encode(bytes(state)).decode()

    def flip_proof(b: dict[str, Any]) -> None:
        proof = b["events"][0]["inclusion_proof"]
        proof[0] = base64.b64encode(bytes(32)).decode()

    for path in (tampered(flip_state), tampered(flip_proof)):
        assert run(env, "verify-bundle", str(path), "--witness", w).exit_code == 4
        assert not node_verify(node_verifier, log.vkey, path, w)["ok"]
    stranger = LogIdentity(ORIGIN, Ed25519PrivateKey.generate().public_key())
    assert run(env, "verify-bundle", str(out), "--log", stranger.vkey).exit_code == 4
    assert not node_verify(node_verifier, stranger.vkey, out)["ok"]
    other = witness_vkey("other.witness.cbcm.invalid", Ed25519PrivateKey.generate())
    refused = run(env, "verify-bundle", str(out), "--witness", other)
    assert refused.exit_code == 4 and "cosigned by 0" in refused.output
    assert node_verify(node_verifier, log.vkey, out, other)["cosigners"] == []
