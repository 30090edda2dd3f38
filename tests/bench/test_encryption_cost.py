"""The write path's cost of sealing personal data (issue #6): commands per second through the
application with and without encryption, same workload, same kind of store, same run.

Three configurations of the same application, each on a fresh store, in alternating rounds:
- *plain*: no field sealing, no whole-event cipher (the application as before issue #6);
- *sealed*: every personal field sealed under its person's data key (data keys created and
  checked in the events' transaction);
- *sealed + cipher*: the above and the library's whole-event cipher (the PostgreSQL default).

The totals are printed with each round's rates and the median round's, which a load spike on a
shared machine moves less (the table takes the median). Figures are printed, not asserted.
``CBCM_BENCH_CASES`` overrides the number of cases.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.application.mechanism import ComplaintMechanism
from services.event_store.config import persistence_env
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
    rounds: list[dict[str, float]] = []
    """Commands per second of each configuration in each round."""
    commands = 0
    for app in apps.values():
        network(app)
        run_cbcm(app, scripts(WARMUP_CASES, seed=1), T0)
    names = list(apps)
    for r, first in enumerate(range(0, count, chunk)):
        cases = scripts(min(chunk, count - first), seed=100 + r)
        start = T0 + timedelta(days=1 + r)
        rates = {}
        # each round starts with another configuration, so that none always runs first
        for name in names[r % len(names) :] + names[: r % len(names)]:
            saves, _ids, spent = run_cbcm(apps[name], cases, start)
            seconds[name] += spent
            rates[name] = len(saves) / spent
        rounds.append(rates)
        commands += len(saves)
    assert commands == count * (1 + len(STAGES))
    sealed = apps["sealed"].data_keys
    assert sealed is not None and sum(sealed.table.counts().values()) > 0

    median = {name: statistics.median(r[name] for r in rounds) for name in names}
    line = "-" * 78
    print()
    print(line)
    print(f"encryption on the write path ({kind}), {count} cases x {1 + len(STAGES)} commands")
    print(f"{len(rounds)} rounds, each configuration in turn, starting with another each round")
    print(
        f"{'':24}{'seconds':>9}{'commands/s':>12}{'vs plain':>10}{'median round':>14}"
        f"{'vs plain':>10}"
    )
    for name, spent in seconds.items():
        rate = commands / spent
        print(
            f"{name:24}{spent:>9.2f}{rate:>12.1f}{spent and seconds['plain'] / spent:>10.2f}"
            f"{median[name]:>14.1f}{median[name] / median['plain']:>10.2f}"
        )
        if name != "plain":
            record(
                Figure(
                    bench="encryption cost (#6)",
                    figure=f"commands/s, {name} (median round)",
                    store=kind,
                    value=median[name],
                    unit="commands/s",
                    baseline=median["plain"],
                    baseline_name="the same application, no sealing, no cipher",
                )
            )
    for r, rates in enumerate(rounds, start=1):
        print(f"  round {r}: " + ", ".join(f"{n} {v:.0f}/s" for n, v in rates.items()))
    print(line)
