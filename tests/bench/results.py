"""Figures of the benchmarks, for ``cbcm bench``'s table (issue #7).

Each benchmark keeps its own printout and also records its main figures here: one JSON object
per line, appended to the file named by ``CBCM_BENCH_RESULTS`` (nothing is written when it is
unset, as under a plain ``make bench``). A figure carries the baseline measured in the same
run, when it has one, and the issue's target, when there is one: on the ratio to the baseline
(``ratio >= 0.7``) or on the value itself (``value < 250``).

``services/cli/bench.py`` reads the file back; the two agree on the keys below and nothing else.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path
from typing import Literal

RESULTS_ENV = "CBCM_BENCH_RESULTS"


@dataclass(frozen=True)
class Target:
    """A bound the issue sets: ``on`` the ratio or the value, ``op`` one of ``>=``, ``<``."""

    on: Literal["ratio", "value"]
    op: Literal[">=", "<"]
    bound: float


@dataclass(frozen=True)
class Figure:
    bench: str
    """Which benchmark (and issue) measured it."""
    figure: str
    """What was measured, in a few words."""
    store: str
    """``sqlite``, ``postgres`` or ``-``."""
    value: float
    unit: str
    _: KW_ONLY
    baseline: float | None = None
    baseline_name: str = ""
    """What the baseline is, in a few words (measured in the same run)."""
    target: Target | None = None
    better: Literal["higher", "lower"] = "higher"
    """Which way is better, for the ratio: value / baseline, or baseline / value."""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline or not self.value:
            return None
        return self.value / self.baseline if self.better == "higher" else self.baseline / self.value


def record(figure: Figure) -> None:
    """Append ``figure`` to the results file, if one is named."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    line = {**asdict(figure), "ratio": figure.ratio, "recorded_at": time.time()}
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def store_kind(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


def quick() -> bool:
    """``cbcm bench --quick``: fewer cases, shorter phases."""
    return os.environ.get("CBCM_BENCH_QUICK") == "1"
