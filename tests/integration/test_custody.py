"""Custody attacks (issue 15), each tried as a database administrator would, on SQLite and on
PostgreSQL, through what a user of cbcm sees: the API, ``cbcm audit case``, ``cbcm audit
verify``, the replay at a version, the checkpoint publisher.

- Wrapped key rows put back from a pre-erasure copy must bring no erased value back, and
  verify must alarm (also after the documented mitigation: rotate and retire the KEK).
- Keys destroyed without an erasure event must be an alarm, never a silent "erased".
- An event appended with a correct link by someone holding the INSERT grant must be named at
  its position, and no checkpoint signed over it.
- Stores created apart, with the same first event, must not share a store id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import structlog
from eventsourcing.sqlite import SQLiteApplicationRecorder
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.actors import Actor, Role
from domain.personal_data import DataSubject, PersonDetails
from domain.vocabulary import (
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ErasureReason,
    FeedbackChannel,
)
from services.api.app import create_app
from services.api.replay import render_text, replay_case
from services.application.key_rotation import retire, rotate
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_signing_key
from services.audit.witness import WitnessBook
from services.bootstrap import complaint_mechanism
from services.event_store.chain import chain_table, head, link_hash
from services.event_store.personal_data.tables import key_table
from services.identity.tokens import issue_token
from services.settings import Settings
from tests.api_world import build_network, cheap_hasher
from tests.conftest import T0, init_store
from tests.integration.cli_runs import run_cbcm
from tests.world import COORDINATOR

OPERATOR = Actor("op-unhcr", "unhcr", Role.INTAKE_OPERATOR)
FOCAL = Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
AUDITOR = Actor("aud-1", "ocha", Role.AUDITOR)


def minutes(n: float) -> Any:
    return T0 + timedelta(minutes=n)


def complaint(app: ComplaintMechanism, canary: str, at: float = 1) -> UUID:
    """A complaint with ``canary`` in every personal field, assessed, its personal data
    granted to auditor aud-1."""
    case_id = app.receive_complaint(
        actor=OPERATOR,
        at=minutes(at),
        received_at=minutes(at),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=False,
        narrative=f"{canary} narrative",
        survivor=PersonDetails(name=f"{canary} name", phone=f"{canary} phone"),
    ).id
    app.assess_case(
        case_id, actor=FOCAL, category=ComplaintCategory.OTHER_SENSITIVE, at=minutes(at + 1)
    )
    app.grant_audit_access(
        case_id, actor=COORDINATOR, auditor="aud-1", reason="sampled", at=minutes(at + 2)
    )
    return case_id


def erase_everyone(app: ComplaintMechanism, case_id: UUID, at: float = 30) -> None:
    app.erase_personal_data(
        case_id,
        actor=COORDINATOR,
        subjects=tuple(DataSubject),
        reason=ErasureReason.NETWORK_DECISION,
        at=minutes(at),
    )


class Dba:
    """The store's database as its administrator has it: the owner's rights (triggers can
    be dropped), or only the application's INSERT and SELECT grants."""

    def __init__(self, app: ComplaintMechanism) -> None:
        self.recorder: Any = app.recorder
        self.sqlite = isinstance(self.recorder, SQLiteApplicationRecorder)
        events = self.recorder.events_table_name
        self.names = {"events": events, "chain": chain_table(events), "keys": key_table(events)}
        if self.sqlite:
            self.tables = dict(self.names)
        else:
            schema = self.recorder.datastore.schema
            self.tables = {k: f'"{schema}"."{v}"' for k, v in self.names.items()}
        self.mark = "?" if self.sqlite else "%s"

    @contextmanager
    def sql(self) -> Iterator[Any]:
        with self.recorder.datastore.transaction(commit=True) as cursor:
            yield cursor

    def q(self, statement: str) -> str:
        return statement.replace("?", self.mark)

    @staticmethod
    def values(row: Any) -> tuple[Any, ...]:
        return tuple(row.values()) if isinstance(row, dict) else tuple(row)

    def key_rows(self) -> list[tuple[Any, ...]]:
        with self.sql() as c:
            c.execute(
                f"SELECT scope, subject, generation, kek_id, wrapped FROM {self.tables['keys']}"
            )
            return [self.values(r) for r in c.fetchall()]

    def without_key_triggers(self, c: Any) -> None:
        if self.sqlite:
            c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (self.names["keys"],),
            )
            for name in [r[0] for r in c.fetchall()]:
                c.execute(f"DROP TRIGGER {name}")
        else:
            c.execute(f"ALTER TABLE {self.tables['keys']} DISABLE TRIGGER USER")

    def restore_key_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Put the key material of ``rows`` back, as from a copy taken before an erasure."""
        with self.sql() as c:
            self.without_key_triggers(c)
            for scope, subject, generation, kek_id, wrapped in rows:
                c.execute(
                    self.q(
                        f"UPDATE {self.tables['keys']} SET kek_id = ?, wrapped = ?, "
                        "erased_at = NULL WHERE scope = ? AND subject = ? AND generation = ?"
                    ),
                    (kek_id, wrapped, scope, subject, generation),
                )

    def destroy_keys(self, scope: UUID) -> None:
        """What the application's role may do to the key table: destroy key material."""
        with self.sql() as c:
            c.execute(
                self.q(
                    f"UPDATE {self.tables['keys']} SET wrapped = NULL, kek_id = NULL "
                    "WHERE scope = ?"
                ),
                (scope.hex if self.sqlite else scope,),
            )

    def delete_keys(self, scope: UUID) -> None:
        with self.sql() as c:
            self.without_key_triggers(c)
            c.execute(
                self.q(f"DELETE FROM {self.tables['keys']} WHERE scope = ?"),
                (scope.hex if self.sqlite else scope,),
            )

    def append_forged(self, of_position: int) -> int:
        """Append a copy of the event at ``of_position`` as a new record's first event, with
        a correct link: what the INSERT and SELECT grants allow. Its position."""
        pos = "rowid" if self.sqlite else "notification_id"
        events, chain = self.tables["events"], self.tables["chain"]
        forged_id = uuid4()
        with self.sql() as c:
            c.execute(self.q(f"SELECT topic, state FROM {events} WHERE {pos} = ?"), (of_position,))
            topic, state = self.values(c.fetchone())
            c.execute(
                self.q(
                    f"INSERT INTO {events} (originator_id, originator_version, topic, state) "
                    f"VALUES (?, 1, ?, ?) RETURNING {pos}"
                ),
                (forged_id.hex if self.sqlite else forged_id, topic, bytes(state)),
            )
            position = int(self.values(c.fetchone())[0])
            c.execute(f"SELECT position, link FROM {chain} ORDER BY position DESC LIMIT 1")
            previous, last = self.values(c.fetchone())
            link = link_hash(
                bytes(last),
                position=position,
                originator_id=forged_id,
                version=1,
                topic=topic,
                state=bytes(state),
            )
            c.execute(
                self.q(f"INSERT INTO {chain} VALUES (?, ?, ?)"), (position, int(previous), link)
            )
        return position


def cli_run(settings: Settings, *args: str) -> Any:
    env = {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": str(settings.event_store),
        "CBCM_EVENT_CIPHER": settings.event_cipher,
    }
    return run_cbcm(args, env=env)


def bearer(settings: Settings, user: str, agency: str, role: Role) -> dict[str, str]:
    token = issue_token(settings.data_dir, user=user, agency=agency, roles=[role])
    return {"Authorization": f"Bearer {token}"}


def every_read_path(app: ComplaintMechanism, settings: Settings, case_id: UUID) -> str:
    """Everything a reader allowed to see the case's personal data is shown of it: the
    history over HTTP to the holder's focal point, the replay at each version to a granted
    auditor, ``cbcm audit case --auditor`` and ``--at-version``."""
    return every_read_paths(app, settings, case_id)[0]


def every_read_paths(app: ComplaintMechanism, settings: Settings, *case_ids: UUID) -> list[str]:
    """``every_read_path`` of each case in turn, through one API over ``app``."""
    with read_paths(app, settings) as read:
        return [read(case_id) for case_id in case_ids]


@contextmanager
def read_paths(app: ComplaintMechanism, settings: Settings) -> Iterator[Callable[[UUID], str]]:
    """``every_read_path`` as a function of the case, its history asked of one API over
    ``app`` while the block runs (an API's making and its first request cost about 0.1 s of
    CPU each); the API reads the application as it is at each call."""
    api = create_app(settings, mechanism=app, receipt_hasher=cheap_hasher())
    with TestClient(api) as client:

        def read(case_id: UUID) -> str:
            shown = []
            answer = client.get(
                f"/v1/cases/{case_id}/history",
                headers=bearer(settings, "fp-unhcr", "unhcr", Role.FOCAL_POINT),
            )
            assert answer.status_code == 200, answer.text
            shown.append(answer.text)
            versions = app.get_case(case_id).version
            for version in range(1, versions + 1):
                replay = replay_case(
                    app, case_id, at_version=version, reveal_personal=True, reader=AUDITOR
                )
                shown.append(json.dumps(replay.to_json()))
            for args in (
                ["--auditor", "aud-1", "--agency", "ocha"],
                ["--auditor", "aud-1", "--at-version", "1"],
            ):
                done = cli_run(settings, "audit", "case", str(case_id), "--json", *args)
                assert done.exit_code == 0, done.output
                assert "Traceback" not in done.output
                shown.append(done.output)
            return "\n".join(shown)

        yield read


def verify_chain_alone(settings: Settings) -> Any:
    return cli_run(settings, "audit", "verify", "--no-checkpoints")


# ------------------------------------------------------------------ erasure undone (2)


def test_key_rows_restored_from_a_pre_erasure_copy_bring_no_erased_value_back(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a case erased by a recorded decision, and a copy of the key rows from before
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-back")
    kept = complaint(app, "CANARY-kept", at=5)
    dba = Dba(app)
    copy = dba.key_rows()
    erase_everyone(app, case_id)

    # when the DBA puts the wrapped key rows back from the copy
    dba.restore_key_rows(copy)

    # then no read path shows an erased value, to anyone, in a fresh process too
    for reader in (app, reopen()):
        erased, live = every_read_paths(reader, settings, case_id, kept)
        assert "CANARY-back" not in erased
        assert "CANARY-kept narrative" in live
    # and verify alarms, naming the record and no personal data
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert str(case_id) in done.output and "erased" in done.output
    assert "CANARY" not in done.output
    assert not replay_case(app, case_id).verified


def test_after_rotate_and_retire_restored_rows_neither_crash_nor_show_anything(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given an erased case whose pre-erasure key rows come back after the documented
    # mitigation (a new KEK, every live key rewrapped, the old KEK destroyed)
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-retired")
    dba = Dba(app)
    copy = dba.key_rows()
    kept = complaint(app, "CANARY-kept", at=5)
    first_kek = copy[0][3]
    erase_everyone(app, case_id)
    rotate(app)
    retire(app, first_kek, after_seconds=0)
    dba.restore_key_rows(copy)

    # then every read path answers, without a traceback and without an erased value
    erased, live = every_read_paths(reopen(), settings, case_id, kept)
    assert "CANARY-retired" not in erased
    assert "CANARY-kept narrative" in live
    done = cli_run(settings, "audit", "case", str(case_id), "--auditor", "aud-1")
    assert done.exit_code == 0, done.output
    assert "NOT VERIFIED" in done.output


# ------------------------------------------------------- keys destroyed without erasure (3)


@pytest.mark.parametrize("how", ["destroyed", "deleted"])
def test_keys_destroyed_without_an_erasure_event_are_an_alarm(
    app: ComplaintMechanism, settings: Settings, how: str
) -> None:
    # given a case whose personal data nobody erased
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-gone")

    # when its keys are destroyed (the application's role may) or deleted (the owner may)
    dba = Dba(app)
    if how == "destroyed":
        dba.destroy_keys(case_id)
    else:
        dba.delete_keys(case_id)

    # then the replay does not say VERIFIED, and verify alarms naming the record
    replay = replay_case(app, case_id)
    assert not replay.verified
    text = render_text(replay)
    assert "NOT VERIFIED" in text and str(case_id) in text
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert str(case_id) in done.output and "without an erasure" in done.output


# ------------------------------------------------------------------ a forged event (4)


async def test_a_forged_event_with_a_correct_link_is_named_and_never_checkpointed(
    app: ComplaintMechanism, settings: Settings, nats_server: Any
) -> None:
    # given a store with a case, its head signed
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-forge")
    key = load_signing_key(settings)
    signed = await checkpoint_once(app, key, nats_server.url, nats_options={})
    assert signed is not None

    # when someone holding the INSERT grant appends a forged complaint with a correct link,
    # and the application then writes on after it
    dba = Dba(app)
    received = app.position_of(case_id, 1)
    forged = dba.append_forged(received)
    app.give_feedback(
        case_id, actor=FOCAL, message="after", channel=FeedbackChannel.PHONE, at=minutes(40)
    )

    # then verify names the forged entry's position
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {forged}:" in done.output
    # and the checkpoint publisher signs nothing past it, and says why, once
    with structlog.testing.capture_logs() as logs:
        after = await checkpoint_once(app, key, nats_server.url, nats_options={})
        again = await checkpoint_once(app, key, nats_server.url, nats_options={})
    assert after is not None and after.position < forged
    assert again is not None and again.position == after.position
    alarms = [e for e in logs if e["event"] == "audit.unmarked_entry"]
    assert [(e["log_level"], e["position"]) for e in alarms] == [("error", forged)]


# ------------------------------------------------------------------ store ids


async def test_stores_created_apart_do_not_share_an_id_and_a_rival_cannot_fail_the_genuine(
    store_url: str, tmp_path: Path, nats_server: Any
) -> None:
    # given two stores created apart whose first event is the same (the demo's network,
    # established at the same time; PostgreSQL without the whole-event cipher, whose random
    # nonces would tell them apart anyway)
    genuine_settings = Settings(
        data_dir=tmp_path / "genuine", event_store=store_url, event_cipher="off"
    )
    genuine = complaint_mechanism(genuine_settings)
    rival = complaint_mechanism(
        Settings(
            data_dir=tmp_path / "rival",
            event_store=f"sqlite:///{tmp_path / 'rival' / 'events.sqlite3'}",
        )
    )
    try:
        build_network(genuine, T0)
        build_network(rival, T0)
        complaint(genuine, "CANARY-a")
        complaint(rival, "CANARY-b", at=3)
        first = genuine.recorder.select_notifications(1, 1)[0]
        other = rival.recorder.select_notifications(1, 1)[0]
        assert (first.originator_id, first.topic, first.state) == (
            other.originator_id,
            other.topic,
            other.state,
        )

        # when the network's publisher checkpoints both (a rival history, say a copy restored
        # beside the genuine store, reaching the same publisher), and a witness keeps both
        key = load_signing_key(genuine_settings)
        signed = [
            await checkpoint_once(app, key, nats_server.url, nats_options={})
            for app in (rival, genuine)
        ]

        # then their store ids differ, and stay the same when the store is opened again
        assert signed[0] is not None and signed[1] is not None
        assert signed[0].store != signed[1].store
        again = await checkpoint_once(genuine, key, nats_server.url, nats_options={})
        assert again is not None and again.store == signed[1].store
        # and the rival's checkpoints do not make the genuine store fail verify
        book = tmp_path / "witness.sqlite3"
        with WitnessBook.open(book) as held:
            held.record([c for c in signed if c is not None])
        done = cli_run(genuine_settings, "audit", "verify", "--witness-db", str(book))
        assert done.exit_code == 0, done.output
        assert "intact" in done.output
    finally:
        genuine.close()
        rival.close()


# ------------------------------------------------------------------ writer marks, more


def test_a_store_written_before_writer_marks_is_vouched_for_from_where_they_start(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a store as it was before writer marks and store nonces existed (their tables
    # emptied by the owner, as a store made before issue 15 has them)
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-old")
    first = app.recorder.select_notifications(1, 1)[0]
    dba = Dba(app)
    with dba.sql() as c:
        for name in ("writer", "custody"):
            table = f"{dba.names['events']}_{name}"
            if dba.sqlite:
                c.execute(f"DROP TRIGGER {table}_no_delete")
                c.execute(f"DELETE FROM {table}")
            else:
                qualified = f'"{dba.recorder.datastore.schema}"."{table}"'
                c.execute(f"ALTER TABLE {qualified} DISABLE TRIGGER USER")
                c.execute(f"DELETE FROM {qualified}")
    top = head(app.recorder)
    assert top is not None

    # when the new code opens it, it writes nothing until the operator starts marks
    from services.event_store.custody import WriterKeyError  # noqa: PLC0415

    with pytest.raises(WriterKeyError, match="cbcm audit start-marks"):
        reopen().give_feedback(
            case_id, actor=FOCAL, message="early", channel=FeedbackChannel.PHONE, at=minutes(39)
        )
    started = cli_run(settings, "audit", "start-marks")
    assert started.exit_code == 0, started.output
    assert f"every commit from position {top.position + 1}" in started.output
    again = cli_run(settings, "audit", "start-marks")
    assert again.exit_code == 2 and "already started" in again.output
    fresh = reopen()
    fresh.give_feedback(
        case_id, actor=FOCAL, message="later", channel=FeedbackChannel.PHONE, at=minutes(40)
    )

    # then its id is still the one its first event gives, and verify vouches for the marks
    # from the first position written since, saying what covers the positions before
    from services.event_store.store_id import store_id, store_id_of  # noqa: PLC0415

    assert store_id_of(fresh.recorder) == store_id(first)
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output
    assert f"every commit from position {top.position + 1}" in done.output
    assert "covered by the chain and the checkpoints only" in done.output


def test_a_process_holding_another_writer_key_is_refused(
    app: ComplaintMechanism, settings: Settings, tmp_path: Path
) -> None:
    build_network(app, T0 - timedelta(days=1))
    other = tmp_path / "other-writer.key"
    other.write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n")
    from services.event_store.custody import WriterKeyError  # noqa: PLC0415

    with pytest.raises(WriterKeyError, match="CBCM_WRITER_KEY_FILE"):
        complaint_mechanism(
            Settings(
                data_dir=settings.data_dir,
                event_store=settings.event_store,
                writer_key_file=other,
            )
        )


def test_a_rewrite_with_every_link_recomputed_fails_the_writer_marks(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given a case whose feedback is one commit of one event
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-rewrite")
    app.give_feedback(
        case_id, actor=FOCAL, message="kept", channel=FeedbackChannel.PHONE, at=minutes(40)
    )
    app.give_feedback(
        case_id, actor=FOCAL, message="after", channel=FeedbackChannel.PHONE, at=minutes(41)
    )
    version = app.get_case(case_id).version
    changed = app.position_of(case_id, version - 1)

    # when the owner changes it and recomputes every link after it (no checkpoint yet)
    from tests.integration.test_audit_chain import Dba as ChainDba  # noqa: PLC0415

    chain_dba = ChainDba(app)
    chain_dba.drop_triggers()
    chain_dba.change_one_byte(changed)
    chain_dba.relink_from(changed)

    # then verify names it at its position: its mark no longer verifies
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {changed}: forged" in done.output


# ------------------------------------------------------------------ any sequence


def erased_values_never_come_back(store_url: str, tmp_path: Path, ops: list[Any]) -> None:
    """Record, erase, copy the key rows, put a copy back, rotate the KEK, in any order: no
    value recorded before its case's last erasure is ever shown, and every value recorded
    after it is."""
    name = uuid4().hex[:12]
    if store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / name / 'events.sqlite3'}"
    else:  # a schema of its own: every example starts from an empty store
        base = re.sub(r"[?&]schema=[^&]+", "", store_url)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA h_{name}")
        url = init_store(f"{base}{'&' if '?' in base else '?'}schema=h_{name}")
    settings = Settings(data_dir=tmp_path / name, event_store=url)
    app = complaint_mechanism(settings)
    try:
        build_network(app, T0 - timedelta(days=1))
        cases = [complaint(app, f"CANARY-c{i}-first", at=i) for i in range(2)]
        live: list[set[str]] = [{f"CANARY-c{i}-first narrative"} for i in range(2)]
        dead: set[str] = set()
        dba = Dba(app)
        copies: list[list[tuple[Any, ...]]] = []
        for n, (op, i) in enumerate(ops):
            case = cases[i % 2]
            if op == "feedback":
                value = f"CANARY-c{i % 2}-v{n}"
                app.give_feedback(
                    case,
                    actor=FOCAL,
                    message=value,
                    channel=FeedbackChannel.PHONE,
                    at=minutes(10 + n),
                )
                live[i % 2].add(value)
            elif op == "erase":
                erase_everyone(app, case, at=10 + n)
                dead |= live[i % 2]
                live[i % 2] = set()
            elif op == "copy":
                copies.append(dba.key_rows())
            elif op == "restore" and copies:
                dba.restore_key_rows(copies[i % len(copies)])
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
                conn.execute(f"DROP SCHEMA h_{name} CASCADE")


OPS = st.lists(
    st.tuples(
        st.sampled_from(["feedback", "erase", "copy", "restore", "rotate"]), st.integers(0, 3)
    ),
    max_size=10,
)


@given(ops=OPS)
@example(ops=[("copy", 0), ("erase", 0), ("feedback", 0), ("restore", 0)])
@example(ops=[("copy", 1), ("erase", 1), ("rotate", 0), ("restore", 0), ("feedback", 1)])
@hsettings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_erased_value_comes_back_whatever_the_sequence(
    store_url: str, tmp_path: Path, ops: list[Any]
) -> None:
    erased_values_never_come_back(store_url, tmp_path, ops)


@pytest.mark.soak
@given(ops=OPS)
@hsettings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_no_erased_value_comes_back_whatever_the_sequence_soak(
    store_url: str, tmp_path: Path, ops: list[Any]
) -> None:
    erased_values_never_come_back(store_url, tmp_path, ops)


def test_marks_without_the_record_of_their_key_refuse_a_new_start(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given a store whose custody record the owner removed, its marks left in place (so that
    # earlier positions would pass for a store written before marks existed)
    build_network(app, T0 - timedelta(days=1))
    dba = Dba(app)
    table = f"{dba.names['events']}_custody"
    with dba.sql() as c:
        if dba.sqlite:
            c.execute(f"DROP TRIGGER {table}_no_delete")
            c.execute(f"DELETE FROM {table}")
        else:
            qualified = f'"{dba.recorder.datastore.schema}"."{table}"'
            c.execute(f"ALTER TABLE {qualified} DISABLE TRIGGER USER")
            c.execute(f"DELETE FROM {qualified}")

    # then no process starts on it (and none records a new start), and verify says so
    done = cli_run(settings, "audit", "verify", "--no-checkpoints")
    assert done.exit_code == 2, done.output
    assert "no record of the key" in done.output


def test_a_hole_in_postgresqls_positions_is_no_alarm(postgres_url: str, tmp_path: Path) -> None:
    # given a PostgreSQL store whose positions have a hole (a refused write spends a number)
    settings = Settings(data_dir=tmp_path / "data", event_store=postgres_url)
    app = complaint_mechanism(settings)
    try:
        build_network(app, T0 - timedelta(days=1))
        case_id = complaint(app, "CANARY-hole")
        dba = Dba(app)
        with dba.sql() as c:
            c.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'notification_id'))",
                (dba.tables["events"],),
            )
        app.give_feedback(
            case_id, actor=FOCAL, message="after", channel=FeedbackChannel.PHONE, at=minutes(40)
        )
        positions = [n.id for n in app.recorder.select_notifications(1, 1000)]
        assert positions[-1] == positions[-2] + 2

        # then the marks on either side of it vouch for everything: verify says intact
        done = verify_chain_alone(settings)
        assert done.exit_code == 0, done.output
        assert "writer marks: every commit" in done.output
    finally:
        app.close()


def test_a_live_records_key_put_back_under_a_retired_kek_is_one_line_not_a_traceback(
    app: ComplaintMechanism, settings: Settings
) -> None:
    # given a case nobody erased, whose key rows the DBA puts back as they were wrapped
    # before a rotation, after the old KEK was retired
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-live")
    dba = Dba(app)
    copy = dba.key_rows()
    old = copy[0][3]
    rotate(app)
    retire(app, old, after_seconds=0)
    kept = complaint(app, "CANARY-kept", at=5)
    dba.restore_key_rows([row for row in copy if row[3] == old])

    # then `cbcm audit case --auditor` fails in one line naming the event, no value shown
    done = cli_run(settings, "audit", "case", str(case_id), "--auditor", "aud-1")
    assert done.exit_code == 2, done.output
    assert "does not decode" in done.output and "audit verify" in done.output
    assert "Traceback" not in done.output and "CANARY" not in done.output
    assert len(done.output.strip().splitlines()) == 1
    assert "CANARY-kept narrative" in every_read_path(app, settings, kept)
