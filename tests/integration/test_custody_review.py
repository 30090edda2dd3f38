"""The second attacker review of custody (issue 15, ADR 14), each attack a test on SQLite and
PostgreSQL that the defence must hold against, through what a user of cbcm sees.

- A6/A6b: a made-up erasure event, or another record's genuine erasure copied as a live
  case's next event with a correct link (INSERT grant only), must hide nothing and be named
  as forged.
- A4/A4b/A4c: the owner moves the writer key's record past a forged or rewritten event
  (keeping every mark): verify must alarm, the publisher must not sign over it.
- A2: the log's tail cut at a commit boundary with its marks left: verify says truncated.
- A5: rotating the KEK must not rewrap data keys the log erased (rows put back).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import structlog

from services.api.replay import replay_case
from services.application.key_rotation import retire, rotate
from services.application.mechanism import ComplaintMechanism
from services.audit.custody import signable_head
from services.event_store.chain import head, link_hash
from services.event_store.custody import WriterKeyError
from services.event_store.personal_data.erasure_log import CASE_ERASED
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import T0
from tests.integration.test_audit_chain import Dba as ChainDba
from tests.integration.test_custody import (
    AUDITOR,
    Dba,
    cli_run,
    complaint,
    erase_everyone,
    every_read_path,
    verify_chain_alone,
)

SUBJECTS = ["complainant", "survivor", "alleged_perpetrator", "case"]


def _insert_event(
    app: ComplaintMechanism, oid: UUID, version: int, topic: str, state: bytes, *, link: bool
) -> int:
    """What the INSERT grant allows: an event (and, if ``link``, its correct chain link)."""
    dba = Dba(app)
    ev, ch = dba.tables["events"], dba.tables["chain"]
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(
            dba.q(
                f"INSERT INTO {ev} (originator_id, originator_version, topic, state) "
                f"VALUES (?, ?, ?, ?) RETURNING {pos}"
            ),
            (oid.hex if dba.sqlite else oid, version, topic, state),
        )
        position = int(dba.values(c.fetchone())[0])
        if link:
            c.execute(f"SELECT position, link FROM {ch} ORDER BY position DESC LIMIT 1")
            previous, last = dba.values(c.fetchone())
            linked = link_hash(
                bytes(last),
                position=position,
                originator_id=oid,
                version=version,
                topic=topic,
                state=state,
            )
            c.execute(
                dba.q(f"INSERT INTO {ch} VALUES (?, ?, ?)"), (position, int(previous), linked)
            )
    return position


def _append_copy(app: ComplaintMechanism, of_position: int, case_id: UUID) -> int:
    """A copy of the event at ``of_position`` as the case's next event, correctly linked."""
    dba = Dba(app)
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(
            dba.q(f"SELECT topic, state FROM {dba.tables['events']} WHERE {pos} = ?"),
            (of_position,),
        )
        topic, state = dba.values(c.fetchone())
    version = app.get_case(case_id).version + 1
    return _insert_event(app, case_id, version, str(topic), bytes(state), link=True)


# ------------------------------------------------------------------ A6: forged erasures


def test_a_made_up_erasure_event_hides_no_live_case(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a live case
    build_network(app, T0 - timedelta(days=1))
    victim = complaint(app, "CANARY-live", at=1)
    assert "CANARY-live narrative" in every_read_path(reopen(), settings, victim)

    # when someone with the INSERT grant makes up an erasure event naming it (encrypted as
    # the store's events are, as if they also held the whole-event cipher's key)
    state = json.dumps({"records": [str(victim)], "subjects": SUBJECTS}).encode()
    cipher = app.mapper.cipher
    stored = state if cipher is None else cipher.encrypt(state)
    forged_at = _insert_event(app, uuid4(), 1, CASE_ERASED, stored, link=True)

    # then every read path still shows the live case's data, the application names the
    # forgery (once), and so does verify
    with structlog.testing.capture_logs() as logs:
        shown = every_read_path(reopen(), settings, victim)
    alarms = [e for e in logs if e["event"] == "personal_data.forged_erasure"]
    # once per process: the application read, and the two `cbcm audit case` runs
    assert [e["position"] for e in alarms] == [forged_at] * 3
    assert "CANARY" not in json.dumps(alarms, default=str)
    assert "CANARY-live narrative" in shown
    assert "CANARY-live name" in shown
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {forged_at}: forged" in done.output
    assert "put back" not in done.output


def test_another_records_erasure_copied_as_a_live_cases_next_event_erases_nothing(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a live case, and another case whose personal data was erased
    build_network(app, T0 - timedelta(days=1))
    victim = complaint(app, "CANARY-victim", at=1)
    other = complaint(app, "CANARY-other", at=5)
    erase_everyone(app, other)

    # when the other case's erasure event is copied byte for byte (ciphertext) as the
    # victim's next event, with a correct link (the INSERT grant)
    dba = Dba(app)
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(
            dba.q(
                f"SELECT state FROM {dba.tables['events']} WHERE topic = ? "
                f"ORDER BY {pos} DESC LIMIT 1"
            ),
            (CASE_ERASED,),
        )
        (state,) = dba.values(c.fetchone())
    version = app.get_case(victim).version + 1
    forged_at = _insert_event(app, victim, version, CASE_ERASED, bytes(state), link=True)

    # then the victim's data is still shown, and verify names the copy as forged
    shown = every_read_path(reopen(), settings, victim)
    assert "CANARY-victim narrative" in shown
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"{forged_at}: forged" in done.output
    assert "put back" not in done.output


# ------------------------------------------------------------------ A4: the record moved


def owner_unlock(app: ComplaintMechanism) -> None:
    """The owner drops (SQLite) or disables (PostgreSQL) every trigger of the store."""
    dba = Dba(app)
    with dba.sql() as c:
        if dba.sqlite:
            c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            for (name,) in [tuple(r) for r in c.fetchall()]:
                c.execute(f"DROP TRIGGER {name}")
        else:
            schema = dba.recorder.datastore.schema
            events = dba.names["events"]
            for suffix in ("", "_chain", "_writer", "_custody", "_data_keys"):
                c.execute(f'ALTER TABLE "{schema}"."{events}{suffix}" DISABLE TRIGGER USER')


def move_writer_record(app: ComplaintMechanism, *, to: int | None = None) -> None:
    """The owner re-records the writer key's start past the chain's head (or at ``to``),
    keeping its value, every mark and the store nonce (the store id is unchanged)."""
    dba = Dba(app)
    table = f"{dba.names['events']}_custody"
    if not dba.sqlite:
        table = f'"{dba.recorder.datastore.schema}"."{table}"'
    top = head(app.recorder)
    assert top is not None
    with dba.sql() as c:
        c.execute(f"SELECT name, value FROM {table}")
        rows = [dba.values(r) for r in c.fetchall()]
        name, value = next(r for r in rows if str(r[0]).startswith("writer:"))
        c.execute(dba.q(f"DELETE FROM {table} WHERE name = ?"), (name,))
        c.execute(
            dba.q(f"INSERT INTO {table} VALUES (?, ?, ?)"),
            (name, value, top.position + 1 if to is None else to),
        )


def test_a_rewrite_hidden_by_moving_the_writer_record_past_it_is_damage(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case, and more after it
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-rw", at=1)
    target = app.position_of(case_id, 1)
    complaint(app, "CANARY-later", at=10)

    # when the owner rewrites its first event, recomputes every link, and moves the writer
    # key's record past the head (keeping every mark)
    owner_unlock(app)
    chain_dba = ChainDba(app)
    chain_dba.change_one_byte(target)
    chain_dba.relink_from(target)
    move_writer_record(app)

    # then verify calls it damage, and a process on the store writes nothing
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert "custody record was moved" in done.output
    fresh = reopen()
    with pytest.raises(WriterKeyError, match="custody record was moved"):
        complaint(fresh, "CANARY-new", at=20)


def test_a_forged_allegation_behind_a_moved_writer_record_is_neither_verified_nor_signed(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case, and a forged event appended to it with a correct link (INSERT grant)
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-orig", at=1)
    publisher = reopen()
    assert signable_head(publisher) is not None
    forged_at = _append_copy(app, app.position_of(case_id, 2), case_id)
    assert verify_chain_alone(settings).exit_code == 4

    # when the owner moves the writer key's record past it
    owner_unlock(app)
    move_writer_record(app)

    # then verify still names damage, the forged record's replay is not VERIFIED, and no
    # publisher (running, or started afresh) signs a checkpoint
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert "custody record was moved" in done.output
    assert f"forged at {forged_at}" in done.output
    fresh = reopen()
    replay = replay_case(fresh, case_id)
    assert not replay.verified
    assert signable_head(publisher) is None
    assert signable_head(fresh) is None


def test_a_sealed_writer_record_moved_on_a_store_upgraded_to_marks_is_damage(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a store written before marks (no nonce), upgraded by the operator
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-old", at=1)
    dba = Dba(app)
    owner_unlock(app)
    with dba.sql() as c:
        for name in ("writer", "custody"):
            table = f"{dba.names['events']}_{name}"
            if not dba.sqlite:
                table = f'"{dba.recorder.datastore.schema}"."{table}"'
            c.execute(f"DELETE FROM {table}")
    assert cli_run(settings, "audit", "start-marks").exit_code == 0
    complaint(reopen(), "CANARY-new", at=10)
    assert verify_chain_alone(settings).exit_code == 0

    # when the owner forges an event on the old case and moves the record past it, with
    # the marks before the new start deleted too
    _append_copy(app, app.position_of(case_id, 2), case_id)
    owner_unlock(app)  # the start-marks command's process put the triggers back
    with dba.sql() as c:
        table = f"{dba.names['events']}_writer"
        if not dba.sqlite:
            table = f'"{dba.recorder.datastore.schema}"."{table}"'
        c.execute(f"DELETE FROM {table}")
    move_writer_record(app)

    # then the record's seal does not verify: verify names damage, the publisher signs nothing
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert "does not verify under the key" in done.output
    assert signable_head(reopen()) is None


# ------------------------------------------------------------------ A2: the tail cut


def test_a_tail_cut_at_a_commit_boundary_with_its_marks_left_is_truncation(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given two complaints, the second recorded after the first's last commit
    build_network(app, T0 - timedelta(days=1))
    complaint(app, "CANARY-a", at=1)
    top = head(app.recorder)
    assert top is not None
    complaint(app, "CANARY-b", at=5)

    # when the owner cuts the log after the first (events and links), leaving the marks
    owner_unlock(app)
    dba = Dba(app)
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(dba.q(f"DELETE FROM {dba.tables['events']} WHERE {pos} > ?"), (top.position,))
        c.execute(dba.q(f"DELETE FROM {dba.tables['chain']} WHERE position > ?"), (top.position,))

    # then verify says the store was truncated after its new end
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {top.position + 1}: truncated" in done.output


# ------------------------------------------------------------------ A5: rotation


def test_a_rotation_destroys_erased_keys_put_back_rather_than_rewrap_them(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case whose personal data was erased, its key rows then put back from a copy
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-laundered", at=1)
    kept = complaint(app, "CANARY-kept", at=3)
    dba = Dba(app)
    copy = dba.key_rows()
    first_kek = copy[0][3]
    erase_everyone(app, case_id)
    dba.restore_key_rows(copy)

    # when the operator follows the documented mitigation: rotate, retire the old KEK
    fresh = reopen()
    rotate(fresh)
    retire(fresh, first_kek, after_seconds=0)

    # then the erased case's keys were destroyed, not carried over to the new KEK, and the
    # live case's were rewrapped
    scope = case_id.hex if dba.sqlite else case_id
    live_scope = kept.hex if dba.sqlite else kept
    rows = dba.key_rows()
    erased_rows = [r for r in rows if r[0] == scope]
    assert erased_rows
    assert all(wrapped is None and kek is None for _s, _sub, _g, kek, wrapped in erased_rows)
    assert all(r[4] is not None and r[3] != first_kek for r in rows if r[0] == live_scope)
    shown = every_read_path(reopen(), settings, kept)
    assert "CANARY-kept narrative" in shown
    assert "CANARY-laundered" not in every_read_path(reopen(), settings, case_id)


# ------------------------------------------------------------------ alarms, once


def test_a_key_row_put_back_is_alarmed_once_not_at_every_cache_expiry(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given an erased case whose key rows were put back, read by a process whose cache of
    # opened keys expires at once
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-once", at=1)
    dba = Dba(app)
    copy = dba.key_rows()
    erase_everyone(app, case_id)
    dba.restore_key_rows(copy)
    fresh = reopen()
    assert fresh.data_keys is not None
    fresh.data_keys.cache_seconds = 0

    # when the case is read again and again
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            replay_case(fresh, case_id, reveal_personal=True, reader=AUDITOR)

    # then each put-back key is named once
    told = [
        (e["record"], e["subject"], e["generation"])
        for e in logs
        if e["event"] == "personal_data.erased_key_present"
    ]
    assert told
    assert len(told) == len(set(told))


# ------------------------------------------------------------------ marks name their store


@pytest.mark.parametrize("made_for", ["another store", "no store (version 1)"])
def test_a_writer_mark_not_made_for_this_store_vouches_for_nothing(
    app: ComplaintMechanism, settings: Settings, made_for: str
) -> None:
    # given a store, and a commit's mark replaced by one the writer key made for the same
    # positions and link in another store sharing the key (or before marks named a store)
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-splice", at=1)
    complaint(app, "CANARY-after", at=5)
    position = app.position_of(case_id, 1)
    key = app.recorder.writer  # type: ignore[attr-defined]
    owner_unlock(app)
    dba = Dba(app)
    table = f"{dba.names['events']}_writer"
    if not dba.sqlite:
        table = f'"{dba.recorder.datastore.schema}"."{table}"'
    with dba.sql() as c:
        c.execute(
            dba.q(
                f"SELECT m.position, m.first_position, c.link FROM {table} m JOIN "
                f"{dba.tables['chain']} c ON c.position = m.position WHERE m.position >= ? "
                "ORDER BY m.position LIMIT 1"
            ),
            (position,),
        )
        last, first, link = dba.values(c.fetchone())
        if made_for == "another store":
            mac = key.mark(int(first), int(last), bytes(link), "0123456789abcdef")
        else:
            mac = key.mark(int(first), int(last), bytes(link))
        c.execute(dba.q(f"UPDATE {table} SET mac = ? WHERE position = ?"), (mac, last))

    # then verify names the commit forged
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {first}: forged" in done.output


def test_a_store_marked_before_marks_named_their_store_still_verifies(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a store whose marks are all version 1 (as written before marks named a store)
    build_network(app, T0 - timedelta(days=1))
    complaint(app, "CANARY-v1", at=1)
    key = app.recorder.writer  # type: ignore[attr-defined]
    owner_unlock(app)
    dba = Dba(app)
    table = f"{dba.names['events']}_writer"
    if not dba.sqlite:
        table = f'"{dba.recorder.datastore.schema}"."{table}"'
    with dba.sql() as c:
        c.execute(
            f"SELECT m.position, m.first_position, c.link FROM {table} m JOIN "
            f"{dba.tables['chain']} c ON c.position = m.position"
        )
        for last, first, link in [dba.values(r) for r in c.fetchall()]:
            c.execute(
                dba.q(f"UPDATE {table} SET mac = ? WHERE position = ?"),
                (key.mark(int(first), int(last), bytes(link)), last),
            )

    # when the new code writes on (version-2 marks after them)
    complaint(reopen(), "CANARY-v2", at=5)

    # then the store verifies intact
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output
