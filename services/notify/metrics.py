"""The notifier's Prometheus metrics (``cbcm_notify_*``), in the default registry once it
runs (``register``): created unregistered, as every worker's are, so that no other process
that imports the notifier (``cbcm serve`` imports it
before it forks each of its children)
serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.metrics import serve_once

SENT = Counter(
    "cbcm_notify_sent", "Notices accepted by a channel", ["kind", "channel"], registry=None
)
FAILED = Counter(
    "cbcm_notify_send_failures",
    "Attempts a channel refused or did not answer",
    ["channel"],
    registry=None,
)
GIVEN_UP = Counter(
    "cbcm_notify_given_up", "Notices recorded as undelivered", ["reason"], registry=None
)
PENDING = Gauge(
    "cbcm_notify_pending", "Notices waiting to be sent (pending or in flight)", registry=None
)
LATENCY = Histogram(
    "cbcm_notify_latency_seconds",
    "From the event's time to the channel's acceptance",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
    registry=None,
)


def register() -> None:
    """Serve these from this process's default registry (once)."""
    serve_once(SENT, FAILED, GIVEN_UP, PENDING, LATENCY)
