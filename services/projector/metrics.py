"""Each projector's Prometheus metrics (issue #12), in prometheus_client's default registry.

``cbcm project NAME`` serves that registry on ``CBCM_METRICS_ADDR``
(``services.runtime.metrics``). Every metric is labelled ``projection`` (the read model's
name), so one process running several projectors (tests, a bench) keeps them apart.

- ``cbcm_projector_applied_position``: the last store position the read model committed.
- ``cbcm_projector_batch_seconds``: one fetched batch applied, committed and acknowledged.
- ``cbcm_projector_messages_applied_total``: messages applied (redeliveries skipped are not).
- ``cbcm_projector_stalled``: 1 while the projector is stopped at a message it cannot apply
  (its position and type are in the ``projector.stalled`` log line and the worker's stall
  record, ``services.runtime.worker_status``), 0 otherwise.

They are updated once per batch, from figures the runner already holds: no query, no clock
read per message. Positions and counts only: no label or value names a case, an agency or
anything a person wrote.

They join the default registry when a projector starts (``ProjectorMetrics``), not at
import: every cbcm process imports this module (the API, the relay), and should not serve
metric families it never fills.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from services.runtime.metrics import serve_once

APPLIED_POSITION = Gauge(
    "cbcm_projector_applied_position",
    "Last event store position the read model committed",
    ["projection"],
    registry=None,
)
BATCH_SECONDS = Histogram(
    "cbcm_projector_batch_seconds",
    "Seconds to apply, commit and acknowledge one fetched batch",
    ["projection"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
MESSAGES_APPLIED = Counter(
    "cbcm_projector_messages_applied",
    "Messages applied to the read model (redeliveries skipped are not counted)",
    ["projection"],
    registry=None,
)
STALLED = Gauge(
    "cbcm_projector_stalled",
    "1 while the projector is stopped at a message it cannot apply (see projector.stalled)",
    ["projection"],
    registry=None,
)


_ALL: tuple[Collector, ...] = (APPLIED_POSITION, BATCH_SECONDS, MESSAGES_APPLIED, STALLED)


def register() -> None:
    """Serve the projectors' metrics from this process's default registry (once)."""
    serve_once(*_ALL)


class ProjectorMetrics:
    """One projection's children of the metrics above, looked up once."""

    def __init__(self, projection: str) -> None:
        register()
        self._position = APPLIED_POSITION.labels(projection=projection)
        self._seconds = BATCH_SECONDS.labels(projection=projection)
        self._applied = MESSAGES_APPLIED.labels(projection=projection)
        self._stalled = STALLED.labels(projection=projection)

    def position(self, position: int) -> None:
        self._position.set(position)

    def batch(self, seconds: float, applied: int, position: int) -> None:
        """One batch handled: how long it took, how many it applied, where it ended."""
        self._seconds.observe(seconds)
        if applied:
            self._applied.inc(applied)
        self._position.set(position)

    def stalled(self, stalled: bool) -> None:
        self._stalled.set(1 if stalled else 0)
