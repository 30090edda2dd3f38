"""A projector follows the stream's predecessor links, so holes in store positions are not gaps."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from contracts.actors import ActorRef
from contracts.case import CaseReceivedV1
from contracts.envelope import CloudEvent
from projections.base import get_position
from projections.inbox import InboxProjection, case_row
from services.projector.runner import Poison, apply_batch, open_projection, read_item
from services.relay.translation import encode

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def received(position: int) -> tuple[int, CloudEvent[Any], UUID]:
    case_id = uuid4()
    data = CaseReceivedV1(
        case_id=case_id,
        version=1,
        actor=ActorRef(user="op-1", agency="unhcr", role="intake_operator"),
        received_at=T0,
        channel="hotline",
        complainant_role="anonymous",
        immediate_safety_risk=False,
        has_complainant_details=False,
        has_survivor_details=False,
    )
    message: CloudEvent[Any] = CloudEvent(
        id=f"{case_id}:1",
        source="test",
        type="org.psea.cbcm.case.received.v1",
        time=T0,
        subject=str(case_id),
        position=position,
        data=data,
    )
    return position, message, case_id


def test_a_hole_in_store_positions_is_followed_when_the_relay_says_so(tmp_path: Path) -> None:
    # given positions 1, 2 and 5: PostgreSQL spent 3 and 4 on writes that failed
    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    batch = [received(1), received(2), received(5)]
    # when the relay's header says 5 follows 2
    done = apply_batch(
        InboxProjection(), db, [(p, m) for p, m, _ in batch], previous={1: 0, 2: 1, 5: 2}
    )
    # then all three are applied, with no gap
    assert done.gap is None and done.applied == 3
    assert get_position(db) == 5
    assert all(case_row(db, case_id) is not None for _, _, case_id in batch)


def test_a_missing_message_is_still_a_gap(tmp_path: Path) -> None:
    # given position 5 whose predecessor (4) never arrived
    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    batch = [received(1), received(2), received(5)]
    done = apply_batch(
        InboxProjection(), db, [(p, m) for p, m, _ in batch], previous={1: 0, 2: 1, 5: 4}
    )
    # then the projector stops at 2 and does not apply 5
    assert done.gap is not None and done.applied == 2
    assert get_position(db) == 2
    assert case_row(db, batch[2][2]) is None


# ------------------------------------------------------------------------------- stalls


class Faulty(InboxProjection):
    """The inbox, but ``apply`` (or ``end_batch``) raises on one case: a poison message."""

    def __init__(self, poison: UUID, *, in_end_batch: bool = False) -> None:
        super().__init__()
        self.poison = str(poison)
        self.in_end_batch = in_end_batch
        self.pending: set[str] = set()

    def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None:
        case_id = str(message.data.case_id)
        if case_id == self.poison and not self.in_end_batch:
            raise OverflowError("date value out of range")
        self.pending.add(case_id)
        super().apply(db, message)

    def end_batch(self, db: sqlite3.Connection) -> None:
        pending, self.pending = self.pending, set()
        super().end_batch(db)
        if self.in_end_batch and self.poison in pending:
            raise OverflowError("date value out of range")


def rows(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM inbox_cases").fetchone()[0])


def test_a_message_that_apply_refuses_stalls_the_batch_right_before_it(tmp_path: Path) -> None:
    # given five messages, the fourth of which the projection cannot apply
    batch = [received(p) for p in range(1, 6)]
    projection = Faulty(batch[3][2])
    db = open_projection(projection, tmp_path / "inbox.sqlite3")
    # when the batch is applied
    done = apply_batch(projection, db, [(p, m) for p, m, _ in batch])
    # then the three before it are committed, and the stall names it by position and type
    assert (done.applied, done.skipped, done.position, done.gap) == (3, 0, 3, None)
    assert done.stall == Poison(3, 4, "org.psea.cbcm.case.received.v1", "OverflowError")
    assert get_position(db) == 3 and rows(db) == 3
    # and applying the batch again (a redelivery) stalls at the same message, nothing twice
    again = apply_batch(projection, db, [(p, m) for p, m, _ in batch])
    assert (again.applied, again.skipped, again.stall) == (0, 3, done.stall)
    assert get_position(db) == 3 and rows(db) == 3


def test_a_failure_in_end_batch_is_traced_to_its_message(tmp_path: Path) -> None:
    batch = [received(p) for p in range(1, 6)]
    projection = Faulty(batch[1][2], in_end_batch=True)
    db = open_projection(projection, tmp_path / "inbox.sqlite3")
    done = apply_batch(projection, db, [(p, m) for p, m, _ in batch])
    assert done.stall is not None and (done.stall.index, done.stall.position) == (1, 2)
    assert get_position(db) == 1 and rows(db) == 1


def test_after_the_fix_the_projection_goes_on_from_the_stalled_position(tmp_path: Path) -> None:
    # given a read model stalled at position 3
    batch = [received(p) for p in range(1, 6)]
    items = [(p, m) for p, m, _ in batch]
    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    assert apply_batch(Faulty(batch[2][2]), db, items).position == 2
    # when the fixed projection gets the same messages again
    done = apply_batch(InboxProjection(), db, items)
    # then it skips what was applied and applies the rest, the poison included
    assert (done.applied, done.skipped, done.stall) == (3, 2, None)
    assert get_position(db) == 5 and rows(db) == 5


def test_a_message_of_an_unknown_type_is_a_stall_at_its_position(tmp_path: Path) -> None:
    first, second = received(1), received(2)
    unknown = encode(second[1]).replace(b"case.received.v1", b"case.received.v9")
    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    items = [(first[0], first[1]), read_item(unknown, 2), (3, received(3)[1])]
    done = apply_batch(InboxProjection(), db, items)
    assert (done.applied, done.position) == (1, 1)
    assert done.stall == Poison(1, 2, "org.psea.cbcm.case.received.v9", "UnknownMessageType")


def test_a_message_that_is_not_even_json_is_a_stall_after_the_recorded_position(
    tmp_path: Path,
) -> None:
    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    first = received(1)
    done = apply_batch(
        InboxProjection(), db, [(1, first[1]), read_item(b"\x00 name: A. Survivor", 2)]
    )
    # the text is not repeated anywhere: only "unreadable" and the decoder's error type
    assert done.stall == Poison(1, 2, "unreadable", "DecodeError")
    assert get_position(db) == 1


def test_a_failure_of_the_disk_is_raised_not_taken_for_a_stall(tmp_path: Path) -> None:
    class Full(InboxProjection):
        def apply(self, db: sqlite3.Connection, message: CloudEvent[Any]) -> None:
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise error

    db = open_projection(InboxProjection(), tmp_path / "inbox.sqlite3")
    with pytest.raises(sqlite3.OperationalError):
        apply_batch(Full(), db, [(1, received(1)[1])])
    assert get_position(db) == 0
