"""Write path with writer marks (issue 15) next to the same write path without them, measured
in the same run.

Both sides are the whole cbcm application (domain, hash chain, sealed personal data, on
PostgreSQL the whole-event cipher) on a fresh store of the same kind. The baseline is the
write path as it was before issue 15: its recorder marks no commit and its data keys do not
consult the log's erasures. The measured side marks every commit (an HMAC-SHA256 and one more
row in the commit's transaction) and consults the log before it unwraps a key it did not
have cached.

The same case scripts (``test_write_path``: receive, assess, consent, refer, acknowledge,
outcome, feedback, close) run on both, in rounds that alternate which side goes first, so
that drift on a shared machine falls on both alike. The figure is the ratio of commands per
second, target at least 0.9. Figures are printed and recorded, never asserted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.application.mechanism import ComplaintMechanism
from services.event_store.config import persistence_env
from services.event_store.custody import unmarked, writer_started
from services.settings import Settings
from tests.bench.results import Figure, Target, quick, record, store_kind
from tests.bench.test_write_path import (
    ROUNDS,
    STAGES,
    WARMUP_CASES,
    run_cbcm,
    scripts,
    set_up_network,
)
from tests.conftest import T0

pytestmark = pytest.mark.bench

CASES = {"sqlite": 600, "postgres": 400}
QUICK_CASES = {"sqlite": 200, "postgres": 150}


def _cases(kind: str) -> int:
    return int(os.environ.get("CBCM_BENCH_CASES", (QUICK_CASES if quick() else CASES)[kind]))


def _app(store_url: str, data_dir: Path, *, marked: bool) -> ComplaintMechanism:
    app = ComplaintMechanism(
        env=persistence_env(Settings(data_dir=data_dir, event_store=store_url))
    )
    if not marked:
        recorder = app.recorder
        recorder.writer = None  # type: ignore[attr-defined]  # today's: no mark per commit
        if app.data_keys is not None:
            app.data_keys.log = None  # nor the log's word on erasure
    return app


@pytest.fixture
def apps(
    store_url: str, baseline_store_url: str, tmp_path: Path
) -> Iterator[tuple[ComplaintMechanism, ComplaintMechanism]]:
    marked = _app(store_url, tmp_path / "marked", marked=True)
    plain = _app(baseline_store_url, tmp_path / "plain", marked=False)
    yield marked, plain
    marked.close()
    plain.close()


def test_writer_marks(store_url: str, apps: tuple[ComplaintMechanism, ComplaintMechanism]) -> None:
    marked, plain = apps
    kind = store_kind(store_url)
    count = _cases(kind)
    chunk = -(-count // ROUNDS)
    for app in (marked, plain):
        set_up_network(app)
        run_cbcm(app, scripts(WARMUP_CASES, seed=1), T0)
    seconds = {"marked": 0.0, "plain": 0.0}
    commands = 0
    for r, first in enumerate(range(0, count, chunk)):
        cases = scripts(min(chunk, count - first), seed=100 + r)
        start = T0 + timedelta(days=1 + r)
        order = [("marked", marked), ("plain", plain)]
        for name, app in order if r % 2 == 0 else reversed(order):
            saves, _ids, spent = run_cbcm(app, cases, start)
            seconds[name] += spent
        commands += len(saves)
    assert commands == count * (1 + len(STAGES))

    # every commit of the measured side is marked; the baseline's are not
    key = marked.recorder.writer  # type: ignore[attr-defined]
    assert key is not None
    assert writer_started(marked.recorder, key) == 1
    assert next(unmarked(marked.recorder, key, 1), None) is None
    assert next(unmarked(plain.recorder, key, 1), None) is not None

    with_marks = commands / seconds["marked"]
    without = commands / seconds["plain"]
    print()
    print(f"writer marks (#15), {kind}, {count} cases, {commands} commands per side")
    print(f"{'with marks':24}{with_marks:>12.1f} commands/s")
    print(f"{'without (before #15)':24}{without:>12.1f} commands/s")
    print(f"{'ratio with/without':24}{with_marks / without:>12.3f}   (target >= 0.9)")
    record(
        Figure(
            bench="writer marks (#15)",
            figure="commands/s, every commit marked",
            store=kind,
            value=with_marks,
            unit="commands/s",
            baseline=without,
            baseline_name="the same write path without marks (before #15)",
            target=Target("ratio", ">=", 0.9),
        )
    )
