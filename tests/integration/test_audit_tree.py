"""The Merkle tree over the store's chain (issue #15): tiles stored beside the log, roots and
proofs read from them equal to the tree computed from every link, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from services.application.mechanism import ComplaintMechanism
from services.audit import tree as merkle_tree
from services.audit.merkle import (
    MemoryTree,
    ProofError,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from services.event_store.chain import read_log
from services.event_store.tiles import TILE_WIDTH, TileStore
from tests.integration.walked_stores import demo_walk, walked_store_fixtures

START = datetime(2025, 9, 1, tzinfo=UTC)


# the demo network and 40 cases walked once per module and store; each test reads a copy
template, store = walked_store_fixtures(demo_walk(40, 3, START))


def links(app: ComplaintMechanism) -> list[tuple[int, bytes]]:
    return [(r.position, r.chain.link) for r in read_log(app.recorder) if r.chain is not None]


def test_tiles_roots_and_proofs_agree_with_the_whole_tree_and_stay_as_stored(
    store: ComplaintMechanism,
) -> None:
    chained = links(store)
    assert len(chained) > 2 * TILE_WIDTH, "the store should fill a few tiles"
    reference = MemoryTree([leaf_hash(link) for _, link in chained])
    covered = merkle_tree.extend(store.recorder)
    assert covered == len(chained) - len(chained) % TILE_WIDTH
    assert merkle_tree.extend(store.recorder) == covered  # idempotent
    tree = merkle_tree.StoredTree(store.recorder)
    assert tree.size == len(chained)
    rng = random.Random(5)
    for size in {1, 255, 256, 257, 512, len(chained), *rng.sample(range(1, len(chained)), 8)}:
        assert tree.root(size) == reference.root(size), size
    for index in rng.sample(range(len(chained)), 10):
        position, link = chained[index]
        assert tree.leaf_index(position) == index
        assert tree.position_of(index) == position
        proof = tree.inclusion(index, len(chained))
        verify_inclusion(index, len(chained), leaf_hash(link), proof, reference.root())
    for old in (1, 256, 300, len(chained) - 1):
        proof = tree.consistency(old, len(chained))
        verify_consistency(old, len(chained), reference.root(old), reference.root(), proof)
    assert merkle_tree.check_tiles(store.recorder, 0, 0, 1 << 20) == []
    # stored tiles refuse UPDATE and DELETE, like the log, in a transaction that may write (a
    # read transaction is refused any write before the triggers are reached, on PostgreSQL)
    tiles = TileStore(store.recorder)
    for statement in ("UPDATE {tiles} SET root = root", "DELETE FROM {tiles}"):
        with (
            pytest.raises(Exception, match="append-only"),
            store.recorder.datastore.transaction(commit=True) as c,
        ):
            c.execute(statement.replace("{tiles}", tiles._tiles))
    # and a proof against another leaf, or another root, fails
    for index in rng.sample(range(len(chained)), 5):
        proof = tree.inclusion(index, len(chained))
        with pytest.raises(ProofError):
            verify_inclusion(
                index, len(chained), leaf_hash(chained[index][1][::-1]), proof, reference.root()
            )
        with pytest.raises(ProofError):
            verify_inclusion(
                index,
                len(chained),
                leaf_hash(chained[index][1]),
                proof,
                reference.root(len(chained) - 1),
            )


def test_the_proofs_of_a_case_read_in_one_go_are_the_proofs_of_the_whole_tree(
    store: ComplaintMechanism,
) -> None:
    """What the export and the proof figure use: the leaves of many positions in one query,
    the tiles their proofs need in one more; the proofs are RFC 6962's, node for node."""
    chained = links(store)
    merkle_tree.extend(store.recorder)
    reference = MemoryTree([leaf_hash(link) for _, link in chained])
    rng = random.Random(11)
    edge = len(chained) - len(chained) % TILE_WIDTH
    for size in (len(chained), edge, edge - 1, 300, *rng.sample(range(2, len(chained)), 4)):
        picked = sorted(
            [*rng.sample(range(size), min(size, 40)), 0, size - 1, min(TILE_WIDTH, size - 1)]
        )
        tree = merkle_tree.StoredTree(store.recorder)  # fresh: nothing read yet
        positions = [chained[i][0] for i in picked] + [chained[-1][0] + 1000]  # and one not
        indexes = tree.leaf_indexes(positions)
        assert indexes == {chained[i][0]: i for i in picked}
        tree.prefetch(indexes.values(), size)
        for index in picked:
            assert tree.inclusion(index, size) == inclusion_proof(index, size, reference), (
                index,
                size,
            )


def test_a_records_leaves_read_in_one_query_are_its_every_event_in_the_tree(
    store: ComplaintMechanism,
) -> None:
    """What the export reads for a case: from one position of a record, every event of
    that record and its leaf index, on and off the stored tiles."""
    rows = [r for r in read_log(store.recorder) if r.chain is not None]
    merkle_tree.extend(store.recorder)
    leaf = {r.position: i for i, r in enumerate(rows)}
    by_record: dict[object, list[int]] = {}
    for r in rows:
        by_record.setdefault(r.originator_id, []).append(r.position)
    tree = merkle_tree.StoredTree(store.recorder)
    # records whose events lie in the tiles, at the right edge, and across both
    picked = [ps for ps in by_record.values() if len(ps) > 3][:6]
    picked.append(by_record[rows[-1].originator_id])
    for positions in picked:
        assert tree.record_leaf_indexes([positions[len(positions) // 2]]) == {
            p: leaf[p] for p in positions
        }
