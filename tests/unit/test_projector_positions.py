"""A projector follows the stream's predecessor links, so holes in store positions are not gaps."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from contracts.actors import ActorRef
from contracts.case import CaseReceivedV1
from contracts.envelope import CloudEvent
from projections.base import get_position
from projections.inbox import InboxProjection, case_row
from services.projector.runner import apply_batch, open_projection

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
