"""``cbcm agency keygen`` and ``cbcm share open``, run as a recipient agency runs them, on a
share the real relay published to a real nats-server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import nats
from nacl.public import PrivateKey

from contracts.subjects import SHARES_STREAM
from domain.actors import Actor, Role
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    AgencyType,
    Channel,
    ComplainantRole,
    SharedItem,
    TransferReason,
)
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.relay.relay import Relay, ensure_shares_stream, ensure_stream
from services.relay.share_keys import key_id_of, write_private_key
from services.settings import Settings
from tests.conftest import T0
from tests.e2e.test_cli import CBCM
from tests.world import COORDINATOR

INTAKE = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return subprocess.run(
        [str(CBCM), *args], env=clean, input=stdin, capture_output=True, timeout=120, check=False
    )


def keygen(path: Path) -> dict[str, str]:
    done = run("agency", "keygen", "--out", str(path))
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.decode().splitlines())


async def published_share(tmp_path: Path, public_key: str) -> bytes:
    """One transfer to wfp sharing the complainant's name and a note, relayed for real."""
    app = complaint_mechanism(Settings(data_dir=tmp_path / "data"))
    try:

        def at(minutes: int) -> object:
            return T0 + timedelta(minutes=minutes)

        app.establish_network(actor=COORDINATOR, name="Net", at=at(0))
        for code in ("unhcr", "wfp"):
            app.register_agency(
                actor=COORDINATOR, code=code, name=code, agency_type=AgencyType.UN_AGENCY, at=at(1)
            )
        app.register_agency_share_key(
            actor=COORDINATOR, agency="wfp", public_key=public_key, at=at(2)
        )
        case_id = app.receive_complaint(
            actor=INTAKE,
            at=at(3),
            received_at=at(3),
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.WITNESS,
            immediate_safety_risk=False,
            narrative="what was said",
            complainant=PersonDetails(name="Complainant Name"),
        ).id
        app.transfer_case(
            case_id,
            actor=COORDINATOR,
            to_agency="wfp",
            reason=TransferReason.CAPACITY,
            shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.COMPLAINANT_IDENTITY),
            note="call after noon",
            at=at(4),
        )
        with EmbeddedNats(tmp_path / "nats") as server:
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                await ensure_stream(js)
                await ensure_shares_stream(js)
                await Relay(app, js).publish_pending()
                message = await js.get_msg(SHARES_STREAM, 1)
            finally:
                await nc.close()
        assert message.data is not None
        return message.data
    finally:
        app.close()


async def test_keygen_then_open_a_share_the_relay_published(tmp_path: Path) -> None:
    # given an agency's key made with keygen and registered by the coordinator
    key_file = tmp_path / "wfp-share.key"
    printed = keygen(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(printed["key_id"]) == 16
    share = await published_share(tmp_path, printed["public_key"])
    assert b"Complainant Name" not in share

    # when the agency opens the share, from stdin and from a file
    from_stdin = run("share", "open", "--key", str(key_file), stdin=share)
    (tmp_path / "share.json").write_bytes(share)
    from_file = run("share", "open", "--key", str(key_file), "--in", str(tmp_path / "share.json"))

    # then it reads exactly what the transfer shared
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    opened = json.loads(from_stdin.stdout)
    assert opened["fields"] == {"complainant.name": "Complainant Name", "note": "call after noon"}
    assert opened["erased"] == []
    assert opened["recipient"] == "wfp"
    assert opened["key_id"] == printed["key_id"]
    assert opened["event_type"] == "org.psea.cbcm.case.transferred.v1"


async def test_another_key_or_an_altered_share_does_not_open(tmp_path: Path) -> None:
    key_file, other_file = tmp_path / "wfp.key", tmp_path / "other.key"
    printed = keygen(key_file)
    other = PrivateKey.generate()
    write_private_key(other_file, other)
    share = await published_share(tmp_path, printed["public_key"])

    # another agency's key: exit 6, one line naming the keys, no value
    wrong = run("share", "open", "--key", str(other_file), stdin=share)
    assert wrong.returncode == 6
    assert key_id_of(other).encode() in wrong.stderr
    assert b"Complainant" not in wrong.stdout + wrong.stderr

    # one bit of the sealed box changed: exit 6
    message = json.loads(share)
    sealed = message["data"]["sealed"]
    flipped = "B" if sealed[60] == "A" else "A"
    message["data"]["sealed"] = sealed[:60] + flipped + sealed[61:]
    altered = run("share", "open", "--key", str(key_file), stdin=json.dumps(message).encode())
    assert altered.returncode == 6, altered.stderr
    assert b"does not open" in altered.stderr

    # not a share, a missing key file, a key file taken: exit 2
    assert run("share", "open", "--key", str(key_file), stdin=b"{}").returncode == 2
    assert run("share", "open", "--key", str(tmp_path / "none"), stdin=share).returncode == 2
    again = run("agency", "keygen", "--out", str(key_file))
    assert again.returncode == 2
    assert b"never overwritten" in again.stderr
