"""The log decides what is erased even when the database is rolled back (issue 15, review
15b A1 and A3; ADR 23), on SQLite and PostgreSQL, through what a user of cbcm sees.

- A1: the owner cuts the log's tail holding an erasure (its event, link and mark) and puts
  the wrapped key rows back from a copy taken before it: a fresh process must still show
  nothing erased, and say the store is behind its erasure ledger; verify must alarm.
- A3: the owner deletes an erasure in the middle of the log, recomputes every link after
  it, and puts the key rows back: the same.
- A store cut back behind the head the network signed (its writer marks too): a fresh
  process and verify name it from the high-water mark beside the keys.
- A writer record upgraded before records were sealed, moved past a forged event after a
  process of this version opened the store: its start kept beside the keys tells.
- A host restored with a keys directory older than an erasure learns it back from the
  audit stream, where the checkpoint publisher told it.
- The operator's restore (issue 17): the database restored from a backup taken before an
  erasure, the keys directory (holding the erasure ledger) kept: the erasure stays in force,
  the network writes on, and what is recorded after the restore is shown.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest
import structlog
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.vocabulary import FeedbackChannel
from services.api.replay import replay_case
from services.application.key_rotation import rotate
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_signing_key
from services.bootstrap import complaint_mechanism
from services.event_store.chain import head
from services.event_store.custody import WriterKeyError
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import T0, init_store
from tests.integration.cli_runs import run_cbcm
from tests.integration.test_audit_chain import Dba as ChainDba
from tests.integration.test_custody import (
    AUDITOR,
    FOCAL,
    Dba,
    cli_run,
    complaint,
    erase_everyone,
    every_read_path,
    minutes,
    read_paths,
    verify_chain_alone,
)
from tests.integration.test_custody_review import _append_copy, owner_unlock

LEDGER_ALARM = "personal_data.erasure_not_in_log"


def cut_tail_after(app: ComplaintMechanism, position: int) -> None:
    """The owner deletes every event, link and writer mark after ``position``."""
    owner_unlock(app)
    dba = Dba(app)
    pos = "rowid" if dba.sqlite else "notification_id"
    marks = f"{dba.names['events']}_writer"
    if not dba.sqlite:
        marks = f'"{dba.recorder.datastore.schema}"."{marks}"'
    with dba.sql() as c:
        c.execute(dba.q(f"DELETE FROM {dba.tables['events']} WHERE {pos} > ?"), (position,))
        c.execute(dba.q(f"DELETE FROM {dba.tables['chain']} WHERE position > ?"), (position,))
        c.execute(dba.q(f"DELETE FROM {marks} WHERE position > ?"), (position,))


def alarms_of(logs: list[Any]) -> list[Any]:
    return [e for e in logs if e["event"] == LEDGER_ALARM]


def test_an_erasure_cut_off_the_tail_with_its_key_rows_put_back_stays_in_force(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case erased by a recorded decision, the last thing the log holds, and a copy
    # of the key rows from before
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-tail")
    kept = complaint(app, "CANARY-kept", at=5)
    dba = Dba(app)
    copy = dba.key_rows()
    before = head(app.recorder)
    assert before is not None
    erase_everyone(app, case_id)
    erased_at = before.position + 1

    # when the owner cuts the erasure off the log's tail (event, link and mark) and puts the
    # key rows back: the store as it was before the erasure
    cut_tail_after(app, before.position)
    dba.restore_key_rows(copy)

    # then verify names the rollback at the erasure's position, naming no personal data
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {erased_at}: truncated" in done.output
    assert "erasure ledger" in done.output
    assert "CANARY" not in done.output
    # and a fresh process shows no erased value on any read path, and says the store is
    # behind its erasure ledger, naming the position and no personal data
    with structlog.testing.capture_logs() as logs:
        fresh = reopen()
        shown = every_read_path(fresh, settings, case_id)
    assert "CANARY-tail" not in shown
    assert "CANARY-kept narrative" in every_read_path(fresh, settings, kept)
    told = alarms_of(logs)
    assert told and {e["position"] for e in told} == {erased_at}
    assert "CANARY" not in json.dumps(told, default=str)


def test_an_erasure_deleted_mid_log_with_links_recomputed_stays_in_force(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case erased by a recorded decision, more recorded after it, and a copy of the
    # key rows from before the erasure
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-mid")
    dba = Dba(app)
    copy = dba.key_rows()
    erase_everyone(app, case_id)
    erased_at = app.position_of(case_id, app.get_case(case_id).version)
    complaint(app, "CANARY-after", at=40)

    # when the owner deletes the erasure event, recomputes every link after it, and puts
    # the key rows back
    owner_unlock(app)
    chain = ChainDba(app)
    chain.delete(erased_at, link_too=True)
    chain.relink_from(erased_at + 1)
    dba.restore_key_rows(copy)

    # then no read path shows an erased value, in a fresh process, which names the erasure
    # its ledger holds and the log no longer does
    with structlog.testing.capture_logs() as logs:
        fresh = reopen()
        shown = every_read_path(fresh, settings, case_id)
    assert "CANARY-mid" not in shown
    told = alarms_of(logs)
    assert told and {e["position"] for e in told} == {erased_at}
    # and verify says the ledger's erasure is gone from the log
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"position {erased_at} is not in the log" in done.output


def test_a_restore_from_a_backup_taken_before_an_erasure_keeps_it_in_force(
    app: ComplaintMechanism, settings: Settings, tmp_path: Path
) -> None:
    # given a backup of the database taken before a case was erased (the tail after it is
    # what a restore of that backup loses), and the keys directory backed up after it
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-restored")
    dba = Dba(app)
    copy = dba.key_rows()
    before = head(app.recorder)
    assert before is not None
    erase_everyone(app, case_id)
    keys_backup = tmp_path / "keys-backup"
    shutil.copytree(settings.data_dir / "keys", keys_backup)

    # when the operator restores both on a fresh data directory: the database as the backup
    # had it (its tail after the backup gone, the key rows as they were), the keys directory
    cut_tail_after(app, before.position)
    dba.restore_key_rows(copy)
    fresh_dir = tmp_path / "restored"
    fresh_dir.mkdir()
    shutil.copytree(keys_backup, fresh_dir / "keys")
    restored = Settings(data_dir=fresh_dir, event_store=settings.event_store)
    network = complaint_mechanism(restored)
    try:
        # then the erasure made after the backup stays in force, the network writes on, and
        # what it records after the restore is shown
        with read_paths(network, restored) as network_reads:
            assert "CANARY-restored" not in network_reads(case_id)
            after = complaint(network, "CANARY-new", at=50)
            assert "CANARY-new narrative" in network_reads(after)
        another = complaint_mechanism(restored)
        assert "CANARY-restored" not in every_read_path(another, restored, case_id)
        another.close()

        # and verify says the restored log lacks an erasure the network made, until the
        # operator acknowledges the restore: the erasure stays in force, the key rows the
        # restore brought back are destroyed again, and verify is intact
        before_ack = verify_chain_alone(restored)
        assert before_ack.exit_code == 4, before_ack.output
        assert "erasure ledger" in before_ack.output
        acknowledged = cli_run(restored, "audit", "acknowledge-restore")
        assert acknowledged.exit_code == 0, acknowledged.output
        assert "stay in force" in acknowledged.output
        after_ack = verify_chain_alone(restored)
        assert after_ack.exit_code == 0, after_ack.output
        scope = case_id.hex if dba.sqlite else case_id
        assert all(r[4] is None for r in Dba(network).key_rows() if r[0] == scope)
        fresh = complaint_mechanism(restored)
        assert "CANARY-restored" not in every_read_path(fresh, restored, case_id)
        fresh.close()
    finally:
        network.close()


async def test_a_store_cut_behind_a_signed_checkpoint_with_its_marks_is_named_from_the_keys(
    app: ComplaintMechanism, settings: Settings, nats_server: Any, reopen: Any
) -> None:
    # given a store whose head the network's publisher signed
    build_network(app, T0 - timedelta(days=1))
    complaint(app, "CANARY-a", at=1)
    before = head(app.recorder)
    assert before is not None
    complaint(app, "CANARY-b", at=5)
    key = load_signing_key(settings)
    signed = await checkpoint_once(app, key, nats_server.url, nats_options={})
    assert signed is not None and signed.position > before.position

    # when the owner cuts the log back (events, links and writer marks), as a restore of an
    # older copy would, and the database alone is consulted
    cut_tail_after(app, before.position)

    # then a fresh process says its store is behind what the network signed, and verify
    # (without the checkpoints) names the truncation from the high-water mark beside the keys
    with structlog.testing.capture_logs() as logs:
        reopen()
    told = [e for e in logs if e["event"] == "audit.store_behind_high_water"]
    assert [e["position"] for e in told] == [signed.position]
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {signed.position}: truncated" in done.output
    assert "high-water mark" in done.output


# ------------------------------------------------------------------ any sequence


def erasures_outlive_rollbacks(store_url: str, tmp_path: Path, ops: list[Any]) -> None:
    """Record, erase, back up (key rows and the head), restore a backup (the log cut back to
    its head, the key rows as it had them), put key rows back alone, rotate the KEK, in any
    order: no value recorded before its case's last erasure is ever shown again, and every
    value recorded after it, that the log still holds, is."""
    name = uuid4().hex[:12]
    if store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / name / 'events.sqlite3'}"
    else:  # a schema of its own: every example starts from an empty store
        base = re.sub(r"[?&]schema=[^&]+", "", store_url)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA r_{name}")
        url = init_store(f"{base}{'&' if '?' in base else '?'}schema=r_{name}")
    settings = Settings(data_dir=tmp_path / name, event_store=url)
    app = complaint_mechanism(settings)
    try:
        build_network(app, T0 - timedelta(days=1))
        cases = [complaint(app, f"CANARY-c{i}-first", at=i) for i in range(2)]
        start = head(app.recorder)
        assert start is not None
        # each value shown while the log holds it: value -> position recorded at
        live: list[dict[str, int]] = [{f"CANARY-c{i}-first narrative": 0} for i in range(2)]
        dead: set[str] = set()
        dba = Dba(app)
        backups: list[tuple[list[tuple[Any, ...]], int]] = []
        for n, (op, i) in enumerate(ops):
            case = cases[i % 2]
            if op == "feedback":
                # two digits: "CANARY-c0-v1" is no part of "CANARY-c0-v10" (up to 12 steps)
                value = f"CANARY-c{i % 2}-v{n:02d}"
                written = app.give_feedback(
                    case,
                    actor=FOCAL,
                    message=value,
                    channel=FeedbackChannel.PHONE,
                    at=minutes(10 + n),
                )
                live[i % 2][value] = written.position
            elif op == "erase":
                erase_everyone(app, case, at=10 + n)
                dead |= set(live[i % 2])
                live[i % 2] = {}
            elif op == "backup":
                top = head(app.recorder)
                assert top is not None
                backups.append((dba.key_rows(), top.position))
            elif op == "restore" and backups:
                rows, position = backups[i % len(backups)]
                cut_tail_after(app, position)
                dba.restore_key_rows(rows)
                for values in live:
                    for value in [v for v, at in values.items() if at > position]:
                        del values[value]  # lost with the tail: neither shown nor erased
            elif op == "restore_keys" and backups:
                dba.restore_key_rows(backups[i % len(backups)][0])
            elif op == "rotate":
                rotate(app)
        for reader in (app, complaint_mechanism(settings)):
            for c, case in enumerate(cases):
                shown = json.dumps(
                    replay_case(reader, case, reveal_personal=True, reader=AUDITOR).to_json()
                )
                assert not [v for v in dead if v.split(" ")[0] in shown]
                assert all(v.split(" ")[0] in shown for v in live[c])
            if reader is not app:
                reader.close()
    finally:
        app.close()
        if not store_url.startswith("sqlite"):
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA r_{name} CASCADE")


ROLLBACK_OPS = st.lists(
    st.tuples(
        st.sampled_from(["feedback", "erase", "backup", "restore", "restore_keys", "rotate"]),
        st.integers(0, 3),
    ),
    max_size=12,
)


@given(ops=ROLLBACK_OPS)
@example(ops=[("backup", 0), ("erase", 0), ("restore", 0)])
@example(ops=[("backup", 0), ("feedback", 0), ("erase", 0), ("restore", 0), ("feedback", 0)])
@example(
    ops=[("backup", 1), ("erase", 1), ("restore", 0), ("feedback", 1), ("erase", 1), ("restore", 0)]
)
@example(
    ops=[
        ("backup", 0),
        ("feedback", 0),
        ("feedback", 0),
        ("feedback", 0),
        ("erase", 0),
        ("restore", 0),
        ("feedback", 0),
        ("erase", 0),
        ("restore", 0),
    ]
)
@hsettings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_erased_value_comes_back_whatever_is_rolled_back(
    store_url: str, tmp_path: Path, ops: list[Any]
) -> None:
    erasures_outlive_rollbacks(store_url, tmp_path, ops)


@pytest.mark.soak
@given(ops=ROLLBACK_OPS)
@hsettings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_erased_value_comes_back_whatever_is_rolled_back_soak(
    store_url: str, tmp_path: Path, ops: list[Any]
) -> None:
    erasures_outlive_rollbacks(store_url, tmp_path, ops)


# ------------------------------------------------------------------ an unsealed start, kept


def test_an_unsealed_writer_record_moved_after_a_process_kept_its_start_is_damage(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a store upgraded to writer marks before their record was sealed (the record
    # holds the key id alone, marks from the head on, no store nonce)
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-old", at=1)
    key = app.recorder.writer  # type: ignore[attr-defined]
    owner_unlock(app)
    dba = Dba(app)
    tables = {}
    for name in ("writer", "custody"):
        table = f"{dba.names['events']}_{name}"
        tables[name] = table if dba.sqlite else f'"{dba.recorder.datastore.schema}"."{table}"'
    top = head(app.recorder)
    assert top is not None
    with dba.sql() as c:
        c.execute(f"DELETE FROM {tables['writer']}")
        c.execute(f"DELETE FROM {tables['custody']}")
        c.execute(
            dba.q(f"INSERT INTO {tables['custody']} VALUES (?, ?, ?)"),
            (f"writer:{key.key_id}", key.key_id, top.position + 1),
        )
    complaint(reopen(), "CANARY-new", at=10)  # a process of the new code opened it
    assert verify_chain_alone(settings).exit_code == 0

    # when the owner forges an event on the old case and moves the record past it, with
    # the marks before the new start deleted
    forged_at = _append_copy(app, app.position_of(case_id, 2), case_id)
    owner_unlock(app)
    with dba.sql() as c:
        c.execute(f"DELETE FROM {tables['writer']}")
        c.execute(f"DELETE FROM {tables['custody']}")
        c.execute(
            dba.q(f"INSERT INTO {tables['custody']} VALUES (?, ?, ?)"),
            (f"writer:{key.key_id}", key.key_id, forged_at + 1),
        )

    # then verify names damage from the start kept beside the keys, and no process writes
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert "custody record was moved" in done.output
    with pytest.raises(WriterKeyError, match="custody record was moved"):
        complaint(reopen(), "CANARY-after", at=20)


# ------------------------------------------------------------------ learnt back from NATS


async def test_a_host_restored_with_keys_older_than_an_erasure_learns_it_from_the_audit_stream(
    app: ComplaintMechanism, settings: Settings, nats_server: Any, tmp_path: Path
) -> None:
    # given the keys directory backed up before a case was erased, the database too, and
    # the erasure then signed over by the network's checkpoint publisher
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-told")
    dba = Dba(app)
    copy = dba.key_rows()
    before = head(app.recorder)
    assert before is not None
    keys_backup = tmp_path / "keys-before"
    shutil.copytree(settings.data_dir / "keys", keys_backup)
    erase_everyone(app, case_id)
    key = load_signing_key(settings)
    assert await checkpoint_once(app, key, nats_server.url, nats_options={}) is not None

    # when both are restored on a fresh data directory (the erasure in neither)
    cut_tail_after(app, before.position)
    dba.restore_key_rows(copy)
    fresh_dir = tmp_path / "restored"
    fresh_dir.mkdir()
    shutil.copytree(keys_backup, fresh_dir / "keys")
    restored = Settings(data_dir=fresh_dir, event_store=settings.event_store)

    # then the host learns the erasure back from the audit stream, and no read path of a
    # process started afterwards shows what was erased
    env = {
        "CBCM_DATA_DIR": str(fresh_dir),
        "CBCM_EVENT_STORE": settings.event_store,
        "CBCM_EVENT_CIPHER": settings.event_cipher,
        "CBCM_NATS_URL": nats_server.url,
    }
    learnt = await asyncio.to_thread(run_cbcm, ["audit", "learn-erasures"], env=env)
    assert learnt.exit_code == 0, learnt.output
    assert "erasure(s) told on the audit stream" in learnt.output
    network = complaint_mechanism(restored)
    try:
        shown = await asyncio.to_thread(every_read_path, network, restored, case_id)
        assert "CANARY-told" not in shown
    finally:
        network.close()
