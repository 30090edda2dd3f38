"""The tamper-evident log (issue #5): the chain, the append-only tables, and verification.

Each damage test works on a throwaway store (SQLite and PostgreSQL), written through the real
application, then damaged the way a database administrator could: first removing the
triggers that refuse UPDATE and DELETE, then changing rows directly. ``verify`` must name the
first bad position and the kind of damage. A cut-off tail and a tail rewritten with every
link recomputed leave a consistent chain: they are caught through the checkpoints a witness
holds (here: the head as it was signed before the damage).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder

from services.application.mechanism import ComplaintMechanism
from services.audit.verify import Attested, Damage, verify
from services.bootstrap import complaint_mechanism
from services.event_store.chain import GENESIS, chain_table, head, link_hash, read_log
from tests.integration.walked_stores import (
    Template,
    copy_of,
    demo_walk,
    sqlite_template_fixture,
    walked_store_fixtures,
)

START = datetime(2025, 9, 1, tzinfo=UTC)


# the demo network and 12 cases walked once per module and store; each test damages a copy
template, store = walked_store_fixtures(demo_walk(12, 5, START))


class Dba:
    """Direct access to the store's tables, as a database administrator has it."""

    def __init__(self, app: ComplaintMechanism) -> None:
        self.recorder: Any = app.recorder
        self.sqlite = isinstance(self.recorder, SQLiteApplicationRecorder)
        events = self.recorder.events_table_name
        if self.sqlite:
            self.events, self.chain, self.pos = events, chain_table(events), "rowid"
            self.mark = "?"
        else:
            schema = self.recorder.datastore.schema
            self.events = f'"{schema}"."{events}"'
            self.chain = f'"{schema}"."{chain_table(events)}"'
            self.pos, self.mark = "notification_id", "%s"
        self.events_name = events

    @contextmanager
    def sql(self) -> Iterator[Any]:
        with self.recorder.datastore.transaction(commit=True) as cursor:
            yield cursor

    def q(self, statement: str) -> str:
        return statement.replace("?", self.mark)

    def drop_triggers(self) -> None:
        with self.sql() as c:
            for table, name in (
                (self.events, self.events_name),
                (self.chain, chain_table(self.events_name)),
            ):
                if self.sqlite:
                    for action in ("update", "delete"):
                        c.execute(f"DROP TRIGGER IF EXISTS {name}_no_{action}")
                else:
                    c.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")

    def row(self, position: int) -> tuple[Any, int, str, bytes]:
        with self.sql() as c:
            c.execute(
                self.q(
                    f"SELECT originator_id, originator_version, topic, state FROM {self.events} "
                    f"WHERE {self.pos} = ?"
                ),
                (position,),
            )
            found = c.fetchone()
        if isinstance(found, dict):
            return (
                found["originator_id"],
                found["originator_version"],
                found["topic"],
                bytes(found["state"]),
            )
        return (found[0], int(found[1]), found[2], bytes(found[3]))

    def set_row(self, position: int, oid: Any, version: int, topic: str, state: bytes) -> None:
        with self.sql() as c:
            c.execute(
                self.q(
                    f"UPDATE {self.events} SET originator_id = ?, originator_version = ?, "
                    f"topic = ?, state = ? WHERE {self.pos} = ?"
                ),
                (oid, version, topic, state, position),
            )

    def change_one_byte(self, position: int) -> None:
        """Flip a bit of one byte of the event's stored state. (Replacing a letter does not
        do: on PostgreSQL the state is ciphertext, with no given letter in a third of the
        runs, and the test then changed nothing.)"""
        oid, version, topic, state = self.row(position)
        middle = len(state) // 2
        changed = state[:middle] + bytes([state[middle] ^ 0x01]) + state[middle + 1 :]
        self.set_row(position, oid, version, topic, changed)

    def delete(self, position: int, *, link_too: bool = False) -> None:
        with self.sql() as c:
            c.execute(self.q(f"DELETE FROM {self.events} WHERE {self.pos} = ?"), (position,))
            if link_too:
                c.execute(self.q(f"DELETE FROM {self.chain} WHERE position = ?"), (position,))

    def insert(self, position: int, oid: Any, version: int, topic: str, state: bytes) -> None:
        with self.sql() as c:
            c.execute(
                self.q(
                    f"INSERT INTO {self.events} (originator_id, originator_version, topic, "
                    f"state, {self.pos}) VALUES (?, ?, ?, ?, ?)"
                ),
                (oid, version, topic, state, position),
            )

    def relink_from(self, position: int) -> None:
        """Recompute every link from ``position`` on, as a careful forger would."""
        rows = [r for r in read_log(self.recorder) if r.position >= position]
        before = [r for r in read_log(self.recorder) if r.position < position]
        previous = before[-1].chain.link if before and before[-1].chain else GENESIS
        with self.sql() as c:
            for r in rows:
                assert r.originator_id is not None and r.version is not None
                assert r.topic is not None and r.state is not None
                link = link_hash(
                    previous,
                    position=r.position,
                    originator_id=r.originator_id,
                    version=r.version,
                    topic=r.topic,
                    state=r.state,
                )
                c.execute(
                    self.q(f"UPDATE {self.chain} SET link = ? WHERE position = ?"),
                    (link, r.position),
                )
                previous = link


def positions(app: ComplaintMechanism) -> list[int]:
    return [r.position for r in read_log(app.recorder)]


def signed_head(app: ComplaintMechanism) -> list[Attested]:
    top = head(app.recorder)
    assert top is not None
    return [Attested(top.position, top.link, "before the damage")]


def only(report: Any) -> tuple[Damage, int]:
    first = report.first
    assert first is not None, "verify found nothing"
    return first.kind, first.position


# ---------------------------------------------------------------------------------- tests


def test_an_untouched_store_verifies_against_its_checkpoints(store: ComplaintMechanism) -> None:
    report = verify(store.recorder, checkpoints=signed_head(store))
    assert report.intact, report.findings
    assert report.checked == len(positions(store)) > 100
    assert report.checkpoints == 1


def test_updating_or_deleting_events_is_refused_by_the_database(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    first = positions(store)[0]
    for statement in (
        f"UPDATE {dba.events} SET topic = 'x' WHERE {dba.pos} = {first}",
        f"DELETE FROM {dba.events} WHERE {dba.pos} = {first}",
        f"UPDATE {dba.chain} SET link = NULL WHERE position = {first}",
        f"DELETE FROM {dba.chain} WHERE position = {first}",
    ):
        with pytest.raises(Exception, match="append-only"), dba.sql() as c:
            c.execute(statement)
    assert verify(store.recorder).intact


def test_one_changed_byte_is_named_at_its_position(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    target = positions(store)[40]
    oid, version, topic, state = dba.row(target)
    dba.drop_triggers()
    damaged = bytearray(state)
    damaged[len(damaged) // 2] ^= 0x01
    dba.set_row(target, oid, version, topic, bytes(damaged))
    assert only(verify(store.recorder)) == (Damage.CHANGED, target)


def test_a_deleted_event_is_missing(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    target = positions(store)[30]
    dba.drop_triggers()
    dba.delete(target)
    assert only(verify(store.recorder)) == (Damage.MISSING, target)


def test_an_event_deleted_with_its_link_is_missing(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    target = positions(store)[30]
    dba.drop_triggers()
    dba.delete(target, link_too=True)
    assert only(verify(store.recorder)) == (Damage.MISSING, target)


def test_two_swapped_events_are_reordered(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    a, b = positions(store)[50], positions(store)[53]
    row_a, row_b = dba.row(a), dba.row(b)
    dba.drop_triggers()
    dba.set_row(a, row_a[0], -1, row_a[2], row_a[3])  # out of the way of the primary key
    dba.set_row(b, *row_a)
    dba.set_row(a, *row_b)
    report = verify(store.recorder)
    assert only(report) == (Damage.REORDERED, a)
    assert {(f.kind, f.position) for f in report.findings} == {
        (Damage.REORDERED, a),
        (Damage.REORDERED, b),
    }


def test_an_inserted_event_is_named(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    last = positions(store)[-1]
    oid, version, topic, state = dba.row(positions(store)[10])
    dba.insert(last + 1, oid, version + 1000, topic, state)
    assert only(verify(store.recorder)) == (Damage.INSERTED, last + 1)


def test_a_cut_off_tail_is_caught_by_the_checkpoints(store: ComplaintMechanism) -> None:
    witnessed = signed_head(store)
    dba = Dba(store)
    all_positions = positions(store)
    dba.drop_triggers()
    for position in all_positions[-5:]:
        dba.delete(position, link_too=True)
    # the chain that is left is consistent: only the checkpoint shows the loss
    assert verify(store.recorder).intact
    assert only(verify(store.recorder, checkpoints=witnessed)) == (
        Damage.TRUNCATED,
        all_positions[-6] + 1,
    )


def test_a_tail_rewritten_with_every_link_recomputed_is_caught_by_the_checkpoints(
    store: ComplaintMechanism,
) -> None:
    earlier = Attested(positions(store)[20], read_log_link(store, positions(store)[20]))
    witnessed = [earlier, *signed_head(store)]
    dba = Dba(store)
    target = positions(store)[-10]
    dba.drop_triggers()
    dba.change_one_byte(target)
    dba.relink_from(target)
    assert verify(store.recorder).intact
    kind, position = only(verify(store.recorder, checkpoints=witnessed))
    # named from the first position the last matching checkpoint does not vouch for
    assert (kind, position) == (Damage.CHANGED, earlier.position + 1)


def test_verification_can_start_from_a_position(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    early = positions(store)[5]
    dba.drop_triggers()
    dba.delete(early)
    later = positions(store)[60]
    report = verify(store.recorder, start=later)
    assert report.intact
    assert report.checked == len([p for p in positions(store) if p >= later])


def read_log_link(app: ComplaintMechanism, position: int) -> bytes:
    for row in read_log(app.recorder, position):
        assert row.chain is not None
        return row.chain.link
    raise AssertionError(position)


def test_two_adjacent_events_deleted_with_their_links_are_named_from_the_first(
    store: ComplaintMechanism,
) -> None:
    dba = Dba(store)
    first, second = positions(store)[30], positions(store)[31]
    dba.drop_triggers()
    dba.delete(first, link_too=True)
    dba.delete(second, link_too=True)
    assert only(verify(store.recorder)) == (Damage.MISSING, first)


sqlite_template = sqlite_template_fixture(demo_walk(6, 5, START), "template-6")


@pytest.fixture
def sqlite_store(sqlite_template: Template, tmp_path: Path) -> Iterator[ComplaintMechanism]:
    """SQLite only: its ids are text and its INSERT has OR REPLACE (PostgreSQL has neither).
    The demo network and 6 cases, walked once per module; each test damages a copy."""
    with copy_of(sqlite_template, tmp_path) as settings:
        app = complaint_mechanism(settings)
        yield app
        app.close()


def test_an_id_respelled_to_hide_an_event_from_its_aggregate_is_changed(
    sqlite_store: ComplaintMechanism,
) -> None:
    store = sqlite_store
    dba = Dba(store)
    target = positions(store)[-1]
    dba.drop_triggers()
    with dba.sql() as c:
        c.execute(
            f"UPDATE {dba.events} SET originator_id = upper(originator_id) WHERE rowid = ?",
            (target,),
        )
    assert only(verify(store.recorder)) == (Damage.CHANGED, target)


def test_insert_or_replace_cannot_get_round_the_triggers(
    sqlite_store: ComplaintMechanism,
) -> None:
    store = sqlite_store
    dba = Dba(store)
    target = positions(store)[10]
    oid, version, topic, state = dba.row(target)
    with pytest.raises(Exception, match="append-only"), dba.sql() as c:
        c.execute(
            f"INSERT OR REPLACE INTO {dba.events} (rowid, originator_id, originator_version, "
            "topic, state) VALUES (?, ?, ?, ?, ?)",
            (target, oid, version, topic, state + b" "),
        )
    assert verify(store.recorder).intact
