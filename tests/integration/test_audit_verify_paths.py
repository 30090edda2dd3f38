"""``verify``'s fast path (issue #7) finds exactly what the careful path alone finds.

The fast path reads intact ranges in batches and hands every range it cannot vouch for to the
careful path, which alone names damage. So, on stores damaged in several places at once, the
report must be the same, finding for finding, as the careful path's reading everything (the
fast path switched off), whatever the batch size: small batches make many hand-overs, at range
edges too. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder

from services.application.mechanism import ComplaintMechanism
from services.audit import verify as verify_module
from services.audit.verify import Attested, Report, verify
from services.event_store.chain import head, link_at
from tests.integration.test_audit_chain import START, Dba, positions
from tests.integration.walked_stores import demo_walk, walked_store_fixtures

BATCHES = (1, 7, 64, 5000)


# the demo network and 16 cases walked once per module and store; each test damages a copy
template, store = walked_store_fixtures(demo_walk(16, 5, START))


def careful_only(app: ComplaintMechanism, **kwargs: Any) -> Report:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify_module, "batch_reader", lambda *a, **k: None)
        return verify(app.recorder, **kwargs)


def with_batches(app: ComplaintMechanism, size: int, *, bulk: bool, **kwargs: Any) -> Report:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verify_module, "RANGE_ROWS", size)
        mp.setattr(verify_module, "BULK_RANGE_ROWS", size)
        return verify(app.recorder, bulk=bulk, **kwargs)


def same(app: ComplaintMechanism, **kwargs: Any) -> Report:
    """The careful path's report, after checking that the fast path gives the same, as
    tuples and as buffers (ADR 33; SQLite: PostgreSQL has no bulk reader)."""
    expected = careful_only(app, **kwargs)
    for size in BATCHES:
        for bulk in (False, True):
            got = with_batches(app, size, bulk=bulk, **kwargs)
            assert got.findings == expected.findings, f"batch {size}, bulk {bulk}"
            assert (got.checked, got.head, got.checkpoints) == (
                expected.checked,
                expected.head,
                expected.checkpoints,
            ), f"batch {size}, bulk {bulk}"
    assert verify(app.recorder, **kwargs).findings == expected.findings
    return expected


def change(dba: Dba, position: int) -> None:
    oid, version, topic, state = dba.row(position)
    damaged = bytearray(state)
    damaged[len(damaged) // 3] ^= 0x40
    dba.set_row(position, oid, version, topic, bytes(damaged))


def insert_copy(dba: Dba, position: int, of: int) -> None:
    oid, version, topic, state = dba.row(of)
    dba.insert(position, oid, version + 1000, topic, state)


def relink_to(dba: Dba, position: int, previous: int) -> None:
    """The chain row at ``position`` names another predecessor (its link left as it was)."""
    with dba.sql() as c:
        c.execute(
            dba.q(f"UPDATE {dba.chain} SET previous_position = ? WHERE position = ?"),
            (previous, position),
        )


def swap(dba: Dba, a: int, b: int) -> None:
    row_a, row_b = dba.row(a), dba.row(b)
    dba.set_row(a, row_a[0], -1, row_a[2], row_a[3])
    dba.set_row(b, *row_a)
    dba.set_row(a, *row_b)


def test_an_intact_store_reads_the_same_both_ways(store: ComplaintMechanism) -> None:
    report = same(store)
    assert report.intact and report.checked == len(positions(store))
    # on SQLite the buffers vouch for every position of an intact store (ADR 33); PostgreSQL
    # has no bulk reader (its server's work per row is the same either way)
    expected = report.checked if isinstance(store.recorder, SQLiteApplicationRecorder) else 0
    assert with_batches(store, 64, bulk=True).bulk == expected
    assert with_batches(store, 64, bulk=False).bulk == 0
    middle = positions(store)[len(positions(store)) // 2]
    assert same(store, start=middle).intact
    assert same(store, start=5, stop=middle).checked == len(
        [p for p in positions(store) if 5 <= p <= middle]
    )


Damaging = Callable[[Dba, list[int]], None]

DAMAGES: dict[str, Damaging] = {
    "changed at both ends": lambda d, p: (change(d, p[0]), change(d, p[-1])),
    "changed, far apart": lambda d, p: [change(d, x) for x in (p[3], p[90], p[91], p[150])],
    "deleted, with and without links": lambda d, p: (
        d.delete(p[20]),
        d.delete(p[70], link_too=True),
        d.delete(p[71], link_too=True),
        d.delete(p[-2]),
    ),
    "a predecessor renamed, back and on": lambda d, p: (
        relink_to(d, p[50], p[48]),
        relink_to(d, p[120], p[121]),
    ),
    "swapped near and far": lambda d, p: (swap(d, p[40], p[43]), swap(d, p[100], p[107])),
    "everything at once": lambda d, p: (
        change(d, p[10]),
        d.delete(p[33], link_too=True),
        swap(d, p[60], p[62]),
        change(d, p[61 + 40]),
        d.delete(p[130]),
        insert_copy(d, p[-1] + 1, of=p[5]),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damage_is_named_the_same_way_by_both_paths(store: ComplaintMechanism, damage: str) -> None:
    dba = Dba(store)
    before = positions(store)
    assert len(before) > 160
    dba.drop_triggers()
    DAMAGES[damage](dba, before)
    report = same(store)
    assert not report.intact


def test_random_damage_is_named_the_same_way_by_both_paths(store: ComplaintMechanism) -> None:
    dba = Dba(store)
    rng = random.Random(7)
    before = positions(store)
    dba.drop_triggers()
    for position in rng.sample(before[1:-1], 12):
        kind = rng.choice(("change", "delete", "delete both"))
        if kind == "change":
            change(dba, position)
        else:
            dba.delete(position, link_too=kind == "delete both")
    assert not same(store).intact


def test_checkpoints_are_held_the_same_way_by_both_paths(store: ComplaintMechanism) -> None:
    all_positions = positions(store)
    signed = [all_positions[i] for i in (0, 30, 31, 90, len(all_positions) - 1)]
    witnessed = []
    for position in signed:
        row = link_at(store.recorder, position)
        assert row is not None
        witnessed.append(Attested(position, row.link, "before"))
    assert same(store, checkpoints=witnessed).intact
    dba = Dba(store)
    dba.drop_triggers()
    target = all_positions[60]
    dba.change_one_byte(target)
    dba.relink_from(target)
    forged = [*witnessed, Attested(all_positions[45], bytes(32), "forged")]
    report = same(store, checkpoints=forged)
    assert not report.intact
    top = head(store.recorder)
    assert top is not None and report.head == top.position
