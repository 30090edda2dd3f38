"""Rotating the writer key (issue 15, ADR 26), on SQLite and PostgreSQL, as the key ceremony
of docs/key-ceremony.md does it (``cbcm keys rotate-writer``), then attacked by whoever
kept a copy of the old key: a mark forged with it after the rotation, a rotation of their
own "handed over" by it, the old key file restored, a process still running with it.
Verify across a rotation says intact, and an erasure made before it stays in force."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest
import structlog
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contracts.audit import (
    AUDIT_STREAM,
    ERASURE_NOTICE_SUBJECT,
    AuditErasureNoticeV1,
    encode_erasure_notice,
)
from domain.custody import WriterKeyRotation
from domain.vocabulary import FeedbackChannel
from services.api.replay import replay_case
from services.application import key_rotation
from services.application.key_rotation import (
    WriterRotation,
    WriterRotationError,
    rotate_writer_key,
)
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import checkpoint_once
from services.audit.erasure_notices import notice_of
from services.audit.keys import load_signing_key
from services.bootstrap import complaint_mechanism
from services.event_store.chain import head, link_hash
from services.event_store.custody import (
    RETIRED_DIR,
    WRITER_PREFIX,
    WriterKey,
    WriterKeyError,
    custody_table,
    load_writer_key,
    writer_table,
)
from services.event_store.personal_data.erasure_ledger import LedgerEntry
from services.nats import client as nats_client
from services.nats.server import EmbeddedNats
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import T0
from tests.integration.cli_runs import run_cbcm
from tests.integration.test_custody import (
    AUDITOR,
    FOCAL,
    Dba,
    cli_run,
    complaint,
    erase_everyone,
    every_read_path,
    minutes,
    verify_chain_alone,
)


class KeyThief(Dba):
    """The database's owner who also kept a copy of the retired writer key."""

    def __init__(self, app: ComplaintMechanism) -> None:
        super().__init__(app)
        self.app = app

    def table(self, name: Any) -> str:
        found = name(self.recorder.events_table_name)
        if self.sqlite:
            return str(found)
        return f'"{self.recorder.datastore.schema}"."{found}"'

    def forge_rotation(self, old: WriterKey, thief: WriterKey) -> int:
        """A rotation event from the current key to ``thief``, "handed over" by ``old``,
        appended with a correct link, the thief's sealed start and mark. Its position."""
        store = self.recorder.store
        rotation = WriterKeyRotation.rotate(
            retired=old.key_id,
            active=thief.key_id,
            handover=old.handover(thief.key_id, store),
            at=minutes(50),
        )
        stored = self.app.mapper.to_stored_event(rotation.collect_events()[0])
        pos = "rowid" if self.sqlite else "notification_id"
        events, chain = self.tables["events"], self.tables["chain"]
        oid = stored.originator_id
        with self.sql() as c:
            c.execute(
                self.q(
                    f"INSERT INTO {events} (originator_id, originator_version, topic, state) "
                    f"VALUES (?, 1, ?, ?) RETURNING {pos}"
                ),
                (oid.hex if self.sqlite else oid, stored.topic, stored.state),
            )
            position = int(self.values(c.fetchone())[0])
            c.execute(f"SELECT position, link FROM {chain} ORDER BY position DESC LIMIT 1")
            previous, last = self.values(c.fetchone())
            link = link_hash(
                bytes(last),
                position=position,
                originator_id=oid,
                version=1,
                topic=stored.topic,
                state=stored.state,
            )
            c.execute(
                self.q(f"INSERT INTO {chain} VALUES (?, ?, ?)"), (position, int(previous), link)
            )
            c.execute(
                self.q(f"INSERT INTO {self.table(custody_table)} VALUES (?, ?, ?)"),
                (WRITER_PREFIX + thief.key_id, thief.start_value(position, store), position),
            )
            c.execute(
                self.q(f"INSERT INTO {self.table(writer_table)} VALUES (?, ?, ?)"),
                (position, position, thief.mark(position, position, link, store)),
            )
        return position


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "keys" / "writer.key"


def rotate(settings: Settings) -> str:
    """``cbcm keys rotate-writer``: the new key's id."""
    done = cli_run(settings, "keys", "rotate-writer")
    assert done.exit_code == 0, done.output
    return load_writer_key(key_file(settings), create=False).key_id


def feedback(app: ComplaintMechanism, case_id: Any, at: float) -> None:
    app.give_feedback(
        case_id, actor=FOCAL, message="noted", channel=FeedbackChannel.PHONE, at=minutes(at)
    )


@pytest.fixture
def rotated(app: ComplaintMechanism, settings: Settings) -> tuple[Any, WriterKey, WriterKey]:
    """A store with a case whose personal data was erased, then the writer key rotated;
    the case, the old key and the new one."""
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-rotation")
    erase_everyone(app, case_id, at=10)
    old = load_writer_key(key_file(settings), create=False)
    app.close()
    rotate(settings)
    new = load_writer_key(key_file(settings), create=False)
    assert new.key_id != old.key_id
    return case_id, old, new


def test_verify_across_a_rotation_is_intact_and_an_earlier_erasure_stays_in_force(
    rotated: tuple[Any, WriterKey, WriterKey], settings: Settings
) -> None:
    case_id, old, new = rotated
    # when a process holding the new key writes on
    with structlog.testing.capture_logs() as logs:
        app = complaint_mechanism(settings)
    feedback(app, case_id, at=40)

    # then verify says intact, with each key from where it marks, and the rotation is an
    # event of the log
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output
    assert f"retired writer keys {old.key_id} from 1" in done.output
    rotation = app.repository.get(WriterKeyRotation.create_id(new.key_id))
    assert (rotation.retired, rotation.active) == (old.key_id, new.key_id)
    # the old key is kept read-only beside the new one, to check the marks before it
    kept = key_file(settings).parent / RETIRED_DIR / f"{old.key_id}.key"
    assert load_writer_key(kept, create=False) == old
    # the erasure ledger moved to the new key: nothing damaged, and nothing erased shows
    assert not [e for e in logs if "damaged" in e["event"] or e["log_level"] == "error"]
    assert "CANARY-rotation" not in every_read_path(app, settings, case_id)
    # and without the retired key at hand, verify still vouches (the new key's mark on the
    # rotation commit covers the chain before it), and says what it did not check
    shutil.rmtree(kept.parent)
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output
    assert "not held here" in done.output


def test_a_mark_forged_with_the_retired_key_after_the_rotation_is_caught(
    rotated: tuple[Any, WriterKey, WriterKey], settings: Settings
) -> None:
    case_id, old, _new = rotated
    app = complaint_mechanism(settings)
    feedback(app, case_id, at=40)
    # when whoever kept the old key appends an event with a correct link, and its mark
    # made with the old key, as a genuine commit of the old key was made
    dba = KeyThief(app)
    forged = dba.append_forged(app.position_of(case_id, 1))
    top = head(app.recorder)
    assert top is not None and top.position == forged
    store = app.recorder.store
    with dba.sql() as c:
        c.execute(
            dba.q(f"INSERT INTO {dba.table(writer_table)} VALUES (?, ?, ?)"),
            (forged, forged, old.mark(forged, forged, top.link, store)),
        )
    # then verify names it at its position
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {forged}:" in done.output


def test_a_rotation_handed_over_by_the_retired_key_is_caught(
    rotated: tuple[Any, WriterKey, WriterKey], settings: Settings
) -> None:
    case_id, old, new = rotated
    app = complaint_mechanism(settings)
    # when whoever kept the old key (and the database) "rotates" to a key of their own,
    # with the old key's handover, and writes with it
    thief = WriterKey(b"t" * 32)
    dba = KeyThief(app)
    forged = dba.forge_rotation(old, thief)
    # then the application writes nothing more (its key was "retired" by a rotation it
    # did not make) and verify names the rotation
    with pytest.raises(WriterKeyError):
        feedback(app, case_id, at=40)
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {forged}:" in done.output
    assert f"not writer key {new.key_id}" in done.output
    assert "a rotation this key did not make" in done.output


def test_a_restored_old_key_file_is_caught(
    rotated: tuple[Any, WriterKey, WriterKey], settings: Settings, tmp_path: Path
) -> None:
    case_id, old, new = rotated
    current = complaint_mechanism(settings)
    head_before = head(current.recorder)
    current.close()
    # when the old key file is put back (restored from a backup taken before the rotation)
    key_file(settings).write_text(
        (key_file(settings).parent / RETIRED_DIR / f"{old.key_id}.key").read_text()
    )
    # then a process started with it writes nothing, saying why
    restored = complaint_mechanism(settings)
    with pytest.raises(WriterKeyError, match=f"writer key {old.key_id} was retired"):
        feedback(restored, case_id, at=40)
    # and verify with it says it cannot vouch from the rotation on
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert "this key was retired by that rotation" in done.output
    assert head(restored.recorder) == head_before
    # and the current key, wherever it is, still writes
    current = complaint_mechanism_with(settings, new, tmp_path)
    feedback(current, case_id, at=41)


def test_a_process_still_holding_the_old_key_writes_nothing_after_the_rotation(
    app: ComplaintMechanism, settings: Settings
) -> None:
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-running")
    # given a process that started before the rotation, and is still running
    rotate(settings)
    before = head(app.recorder)
    # when it writes after the rotation
    with pytest.raises(WriterKeyError, match="was retired"):
        feedback(app, case_id, at=40)
    # then nothing was written, and the log verifies
    assert head(app.recorder) == before
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output


def complaint_mechanism_with(settings: Settings, key: WriterKey, where: Path) -> Any:
    """The application with ``key`` in a key file of its own."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / "current-writer.key"
    path.write_text(key_file_text(key))
    return complaint_mechanism(
        Settings(
            data_dir=settings.data_dir,
            event_store=settings.event_store,
            writer_key_file=path,
            erasure_ledger_dir=settings.data_dir / "keys",
        )
    )


def key_file_text(key: WriterKey) -> str:
    import base64  # noqa: PLC0415

    return base64.b64encode(key.secret).decode() + "\n"


# ------------------------------------------------------------------ any sequence

ROTATION_OPS = st.lists(
    st.tuples(st.sampled_from(["feedback", "erase", "rotate", "restart"]), st.integers(0, 1)),
    max_size=8,
)


@given(ops=ROTATION_OPS)
@example(ops=[("erase", 0), ("rotate", 0), ("feedback", 0), ("rotate", 1), ("erase", 1)])
@hsettings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_sequence_of_rotations_verifies_keeps_erasures_and_retires_every_old_key(
    tmp_path: Path, ops: list[Any]
) -> None:
    name = uuid4().hex[:12]
    settings = Settings(
        data_dir=tmp_path / name, event_store=f"sqlite:///{tmp_path / name / 'events.sqlite3'}"
    )
    app = complaint_mechanism(settings)
    retired: list[WriterKey] = []
    try:
        build_network(app, T0 - timedelta(days=1))
        cases = [complaint(app, f"CANARY-k{i}-first", at=i) for i in range(2)]
        live: list[set[str]] = [{f"CANARY-k{i}-first"} for i in range(2)]
        dead: set[str] = set()
        for n, (op, i) in enumerate(ops):
            if op == "feedback":
                value = f"CANARY-k{i}-v{n}"
                app.give_feedback(
                    cases[i], actor=FOCAL, message=value, channel=FeedbackChannel.PHONE,
                    at=minutes(10 + n),
                )  # fmt: skip
                live[i].add(value)
            elif op == "erase":
                erase_everyone(app, cases[i], at=10 + n)
                dead |= live[i]
                live[i] = set()
            elif op == "rotate":
                retired.append(load_writer_key(key_file(settings), create=False))
                rotate_writer_key(app, at=minutes(10 + n), key_file=key_file(settings))
            else:  # a process restarted with the key file as it now is
                app.close()
                app = complaint_mechanism(settings)
        # then the log verifies across every rotation
        done = verify_chain_alone(settings)
        assert done.exit_code == 0, done.output
        # no erased value shows, every live one does, in this process and a fresh one
        for reader in (app, complaint_mechanism(settings)):
            for c, case in enumerate(cases):
                shown = json.dumps(
                    replay_case(reader, case, reveal_personal=True, reader=AUDITOR).to_json()
                )
                assert not [v for v in dead if v in shown]
                assert all(v in shown for v in live[c])
        # and each retired key, put back in a key file of its own, writes nothing
        for number, old in enumerate(retired):
            thief = complaint_mechanism_with(settings, old, tmp_path / name / f"old-{number}")
            with pytest.raises(WriterKeyError, match="was retired"):
                feedback(thief, cases[0], at=100 + number)
            thief.close()
    finally:
        app.close()


# Attack (review of #15): two ceremonies at once (two operators, or a retried one from a
# second host), each from a process holding the same key. Both passed the "every commit is
# marked" check before either committed, both rotations committed, verify said DAMAGED for
# good, and the first ceremony's new key was in neither the key file nor the retired keys.
def test_a_second_ceremony_at_the_same_moment_is_refused_and_changes_nothing(
    app: ComplaintMechanism, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_network(app, T0 - timedelta(days=1))
    complaint(app, "CANARY-race")
    other = complaint_mechanism(settings)  # a second process, holding the same key
    real_stage = key_rotation.stage_key
    won: list[WriterRotation] = []
    started: list[bool] = []

    def stage_after_the_other_ceremony(path: Path, key: WriterKey) -> None:
        if not started:  # this ceremony has passed its check: the other one runs to its end
            started.append(True)
            won.append(key_rotation._rotate_writer_key(other, at=minutes(60), key_file=path))
        real_stage(path, key)

    monkeypatch.setattr(key_rotation, "stage_key", stage_after_the_other_ceremony)
    try:
        with pytest.raises(WriterRotationError, match="rotated meanwhile"):
            rotate_writer_key(app, at=minutes(61), key_file=key_file(settings))
    finally:
        other.close()
        app.close()
    # the other ceremony's key is the writer key, and the log verifies intact
    assert load_writer_key(key_file(settings), create=False).key_id == won[0].active
    assert not key_rotation.staged_key_path(key_file(settings)).exists()
    done = verify_chain_alone(settings)
    assert done.exit_code == 0, done.output


# ------------------------------------------------ erasure notices across rotations

NOTICE_OPS = st.lists(
    st.tuples(st.sampled_from(["erase", "rotate", "tell", "feedback"]), st.integers(0, 2)),
    min_size=1,
    max_size=8,
)


def _tell(app: ComplaintMechanism, settings: Settings, url: str) -> None:
    """The network's checkpoint publisher signs the head and tells every erasure not told
    yet, MACed under the writer key it holds now; again while it says one is left for a
    later step, as its next step would (a publish timing out on a loaded machine)."""
    later = {"audit.erasures_not_told"}
    for _ in range(50):
        with structlog.testing.capture_logs() as logs:
            _tell_once(app, settings, url)
        if not any(e["event"] in later for e in logs):
            return
    raise AssertionError("erasures were left for a later step fifty times")


def _tell_once(app: ComplaintMechanism, settings: Settings, url: str) -> None:
    """One step of a (re)started checkpoint publisher: it signs the head and tells."""
    key = load_signing_key(settings)
    assert asyncio.run(checkpoint_once(app, key, url, nats_options={})) is not None


def _forge(url: str, notices: list[AuditErasureNoticeV1]) -> None:
    """Notices put on the audit stream by someone who can publish there."""

    async def run() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for n, notice in enumerate(notices):
                await js.publish(
                    ERASURE_NOTICE_SUBJECT,
                    encode_erasure_notice(notice),
                    stream=AUDIT_STREAM,
                    headers={"Nats-Msg-Id": f"forged-{n}-{uuid4()}"},
                )
        finally:
            await nc.close()

    asyncio.run(run())


@given(ops=NOTICE_OPS)
@example(ops=[("erase", 0), ("tell", 0), ("rotate", 0), ("erase", 1)])
@example(ops=[("erase", 0), ("rotate", 0), ("tell", 0), ("rotate", 0), ("erase", 1)])
@hsettings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_erasures_told_before_any_rotation_are_learnt_back_and_forged_notices_are_not(
    tmp_path: Path, ops: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the audit stream's duplicate window, two minutes in production, short here: a telling
    # again right after a rotation must not be dropped as a duplicate of the old key's notice
    # however long the window (each key's notice has its own message id)
    monkeypatch.setattr(nats_client, "DUPLICATE_WINDOW", 0.2)
    name = uuid4().hex[:12]
    data = tmp_path / name
    settings = Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    with EmbeddedNats(data / "nats") as server:
        app = complaint_mechanism(settings)
        retired: list[tuple[WriterKey, int]] = []  # each old key, and where it was retired
        try:
            build_network(app, T0 - timedelta(days=1))
            cases = [complaint(app, f"CANARY-n{i}", at=i) for i in range(3)]
            erased: set[int] = set()
            # given erasures, rotations and publications of the notices in any order
            for n, (op, i) in enumerate(ops):
                if op == "erase" and i not in erased:
                    erase_everyone(app, cases[i], at=10 + n)
                    erased.add(i)
                elif op == "rotate":
                    old = load_writer_key(key_file(settings), create=False)
                    done = rotate_writer_key(app, at=minutes(10 + n), key_file=key_file(settings))
                    retired.append((old, done.position))
                elif op == "tell":
                    _tell(app, settings, server.url)
                elif op == "feedback":
                    feedback(app, cases[i], at=10 + n)
            _tell(app, settings, server.url)
            store = app.recorder.store
            ledger = app.data_keys.log.ledger_now()  # type: ignore[union-attr]
            genuine = {e.key for e in ledger.entries}
            # and notices forged by whoever can publish on the audit stream: one under a key
            # the network never had, and one under each retired key for a position at or
            # after the rotation that retired it (a thief's copy of the old key)
            top = head(app.recorder)
            assert top is not None
            nobody = WriterKey(b"n" * 32)
            forged = [
                notice_of(LedgerEntry(top.position, uuid4(), "survivor", 1, top.link), k, store)
                for k in [nobody, *(old for old, _ in retired)]
            ]
            forged += [
                notice_of(LedgerEntry(at, uuid4(), "survivor", 1, top.link), old, store)
                for old, at in retired
            ]
            _forge(server.url, forged)
        finally:
            app.close()

        # when a host learns the erasures back from the audit stream
        env = {
            "CBCM_DATA_DIR": str(data),
            "CBCM_EVENT_STORE": settings.event_store,
            "CBCM_EVENT_CIPHER": settings.event_cipher,
            "CBCM_NATS_URL": server.url,
        }
        with structlog.testing.capture_logs() as logs:
            learnt = run_cbcm(["audit", "learn-erasures"], env=env)
    assert learnt.exit_code == 0, learnt.output
    # then every erasure is learnt, whichever key was current when it was first told (the
    # checkpoint publisher told them again under the current key) ...
    told = int(learnt.output.split(" erasure(s) told")[0].split()[-1])
    assert told == len(genuine), learnt.output
    # ... the notice under a key the network never had is refused as forged, and those under
    # the retired keys (the genuine ones told before a rotation, and a thief's) are passed
    # over: none of the thief's is learnt (the count above)
    refused = [e for e in logs if e["event"] == "audit.erasure_notice_forged"]
    assert [e["detail"] for e in refused] == [
        "a notice on the audit stream no writer key held here made: ignored"
    ]
    passed_over = [e for e in logs if e["event"] == "audit.erasure_notice_passed_over"]
    assert len(passed_over) >= 2 * len(retired)


# Found while arguing the units (ADR 26, section 5): the ceremony's commands run as root, the
# services as their own user. The rotation MACed the erasure ledger again by writing a new
# file, which root then owned (0600): the services could no longer read their ledger.
def test_a_ceremony_run_as_root_leaves_the_files_beside_the_keys_to_the_services(
    app: ComplaintMechanism, settings: Settings
) -> None:
    assert os.geteuid() == 0, "the ceremony runs as root (CI runs as root)"
    build_network(app, T0 - timedelta(days=1))
    case_id = complaint(app, "CANARY-owner")
    erase_everyone(app, case_id, at=10)
    app.close()
    # given the erasure ledger's directory and its files the services' own (uid, gid 65534)
    ledger_dir = settings.data_dir / "keys"
    beside = [p for p in ledger_dir.iterdir() if p.is_file() and not p.name.startswith("writer")]
    assert any(p.name.startswith("erasures-") for p in beside)
    for path in [ledger_dir, *beside]:
        os.chown(path, 65534, 65534)
    # when root rotates the writer key (its ceremony moves the ledger to the new key)
    rotate(settings)
    # then every file beside the keys is still the services' (the keys themselves stay root's)
    after = [p for p in ledger_dir.iterdir() if p.is_file() and not p.name.startswith("writer")]
    assert {p.name: (p.stat().st_uid, p.stat().st_gid) for p in after} == {
        p.name: (65534, 65534) for p in after
    }
    # and the ledger, moved to the new key, keeps the erasure in force
    reader = complaint_mechanism(settings)
    try:
        assert "CANARY-owner" not in every_read_path(reader, settings, case_id)
    finally:
        reader.close()
