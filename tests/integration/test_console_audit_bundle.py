"""The auditor's case bundle downloaded from the console (issue #21): ``cbcm audit
verify-bundle`` accepts the file the page gives, with the network's public keys alone, and
refuses it once a byte of it is changed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domain.actors import Role
from services.audit.checkpoints import sign_checkpoint, tree_head
from services.audit.keys import LogIdentity, load_signing_key, witness_vkey
from services.audit.witness import Cosigner, Outcome, WitnessBook
from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.event_store import chain
from services.event_store.store_id import store_id
from services.settings import Settings
from tests.api_world import World, make_world
from tests.console_signing import ON_THIS_MACHINE, sign_in
from tests.integration.test_api_access import CANARY, Clock, referral

ORIGIN = "cbcm.test/log/console"
WITNESS = Cosigner("unicef.witness.cbcm.invalid", Ed25519PrivateKey.generate())
W = witness_vkey(WITNESS.name, WITNESS.key)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    data = tmp_path / "data"
    witnesses = tmp_path / "witness"
    settings = {
        "audit_log_origin": ORIGIN,
        "witness_dir": witnesses,
        "audit_witnesses": W,
    }
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}", **settings)
    )
    yield make_world(data, mechanism, **settings)
    mechanism.close()


def _cosign(world: World) -> None:
    """The log's head signed, and cosigned by the witness the policy names, in its book."""
    app = world.mechanism
    key = load_signing_key(world.settings)
    head = chain.head(app.recorder)
    assert head is not None
    first = app.recorder.select_notifications(1, 1)[0]
    checkpoint = sign_checkpoint(
        key, store_id(first), head, datetime.now(UTC), tree_head(app.recorder, ORIGIN, head)
    )
    log = LogIdentity(ORIGIN, key.public_key())
    with WitnessBook.open(Path(world.settings.witness_dir or "") / "checkpoints.sqlite3") as book:
        assert book.record([checkpoint], log=log, cosigner=WITNESS) == [(Outcome.RECORDED, None)]


def _verify(world: World, path: Path) -> tuple[int, str]:
    env = {
        "CBCM_DATA_DIR": str(world.settings.data_dir),
        "CBCM_AUDIT_LOG_ORIGIN": ORIGIN,
        "CBCM_WITNESS_DIR": str(world.settings.witness_dir),
        "CBCM_AUDIT_WITNESSES": W,
    }
    done = CliRunner().invoke(cli, ["audit", "verify-bundle", str(path)], env=env)
    return done.exit_code, done.output


def test_a_bundle_downloaded_from_the_auditors_page_verifies_with_the_public_keys_alone(
    world: World, tmp_path: Path
) -> None:
    # given a case with an assistance referral, its log cosigned by the policy's witness
    case_id = world.mechanism.get_referral(referral(world.mechanism, Clock())).case_id
    _cosign(world)
    client = TestClient(world.api, follow_redirects=False, client=ON_THIS_MACHINE)
    sign_in(client, "aud-1", "ocha", Role.AUDITOR)
    # when the auditor opens the case and downloads its bundle
    page = client.get(f"/console/audit/cases/{case_id}")
    assert page.status_code == 200, page.text
    link = f"/console/audit/cases/{case_id}/bundle"
    assert f'href="{link}"' in page.text
    answer = client.get(link)
    assert answer.status_code == 200, answer.text
    assert "attachment" in answer.headers["content-disposition"]
    assert CANARY not in answer.text  # no grant: the replay in it is redacted
    bundle = json.loads(answer.content)
    assert bundle["format"] == "cbcm-audit-bundle/v1" and bundle["case_id"] == str(case_id)
    assert all(e["inclusion_proof"] is not None for e in bundle["events"])
    path = tmp_path / "downloaded.bundle.json"
    path.write_bytes(answer.content)
    # then cbcm audit verify-bundle proves every event of it
    code, output = _verify(world, path)
    assert code == 0, output
    assert f"verified: {len(bundle['events'])} events" in output and WITNESS.name in output
    # and a changed byte of an event's stored bytes is found
    state = bytearray(base64.b64decode(bundle["events"][0]["state"]))
    state[len(state) // 2] ^= 1
    bundle["events"][0]["state"] = base64.b64encode(bytes(state)).decode()
    path.write_text(json.dumps(bundle))
    assert _verify(world, path)[0] == 4


def test_without_a_cosigned_checkpoint_the_page_says_so_and_gives_no_bundle(
    world: World,
) -> None:
    case_id = world.mechanism.get_referral(referral(world.mechanism, Clock())).case_id
    client = TestClient(world.api, follow_redirects=False, client=ON_THIS_MACHINE)
    sign_in(client, "aud-1", "ocha", Role.AUDITOR)
    page = client.get(f"/console/audit/cases/{case_id}")
    assert page.status_code == 200 and "/bundle" not in page.text
    refused = client.get(f"/console/audit/cases/{case_id}/bundle")
    assert refused.status_code in (409, 503) and "text/html" in refused.headers["content-type"]
