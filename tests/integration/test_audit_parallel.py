"""``audit verify`` on every core (issue #15): ranges verified in processes, each starting
from its stored link and tiles, find what one process finds, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import pairwise

from services.application.mechanism import ComplaintMechanism
from services.audit import tree as merkle_tree
from services.audit.merkle import leaf_hash
from services.audit.parallel import _cuts, verify_parallel
from services.audit.verify import Damage, TreeAttested, verify
from services.demo.walk import build_demo_network, walk_cases
from services.event_store.chain import read_log
from services.event_store.config import persistence_env
from services.settings import Settings
from tests.integration.test_audit_chain import Dba
from tests.integration.test_audit_verify_paths import change

START = datetime(2025, 9, 1, tzinfo=UTC)


def test_ranges_in_processes_find_what_one_process_finds(
    app: ComplaintMechanism, settings: Settings
) -> None:
    build_demo_network(app, START)
    walk_cases(app, 40, random.Random(9), START)
    merkle_tree.extend(app.recorder)
    tree = merkle_tree.StoredTree(app.recorder)
    heads = [TreeAttested(size, tree.root(size), ("w",)) for size in (256, tree.size)]
    env = persistence_env(settings)
    # the cuts fall on tile boundaries, and cover every position once
    top = max(r.position for r in read_log(app.recorder))
    cuts = _cuts(app.recorder, 1, top, 2)
    assert len(cuts) == 2 and cuts[0][0] == 1 and cuts[-1][1] == top
    assert all(a[1] + 1 == b[0] for a, b in pairwise(cuts))
    starts = {t.first_position for t in merkle_tree.TileStore(app.recorder).tiles(0, 0, 99)}
    assert all(first in starts for first, _, _ in cuts[1:])

    whole = verify(app.recorder, tree_heads=heads)
    assert whole.intact and whole.checked == top and whole.covered_to == top

    # a changed byte in the middle range, and a stored tile rewritten, are found by both
    dba = Dba(app)
    dba.drop_triggers()
    middle = (cuts[1][0] + cuts[1][1]) // 2  # in the second range
    change(dba, middle)
    with dba.sql() as c:
        tiles = merkle_tree.TileStore(app.recorder)
        forged = bytes(32) + tiles.tiles(0, 0, 1)[0].hashes[32:]
        if dba.sqlite:
            c.execute(f"DROP TRIGGER IF EXISTS {dba.events_name}_tiles_no_update")
            c.execute(
                f"UPDATE {dba.events_name}_tiles SET hashes = ? WHERE level = 0 AND idx = 0",
                (forged,),
            )
        else:
            schema = app.recorder.datastore.schema
            table = f'"{schema}"."{dba.events_name}_tiles"'
            c.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            c.execute(f"UPDATE {table} SET hashes = %s WHERE level = 0 AND idx = 0", (forged,))
    whole = verify(app.recorder, tree_heads=heads)
    parallel = verify_parallel(app.recorder, env, tree_heads=heads, processes=2, min_range=50)
    key = lambda f: (f.position, str(f.kind))  # noqa: E731
    assert sorted(parallel.findings, key=key) == sorted(whole.findings, key=key)
    assert parallel.checked == whole.checked == top
    kinds = {(f.kind, f.position) for f in whole.findings}
    assert (Damage.CHANGED, middle) in kinds
    assert any("stored tile" in f.detail for f in whole.findings)
    assert leaf_hash(b"") != bytes(32)  # (the forged leaf is no leaf of any link)
