"""Webhook deliveries survive a killed deliverer and a receiver that is down (issue #19).

``cbcm webhooks deliver`` runs as its own process on a real store and a real nats-server,
delivering to a Node receiver that verifies each delivery with the ``standardwebhooks`` npm
package. While cases are recorded and relayed in rounds, the deliverer is killed with
SIGKILL in the middle of its deliveries, and the receiver is stopped for a while (every
attempt then fails and is retried). At the end: every event each agency must get arrived
and verified, no event arrived under two ids (a repeat keeps its ``webhook-id``), each
case's events arrived first in their order, and agency B's receiver got nothing of A's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts.subjects import STREAM
from domain.actors import Actor, Role
from domain.vocabulary import Channel, ComplainantRole
from services.application.webhooks import AGENCY_EVENT_TYPES
from services.bootstrap import complaint_mechanism
from services.nats.server import EmbeddedNats
from services.relay.relay import Relay, ensure_stream
from services.settings import Settings
from services.webhooks.outbox import Outbox, outbox_path
from tests.scenario import at, walk_sea_case
from tests.webhook_receiving import NodeReceiver
from tests.world import COORDINATOR, establish

pytestmark = pytest.mark.fault

WFP_OPERATOR = Actor("op-wfp-1", "wfp", Role.INTAKE_OPERATOR)
ROUNDS = 6


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def until(check: Any, within: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for a condition")
        await asyncio.sleep(0.05)


def start_deliverer(
    data_dir: Path, store: str, nats_url: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CBCM_DATA_DIR": str(data_dir),
        "CBCM_EVENT_STORE": store,
        "CBCM_NATS_URL": nats_url,
        "CBCM_LOG_FORMAT": "json",
        "CBCM_WEBHOOK_RETRY_FIRST_SECONDS": "0.1",
        "CBCM_WEBHOOK_RETRY_MOST_SECONDS": "0.5",
    }
    cbcm = Path(sys.executable).parent / "cbcm"
    with log.open("ab") as out:
        return subprocess.Popen(  # our own command
            [str(cbcm), "webhooks", "deliver"], env=env, stdout=out, stderr=out
        )


def failed_attempts(data_dir: Path) -> int:
    path = outbox_path(data_dir)
    if not path.exists():
        return 0
    outbox = Outbox(path, readonly=True)
    try:
        return sum(1 for a in outbox.attempts(last=100_000) if a.outcome == "failed")
    finally:
        outbox.close()


async def test_deliveries_survive_sigkill_of_the_deliverer_and_a_receiver_down_for_a_while(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    app = complaint_mechanism(Settings(data_dir=tmp_path, event_store=store))
    establish(app, at(-24))
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_stream(js)
    keys = {"/unhcr": new_secret(), "/wfp": new_secret()}
    receiver = NodeReceiver(tmp_path / "received.jsonl", keys).start()
    port = receiver.port
    registered = {}
    for agency in ("unhcr", "wfp"):
        written = app.register_webhook(
            actor=COORDINATOR,
            agency=agency,
            url=receiver.url(f"/{agency}"),
            secret=keys[f"/{agency}"],
            event_types=tuple(sorted(AGENCY_EVENT_TYPES)),
            at=datetime.now(UTC),
        )
        registered[agency] = written.position
    log = tmp_path / "deliverer.log"
    deliverer = start_deliverer(tmp_path, store, nats_server.url, log)
    kills = 0
    down_failures = 0
    try:
        for round_ in range(ROUNDS):
            for _ in range(3):
                walk_sea_case(app)
                app.receive_complaint(
                    actor=WFP_OPERATOR,
                    at=at(round_),
                    received_at=at(round_),
                    channel=Channel.HOTLINE,
                    complainant_role=ComplainantRole.WITNESS,
                    immediate_safety_risk=False,
                    narrative="heard at the distribution",
                )
            if round_ == 2:  # the receiver goes down for a while
                receiver.stop()
                before = failed_attempts(tmp_path)
                await Relay(app, js).publish_pending()
                await until(lambda b=before: failed_attempts(tmp_path) >= b + 10)
                down_failures = failed_attempts(tmp_path) - before
                receiver.port = port
                receiver.start()
                continue
            seen = len(receiver.lines())
            await Relay(app, js).publish_pending()
            # kill it in the middle of this round's deliveries
            await until(lambda s=seen: len(receiver.lines()) >= s + 5)
            deliverer.send_signal(signal.SIGKILL)
            deliverer.wait(10)
            kills += 1
            deliverer = start_deliverer(tmp_path, store, nats_server.url, log)

        last = (await js.stream_info(STREAM)).state.last_seq
        stream = []
        for seq in range(1, last + 1):
            raw = await js.get_msg(STREAM, seq=seq)
            stream.append((raw.subject, json.loads(raw.data or b"{}")))
        want = {
            agency: [
                ce["id"]
                for subject, ce in stream
                if subject.startswith(f"cbcm.v1.evt.{agency}.")
                and ce["position"] > registered[agency]
            ]
            for agency in ("unhcr", "wfp")
        }

        def all_arrived() -> bool:
            return all(
                {line["ce"]["id"] for line in receiver.verified(f"/{a}")} >= set(want[a])
                for a in want
            )

        await until(all_arrived, within=120)
    finally:
        deliverer.send_signal(signal.SIGTERM)
        deliverer.wait(20)
        receiver.stop()
        await nc.close()
        app.close()

    lines = receiver.lines()
    assert all(line["ok"] for line in lines), [line["error"] for line in lines if not line["ok"]]
    repeats = 0
    for agency, wanted in want.items():
        got = receiver.verified(f"/{agency}")
        ids_by_event: dict[str, set[str]] = defaultdict(set)
        for line in got:
            ids_by_event[line["ce"]["id"]].add(line["webhook_id"])
        assert set(ids_by_event) == set(wanted)  # every event, and only this agency's
        assert all(ids == {event} for event, ids in ids_by_event.items())  # one id each
        first_seen = list(dict.fromkeys(line["ce"]["id"] for line in got))
        assert first_seen == wanted  # in order (so each case's events in theirs)
        repeats += len(got) - len(wanted)
    assert kills == ROUNDS - 1 and down_failures >= 10
    print(  # the figures for the report (pytest -s)
        f"webhook crash test: {sum(len(w) for w in want.values())} events, {kills} SIGKILLs, "
        f"{down_failures} failed attempts while the receiver was down, {repeats} repeats"
    )
