"""The relay's Prometheus metrics (issue #12), in prometheus_client's default registry.

``cbcm relay`` serves that registry on ``CBCM_METRICS_ADDR`` (``services.runtime.metrics``).
Every value is one the relay already holds: the store's head comes from what its reads return
(and at most one ``max(id)`` query a second while it follows the log), the published position
from the acknowledgements, so watching costs no store query per message.

- ``cbcm_relay_store_head_position``: the last position the relay knows the store to hold.
- ``cbcm_relay_published_position``: every event up to it is in the stream (the mechanism's
  own records, which are never published, count as passed).
- ``cbcm_relay_lag_positions``: head minus published (positions, not events: internal
  records and PostgreSQL's sequence holes count too).
- ``cbcm_relay_leader``: 1 while this process holds the store's leader lock, 0 standing by.
- ``cbcm_relay_publish_seconds``: one publish-and-acknowledge round of a window of messages.
- ``cbcm_relay_stalled``: 1 while the relay is stopped at a message it cannot handle (its
  position and type are in the ``relay.stalled`` log line and the worker's stall record).

Positions and counts only: no label or value carries a case, an agency or any personal data.
"""

from __future__ import annotations

import threading

from prometheus_client import Gauge, Histogram
from prometheus_client.registry import Collector

from services.runtime.metrics import serve_once

STORE_HEAD = Gauge(
    "cbcm_relay_store_head_position",
    "Last event store position the relay knows of (from its reads)",
    registry=None,
)
PUBLISHED = Gauge(
    "cbcm_relay_published_position",
    "Every event up to this event store position is stored in the CBCM_EVENTS stream",
    registry=None,
)
LAG = Gauge(
    "cbcm_relay_lag_positions",
    "Store head position minus published position",
    registry=None,
)
LEADER = Gauge(
    "cbcm_relay_leader",
    "1 while this relay holds the store's leader lock and publishes, 0 while it stands by",
    registry=None,
)
PUBLISH_SECONDS = Histogram(
    "cbcm_relay_publish_seconds",
    "Seconds of one publish round: a window of messages sent and their acknowledgements",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
STALLED = Gauge(
    "cbcm_relay_stalled",
    "1 while the relay is stopped at an event it cannot handle (see the relay.stalled log)",
    registry=None,
)

_ALL: tuple[Collector, ...] = (STORE_HEAD, PUBLISHED, LAG, LEADER, PUBLISH_SECONDS, STALLED)
_lock = threading.Lock()


def register() -> None:
    """Serve the relay's metrics from this process's registry (a process that runs a relay)."""
    serve_once(*_ALL)


_head = 0
_published = 0


def _update_lag() -> None:
    LAG.set(max(0, _head - _published))


def observe_head(position: int) -> None:
    """The store holds at least ``position`` (the head never moves back)."""
    global _head  # noqa: PLW0603 - one relay per process: its figures are the process's
    with _lock:
        if position > _head:
            _head = position
            STORE_HEAD.set(position)
            _update_lag()


def observe_published(position: int) -> None:
    """Everything up to ``position`` is published (or needs no publishing)."""
    global _head, _published  # noqa: PLW0603
    with _lock:
        _published = position
        PUBLISHED.set(position)
        if position > _head:  # what was published was read: the store holds it
            _head = position
            STORE_HEAD.set(position)
        _update_lag()


def reset_positions() -> None:
    """Forget the positions (a new relay term starts from the recorded position)."""
    global _head, _published  # noqa: PLW0603
    with _lock:
        _head = _published = 0
        STORE_HEAD.set(0)
        PUBLISHED.set(0)
        LAG.set(0)


def set_leader(leading: bool) -> None:
    LEADER.set(1 if leading else 0)


def set_stalled(stalled: bool) -> None:
    STALLED.set(1 if stalled else 0)
