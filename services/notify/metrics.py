"""The notifier's Prometheus metrics (``cbcm_notify_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter("cbcm_notify_sent", "Notices accepted by a channel", ["kind", "channel"])
FAILED = Counter(
    "cbcm_notify_send_failures", "Attempts a channel refused or did not answer", ["channel"]
)
GIVEN_UP = Counter("cbcm_notify_given_up", "Notices recorded as undelivered", ["reason"])
PENDING = Gauge("cbcm_notify_pending", "Notices waiting to be sent (pending or in flight)")
LATENCY = Histogram(
    "cbcm_notify_latency_seconds",
    "From the event's time to the channel's acceptance",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
