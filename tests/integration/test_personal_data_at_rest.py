"""Personal data at rest: sealed field by field, erased by destroying keys, keys rotated.

Every test runs on SQLite and on a real PostgreSQL (``store_url``), through the real
application and its recorders.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from domain.actors import Actor, Role
from domain.case import Case
from domain.errors import RetentionNotDue, VersionConflict
from domain.personal_data import ERASED, DataSubject, PersonDetails
from domain.policy import NetworkPolicy
from domain.vocabulary import (
    AgencyType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ErasureReason,
    FeedbackCategory,
    FeedbackChannel,
    Sector,
)
from services.application.key_rotation import retire, rotate
from services.application.mechanism import ComplaintMechanism
from services.application.retention import run_retention
from services.audit.verify import verify
from services.bootstrap import complaint_mechanism
from services.event_store.personal_data.kek import KeyRingError, LocalKeyRing
from services.event_store.personal_data.tables import key_table
from services.settings import Settings
from tests.canary import new_canaries, walk_every_event_type
from tests.conftest import T0
from tests.world import COORDINATOR

INTAKE = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)
FOCAL = Actor("fp-unhcr-1", "unhcr", Role.FOCAL_POINT)


def at(hours: float) -> Any:
    return T0 + timedelta(hours=hours)


def _network(app: ComplaintMechanism, retention_days: int = 30) -> None:
    app.establish_network(
        actor=COORDINATOR,
        name="Test network",
        policy=NetworkPolicy(personal_data_retention=timedelta(days=retention_days)),
        at=T0,
    )
    app.register_agency(
        actor=COORDINATOR, code="unhcr", name="UNHCR", agency_type=AgencyType.UN_AGENCY, at=T0
    )
    app.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-unhcr-1", at=T0)


def _complaint(app: ComplaintMechanism, canary: str, hours: float = 1) -> UUID:
    return app.receive_complaint(
        actor=INTAKE,
        at=at(hours),
        received_at=at(hours),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.WITNESS,
        immediate_safety_risk=False,
        narrative=f"{canary}-narrative",
        complainant=PersonDetails(name=f"{canary}-cname", phone=f"{canary}-cphone"),
        survivor=PersonDetails(name=f"{canary}-sname", address=f"{canary}-saddress"),
    ).id


def _closed(app: ComplaintMechanism, canary: str, hours: float = 1) -> UUID:
    case_id = _complaint(app, canary, hours)
    app.assess_case(
        case_id, actor=FOCAL, category=ComplaintCategory.OTHER_SENSITIVE, at=at(hours + 1)
    )
    app.give_feedback(
        case_id,
        actor=FOCAL,
        message=f"{canary}-feedback",
        channel=FeedbackChannel.PHONE,
        at=at(hours + 2),
    )
    app.close_case(
        case_id,
        actor=FOCAL,
        reason=ClosureReason.REFERRED_TO_AGENCY_PROCEDURE,
        no_outcome_reason=f"{canary}-no-outcome",
        at=at(hours + 3),
    )
    return case_id


def erase_everyone(app: ComplaintMechanism, case_id: UUID, *, at: Any) -> None:
    """A recorded decision of the coordinator: everyone's personal data in the case erased."""
    app.erase_personal_data(
        case_id,
        actor=COORDINATOR,
        subjects=tuple(DataSubject),
        reason=ErasureReason.NETWORK_DECISION,
        at=at,
    )


def stored_bytes(app: ComplaintMechanism, store_url: str) -> bytes:
    """Everything the event store's database holds, as bytes: the SQLite files, or every
    row of every table of the PostgreSQL schema as text."""
    recorder: Any = app.recorder
    if store_url.startswith("sqlite"):
        db = Path(store_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    schema = recorder.datastore.schema
    chunks = []
    with recorder.datastore.transaction(commit=False) as curs:
        curs.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
        tables = [r["tablename"] for r in curs.fetchall()]
        for table in tables:
            # every column as text (bytea as hex), and the raw bytes of every bytea column
            curs.execute(f'SELECT row_to_json(t)::text AS j FROM "{schema}"."{table}" t')
            chunks.extend(r["j"].encode() for r in curs.fetchall())
            curs.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s AND data_type = 'bytea'",
                (schema, table),
            )
            for column in [r["column_name"] for r in curs.fetchall()]:
                curs.execute(f'SELECT "{column}" AS b FROM "{schema}"."{table}"')
                chunks.extend(bytes(r["b"]) for r in curs.fetchall() if r["b"] is not None)
    return b"\n".join(chunks)


def postgres_files(app: ComplaintMechanism) -> bytes:
    """The PostgreSQL server's own files for this store: the heap and TOAST files of every
    table of its schema (after a checkpoint), and the write-ahead log."""
    recorder: Any = app.recorder
    schema = recorder.datastore.schema
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute("CHECKPOINT")
        curs.execute("SELECT current_setting('data_directory') AS d")
        row = curs.fetchone()
        assert row is not None
        home = Path(row["d"])
        curs.execute(
            "SELECT pg_relation_filepath(c.oid) AS f FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "UNION SELECT pg_relation_filepath(c.reltoastrelid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.reltoastrelid <> 0",
            (schema, schema),
        )
        relations = [r["f"] for r in curs.fetchall() if r["f"]]
    files = [home / r for r in relations]
    files += sorted((home / "pg_wal").glob("0*"))
    assert files and all(f.exists() for f in files), "the server's files are not readable here"
    chunks = []
    for f in files:
        chunks.extend(p.read_bytes() for p in f.parent.glob(f.name + "*") if p.is_file())
    return b"".join(chunks)


def _found(haystack: bytes, canaries: dict[str, str]) -> list[str]:
    return [
        f
        for f, c in canaries.items()
        if c.encode() in haystack or c.removeprefix("CANARY-").encode() in haystack
    ]


def test_no_personal_value_is_stored_in_clear_and_each_reads_back(app, store_url):
    # given a workflow that records every event class with a canary in every personal field
    canaries = new_canaries()
    walk_every_event_type(app, canaries)

    # when the database is read as it lies on disk (PostgreSQL: its rows, its own files and
    # its write-ahead log)
    raw = stored_bytes(app, store_url)
    if store_url.startswith("postgres"):
        raw += postgres_files(app)

    # then no canary is there in clear, yet the application reads every one back
    assert _found(raw, canaries) == []
    narratives = {
        getattr(e, "narrative", None)
        for n in app.recorder.select_notifications(start=1, limit=10_000)
        for e in [app.mapper.to_domain_event(n)]
    }
    assert canaries["narrative"] in narratives
    assert canaries["duplicate_narrative"] in narratives


def test_the_whole_event_cipher_is_on_for_postgresql_and_off_for_sqlite(app, store_url):
    # given a stored complaint
    _network(app)
    _complaint(app, "CANARY-x")

    # when the raw state of the first event is read
    state = app.recorder.select_notifications(start=1, limit=1)[0].state

    # then on PostgreSQL it is ciphertext, on SQLite the JSON with personal fields sealed
    if store_url.startswith("postgres"):
        assert not state.startswith(b"{")
    else:
        assert state.startswith(b"{")


def test_a_sealed_field_moved_to_another_event_or_field_does_not_open(app):
    # given a complaint's stored Received event
    _network(app)
    case_id = _complaint(app, "CANARY-move")
    received = app.recorder.select_events(case_id, limit=1)[0]
    state = app.mapper.cipher.decrypt(received.state) if app.mapper.cipher else received.state
    decoded = msgspec.json.decode(state)
    sealed = decoded["_pd"]

    def rebuilt(changed: dict[str, Any], version: int | None = None) -> StoredEvent:
        body = msgspec.json.encode({**decoded, "_pd": changed})
        if app.mapper.cipher:
            body = app.mapper.cipher.encrypt(body)
        return StoredEvent(case_id, version or received.originator_version, received.topic, body)

    # when a sealed value is put under another field, or the event claims another version
    swapped = {**sealed, "narrative": sealed["survivor.name"]}
    renumbered = rebuilt(sealed, version=received.originator_version + 1)

    # then neither opens (and the event as stored does)
    with pytest.raises(MapperDeserialisationError, match="does not open"):
        app.mapper.to_domain_event(rebuilt(swapped))
    with pytest.raises(MapperDeserialisationError, match="does not open"):
        app.mapper.to_domain_event(renumbered)
    assert app.mapper.to_domain_event(rebuilt(sealed)).narrative == "CANARY-move-narrative"


def test_erasure_destroys_the_keys_replay_shows_fields_erased_and_the_chain_holds(
    app, reopen, store_url
):
    # given a closed case full of personal data, and another case left alone
    _network(app)
    case_id = _closed(app, "CANARY-gone")
    kept = _complaint(app, "CANARY-kept", hours=2)
    before = [e for e in app.case_history(case_id)]

    # when a recorded decision erases everyone's personal data in it
    erase_everyone(app, case_id, at=at(10))

    # then a fresh application replays the case with every personal field erased...
    fresh = reopen()
    case = fresh.get_case(case_id)
    assert case.narrative == ERASED
    assert case.complainant == PersonDetails(name=ERASED, phone=ERASED)
    assert case.survivor == PersonDetails(name=ERASED, address=ERASED)
    assert case.closure is not None and case.closure.no_outcome_reason == ERASED
    history = fresh.case_history(case_id)
    feedback = next(e for e in history if isinstance(e, Case.FeedbackGiven))
    assert feedback.message == ERASED
    # ... its non-personal history intact, event for event
    assert [type(e) for e in history[:-1]] == [type(e) for e in before]
    for old, new in zip(before, history, strict=False):
        assert old.timestamp == new.timestamp and old.originator_version == new.originator_version
    received = history[0]
    assert isinstance(received, Case.Received)
    assert (received.channel, received.complainant_role) == (
        Channel.HOTLINE,
        ComplainantRole.WITNESS,
    )
    # ... the other case untouched, the hash chain intact, and no canary anywhere at rest
    assert fresh.get_case(kept).narrative == "CANARY-kept-narrative"
    assert verify(fresh.recorder).intact
    raw = stored_bytes(fresh, store_url)
    assert b"CANARY-gone" not in raw and b"CANARY-kept" not in raw


def test_personal_data_recorded_after_an_erasure_gets_a_new_key_and_reads(app, reopen):
    # given a case whose personal data was erased on the survivor's request
    _network(app)
    case_id = _complaint(app, "CANARY-s")
    app.erase_personal_data(
        case_id,
        actor=FOCAL,
        subjects=(DataSubject.SURVIVOR, DataSubject.COMPLAINANT),
        reason=ErasureReason.SURVIVOR_REQUEST,
        at=at(2),
    )

    # when feedback is given to the complainant afterwards
    app.give_feedback(
        case_id, actor=FOCAL, message="after-erasure", channel=FeedbackChannel.PHONE, at=at(3)
    )

    # then it reads back in a fresh application, while what was erased stays erased
    history = reopen().case_history(case_id)
    assert [e.message for e in history if isinstance(e, Case.FeedbackGiven)] == ["after-erasure"]
    assert history[0].narrative == ERASED


def test_a_write_sealed_with_a_key_another_process_erased_is_refused_and_records_nothing(
    app, reopen
):
    # given a second process that has the case's complainant key in its cache
    _network(app)
    case_id = _complaint(app, "CANARY-race")
    other = reopen()
    other.give_feedback(
        case_id, actor=FOCAL, message="first", channel=FeedbackChannel.PHONE, at=at(2)
    )

    # when this process erases the complainant's data, and the other then writes with the
    # key it cached (it loads the case with the erasure, but its key cache is older)
    app.erase_personal_data(
        case_id,
        actor=FOCAL,
        subjects=(DataSubject.COMPLAINANT,),
        reason=ErasureReason.COMPLAINANT_REQUEST,
        at=at(3),
    )
    version = app.get_case(case_id).version
    # then the write is refused as a conflict and nothing is recorded...
    with pytest.raises(VersionConflict):
        other.give_feedback(
            case_id, actor=FOCAL, message="stale", channel=FeedbackChannel.PHONE, at=at(4)
        )
    assert app.get_case(case_id).version == version
    # ... and the retry is sealed under a new key, readable by both
    other.give_feedback(
        case_id, actor=FOCAL, message="retried", channel=FeedbackChannel.PHONE, at=at(4)
    )
    messages = [e.message for e in reopen().case_history(case_id) if hasattr(e, "message")]
    assert messages == [ERASED, "retried"]


def test_retention_erases_cases_closed_longer_than_the_policy_and_nothing_twice(app):
    # given a 30-day retention, a case closed 40 days ago, one closed 10 days ago, one open
    _network(app, retention_days=30)
    old = _closed(app, "CANARY-old", hours=1)
    recent = _closed(app, "CANARY-recent", hours=30 * 24)
    open_case = _complaint(app, "CANARY-open", hours=30 * 24 + 1)
    now = at(40 * 24 + 4)

    # when the retention job runs
    report = run_retention(app, at=now)

    # then only the old case was erased, with its records, and a second run erases nothing
    assert report.cases == [old]
    assert app.get_case(old).narrative == ERASED
    assert app.get_case(recent).narrative == "CANARY-recent-narrative"
    assert app.get_case(open_case).narrative == "CANARY-open-narrative"
    assert run_retention(app, at=now + timedelta(days=1)).erased == 0


def test_retention_cannot_erase_a_case_before_its_time(app):
    # given a case closed a day ago under a 30-day retention
    _network(app, retention_days=30)
    case_id = _closed(app, "CANARY-early")

    # when erasure by retention is asked for now, then it is refused and nothing is recorded
    version = app.get_case(case_id).version
    with pytest.raises(RetentionNotDue):
        app.erase_personal_data(
            case_id,
            actor=COORDINATOR,
            subjects=tuple(DataSubject),
            reason=ErasureReason.RETENTION_EXPIRED,
            at=at(24),
        )
    assert app.get_case(case_id).version == version
    assert app.get_case(case_id).narrative == "CANARY-early-narrative"


def test_rotating_the_key_encryption_key_rewraps_data_keys_without_touching_events(
    settings, store_url
):
    # given a store with personal data under the first KEK
    app = complaint_mechanism(settings)
    _network(app)
    case_id = _complaint(app, "CANARY-rot")
    states = [n.state for n in app.recorder.select_notifications(start=1, limit=1000)]
    first = LocalKeyRing(settings.data_dir / "keys" / "kek").active_id

    # when a new KEK is made active, every data key rewrapped, and the old KEK destroyed
    rotation = rotate(app)
    retire(app, first, after_seconds=0)
    app.close()

    # then a fresh process reads everything, and the stored events are byte for byte the same
    fresh = complaint_mechanism(settings)
    assert rotation.rewrapped == 2  # the complainant's and the survivor's keys
    assert rotation.active != first
    assert fresh.get_case(case_id).narrative == "CANARY-rot-narrative"
    assert [n.state for n in fresh.recorder.select_notifications(start=1, limit=1000)] == states
    assert verify(fresh.recorder).intact
    assert fresh.data_keys is not None and set(fresh.data_keys.table.counts()) == {rotation.active}
    fresh.close()


def test_a_process_given_another_key_ring_refuses_to_start(settings, tmp_path):
    # given a store whose data keys are wrapped by the network's ring
    app = complaint_mechanism(settings)
    _network(app)
    _complaint(app, "CANARY-ring")
    app.close()

    # when a process starts with a fresh, unrelated ring, then it refuses, naming the fix
    LocalKeyRing(tmp_path / "other-ring")
    with pytest.raises(KeyRingError, match="CBCM_KEK_DIR"):
        complaint_mechanism(
            Settings(
                data_dir=settings.data_dir,
                event_store=settings.event_store,
                kek_dir=tmp_path / "other-ring",
            )
        )


def test_data_keys_are_never_deleted_and_an_erased_key_cannot_come_back(app, store_url):
    # given an erased case
    _network(app)
    case_id = _complaint(app, "CANARY-tomb")
    erase_everyone(app, case_id, at=at(2))
    recorder: Any = app.recorder
    table = key_table(recorder.events_table_name)

    # when someone tries to delete the tombstones or put key material back
    if store_url.startswith("sqlite"):
        with recorder.datastore.transaction(commit=True) as c, pytest.raises(Exception) as deleted:
            c.execute(f"DELETE FROM {table}")
        with recorder.datastore.transaction(commit=True) as c, pytest.raises(Exception) as back:
            c.execute(f"UPDATE {table} SET wrapped = x'00'")
    else:
        schema = recorder.datastore.schema
        with pytest.raises(Exception) as deleted, recorder.datastore.transaction(commit=True) as c:
            c.execute(f'DELETE FROM "{schema}"."{table}"')
        with pytest.raises(Exception) as back, recorder.datastore.transaction(commit=True) as c:
            c.execute(f'UPDATE "{schema}"."{table}" SET wrapped = \'\\x00\'')

    # then the database refuses both
    assert "never deleted" in str(deleted.value)
    assert "stays erased" in str(back.value)


def test_concurrent_erasure_and_writes_lose_nothing_written_after_the_erasure(app, reopen):
    # given a case and four other processes giving feedback while it is erased
    _network(app)
    case_id = _complaint(app, "CANARY-conc")
    writers = [reopen() for _ in range(4)]
    written: list[str] = []
    lock = threading.Lock()

    def give(writer: ComplaintMechanism, n: int) -> None:
        for i in range(5):
            message = f"w{n}-{i}"
            for _attempt in range(50):
                try:
                    writer.give_feedback(
                        case_id,
                        actor=FOCAL,
                        message=message,
                        channel=FeedbackChannel.PHONE,
                        at=at(5),
                    )
                except VersionConflict:
                    continue
                with lock:
                    written.append(message)
                break

    threads = [threading.Thread(target=give, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for _ in range(3):
        for _attempt in range(50):
            try:
                app.erase_personal_data(
                    case_id,
                    actor=FOCAL,
                    subjects=(DataSubject.COMPLAINANT,),
                    reason=ErasureReason.COMPLAINANT_REQUEST,
                    at=at(5),
                )
                break
            except VersionConflict:
                continue
    for t in threads:
        t.join()

    # then every message given after the last erasure before it reads back, every earlier
    # one reads as erased, none is lost or unreadable
    history = reopen().case_history(case_id)
    since_erasure: list[str] = []
    for e in history:
        if isinstance(e, Case.PersonalDataErased):
            since_erasure = []
        elif isinstance(e, Case.FeedbackGiven):
            assert e.message == ERASED or e.message in written
            if e.message != ERASED:
                since_erasure.append(e.message)
    feedback = [e for e in history if isinstance(e, Case.FeedbackGiven)]
    assert len(feedback) == len(written) == 20
    readable = [e.message for e in feedback if e.message != ERASED]
    assert readable == since_erasure


# ---------------------------------------------------------------- found in review


def test_a_running_process_follows_a_rotation_made_by_another(settings, reopen):
    # given a running process (no key cache, so it reads keys afresh) and a case
    running = complaint_mechanism(settings)
    assert running.data_keys is not None
    running.data_keys.cache_seconds = 0
    _network(running)
    before = _complaint(running, "CANARY-old")
    first = LocalKeyRing(settings.data_dir / "keys" / "kek").active_id

    # when another process rotates the ring and destroys the old KEK
    operator = reopen()
    rotation = rotate(operator)
    retire(operator, first, after_seconds=0)

    # then the running process still reads the case, and wraps new keys under the new KEK
    assert running.get_case(before).narrative == "CANARY-old-narrative"
    after = _complaint(running, "CANARY-new", hours=2)
    counts = running.data_keys.table.counts()
    assert set(counts) == {rotation.active}
    running.close()
    assert reopen().get_case(after).narrative == "CANARY-new-narrative"


def test_the_old_key_encryption_key_is_not_retired_right_after_a_rotation(app):
    # given a rotation just made
    _network(app)
    _complaint(app, "CANARY-soon")
    assert app.data_keys is not None
    first = app.data_keys.kek.active_id
    rotate(app)

    # when the old KEK is retired at once, then it is refused (a process may still be
    # committing a key wrapped under it) and the key file stays
    with pytest.raises(KeyRingError, match="rotated"):
        retire(app, first)
    assert first in app.data_keys.kek.ids  # type: ignore[attr-defined]


def test_a_second_host_with_a_ring_of_its_own_is_refused_even_on_an_empty_store(settings, tmp_path):
    # given a first host that opened a fresh store (no data key yet)
    first = complaint_mechanism(settings)
    first.close()

    # when a second host, with its own data dir (and so its own new ring), opens the store
    # then it is refused before it can write anything the first could not read
    with pytest.raises(KeyRingError):
        complaint_mechanism(
            Settings(data_dir=tmp_path / "second-host", event_store=settings.event_store)
        )


def test_a_key_moved_behind_its_tombstone_or_restored_from_a_backup_is_refused(app, store_url):
    # given an erased case, and a copy of its key rows taken before the erasure
    _network(app)
    case_id = _complaint(app, "CANARY-backup")
    recorder: Any = app.recorder
    table = key_table(recorder.events_table_name)
    if store_url.startswith("postgres"):
        table = f'"{recorder.datastore.schema}"."{table}"'
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(f"SELECT scope, subject, generation, kek_id, wrapped, created_at FROM {table}")
        backup = [tuple(r) if not isinstance(r, dict) else tuple(r.values()) for r in c.fetchall()]
    erase_everyone(app, case_id, at=at(2))
    mark = "?" if store_url.startswith("sqlite") else "%s"

    # when someone moves the tombstones aside, or puts the old rows back
    with pytest.raises(Exception) as moved, recorder.datastore.transaction(commit=True) as c:
        c.execute(f"UPDATE {table} SET generation = generation + 1000")
    with pytest.raises(Exception) as restored, recorder.datastore.transaction(commit=True) as c:
        c.executemany(
            f"INSERT INTO {table} (scope, subject, generation, kek_id, wrapped, created_at) "
            f"VALUES ({', '.join([mark] * 6)})",
            [(*row[:2], row[2] - 1, *row[3:]) for row in backup],
        )

    # then the database refuses both, and the case stays erased
    assert "identity" in str(moved.value)
    assert "stays erased" in str(restored.value)
    assert app.get_case(case_id).narrative == ERASED


def test_retention_keeps_a_forwarded_item_whose_loop_is_open_and_erases_it_when_due(app):
    # given a complaint forwarded to a CFM that has not closed the loop
    _network(app, retention_days=30)
    case_id = _complaint(app, "CANARY-cfm")
    app.assess_case(
        case_id, actor=FOCAL, category=ComplaintCategory.NON_SENSITIVE_FEEDBACK, at=at(2)
    )
    forwarded = app.forward_to_feedback_mechanism(
        case_id,
        actor=FOCAL,
        category=FeedbackCategory.SERVICE_COMPLAINT,
        sector=Sector.WASH,
        concerned_agency="unhcr",
        at=at(3),
    ).id

    # when retention runs after the case's retention, with the loop still open
    report = run_retention(app, at=at(40 * 24))

    # then the case is erased, the CFM's copy kept; once its loop closed long enough, it goes
    assert report.cases == [case_id] and report.feedback == []
    assert app.get_case(case_id).narrative == ERASED
    assert app.get_feedback(forwarded).text == "CANARY-cfm-narrative"
    app.respond_to_feedback(forwarded, actor=FOCAL, response="CANARY-answer", at=at(40 * 24 + 1))
    app.close_feedback_loop(forwarded, actor=FOCAL, at=at(40 * 24 + 2))
    later = run_retention(app, at=at(80 * 24))
    assert later.feedback == [forwarded]
    assert app.get_feedback(forwarded).text == ERASED


def test_retention_erases_a_record_added_after_the_case_was_erased(app):
    # given a case erased by retention, then an auditors' grant recorded on it (personal text)
    _network(app, retention_days=30)
    case_id = _closed(app, "CANARY-late")
    assert run_retention(app, at=at(40 * 24)).cases == [case_id]
    app.grant_audit_access(
        case_id, actor=COORDINATOR, auditor="aud-1", reason="CANARY-late-reason", at=at(41 * 24)
    )

    # when retention runs again, then the grant's reason is erased too
    assert run_retention(app, at=at(42 * 24)).cases == [case_id]
    assert app.has_live_personal_data((case_id, *app.records_of(app.get_case(case_id)))) is False
    assert run_retention(app, at=at(43 * 24)).cases == []
