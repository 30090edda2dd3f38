"""The write path's cost of sealing personal data (issue #6): commands per second through the
application with and without encryption, same workload, same kind of store, same run.

Three configurations of the same application, each on a fresh store, in alternating rounds:
- *plain*: no field sealing, no whole-event cipher (the application as before issue #6);
- *sealed*: every personal field sealed under its person's data key (data keys created and
  checked in the events' transaction);
- *sealed + cipher*: the above and the library's whole-event cipher (the PostgreSQL default).

Figures are printed, not asserted. ``CBCM_BENCH_CASES`` overrides the number of cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.event_store import persistence_env
from services.mechanism import ComplaintMechanism
from services.settings import Settings
from tests.bench.results import Figure, record
from tests.bench.test_write_path import ROUNDS, STAGES, WARMUP_CASES, _cases, run_cbcm, scripts
from tests.bench.test_write_path import set_up_network as network
from tests.conftest import T0

pytestmark = pytest.mark.bench


def _app(url: str, data: Path, *, sealed: bool, cipher: bool) -> ComplaintMechanism:
    settings = Settings(data_dir=data, event_store=url, event_cipher="on" if cipher else "off")
    app = ComplaintMechanism(env=persistence_env(settings))
    if not sealed:
        # The application exactly as it is, minus the sealing step (bench only).
        app.mapper.data_keys = app.recorder.data_keys = None  # type: ignore[attr-defined]
        app.data_keys = None
    return app


@pytest.fixture
def apps(
    store_url: str, baseline_store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, ComplaintMechanism]]:
    if store_url.startswith("sqlite"):
        third = f"sqlite:///{tmp_path / 'third.sqlite3'}"
    else:
        from tests.bench.conftest import extra_schema  # noqa: PLC0415

        third = extra_schema(request)
    made = {
        "plain": _app(baseline_store_url, tmp_path / "d1", sealed=False, cipher=False),
        "sealed": _app(store_url, tmp_path / "d2", sealed=True, cipher=False),
        "sealed + cipher": _app(third, tmp_path / "d3", sealed=True, cipher=True),
    }
    yield made
    for app in made.values():
        app.close()


def test_encryption_cost_on_the_write_path(store_url: str, apps: dict[str, ComplaintMechanism]):
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    count = _cases(kind)
    chunk = -(-count // ROUNDS)
    seconds = dict.fromkeys(apps, 0.0)
    commands = 0
    for app in apps.values():
        network(app)
        run_cbcm(app, scripts(WARMUP_CASES, seed=1), T0)
    for r, first in enumerate(range(0, count, chunk)):
        cases = scripts(min(chunk, count - first), seed=100 + r)
        start = T0 + timedelta(days=1 + r)
        for name, app in apps.items():
            saves, _ids, spent = run_cbcm(app, cases, start)
            seconds[name] += spent
        commands += len(saves)
    assert commands == count * (1 + len(STAGES))
    sealed = apps["sealed"].data_keys
    assert sealed is not None and sum(sealed.table.counts().values()) > 0

    plain = commands / seconds["plain"]
    line = "-" * 78
    print()
    print(line)
    print(f"encryption on the write path ({kind}), {count} cases x {1 + len(STAGES)} commands")
    print(f"{'':24}{'seconds':>9}{'commands/s':>12}{'vs plain':>10}")
    for name, spent in seconds.items():
        rate = commands / spent
        print(f"{name:24}{spent:>9.2f}{rate:>12.1f}{rate / plain:>10.2f}")
        if name != "plain":
            record(
                Figure(
                    bench="encryption cost (#6)",
                    figure=f"commands/s, {name}",
                    store=kind,
                    value=rate,
                    unit="commands/s",
                    baseline=plain,
                    baseline_name="the same application, no sealing, no cipher",
                )
            )
    print(line)
