"""The deliverer's Prometheus metrics, in the default registry once it runs (``register``).

- ``cbcm_webhook_attempts_total{agency,outcome}``: delivery attempts, ``delivered`` or
  ``failed``;
- ``cbcm_webhook_attempt_seconds``: one attempt, request to answer (or failure);
- ``cbcm_webhook_queued``: deliveries waiting in the outbox (all endpoints);
- ``cbcm_webhook_endpoints_enabled``: endpoints being sent to;
- ``cbcm_webhook_endpoints_disabled_total{agency}``: endpoints disabled for failing;
- ``cbcm_webhook_stream_sequence``: the last ``CBCM_EVENTS`` sequence fanned out.

Agency codes and counts only: no URL, no case, nothing from an event's ``data``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.metrics import serve_once

ATTEMPTS = Counter(
    "cbcm_webhook_attempts",
    "Webhook delivery attempts, by agency and outcome (delivered, failed)",
    ["agency", "outcome"],
    registry=None,
)
SECONDS = Histogram(
    "cbcm_webhook_attempt_seconds",
    "Seconds one webhook delivery attempt took",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=None,
)
QUEUED = Gauge(
    "cbcm_webhook_queued",
    "Webhook deliveries waiting in the outbox (since this process started counting)",
    registry=None,
)
ENDPOINTS_ENABLED = Gauge(
    "cbcm_webhook_endpoints_enabled", "Webhook endpoints being delivered to", registry=None
)
DISABLED = Counter(
    "cbcm_webhook_endpoints_disabled",
    "Webhook endpoints disabled for failing every delivery too long, by agency",
    ["agency"],
    registry=None,
)
STREAM_SEQUENCE = Gauge(
    "cbcm_webhook_stream_sequence",
    "Last CBCM_EVENTS stream sequence the webhook deliverer fanned out",
    registry=None,
)


def register() -> None:
    """Serve these from this process's default registry (once)."""
    serve_once(ATTEMPTS, SECONDS, QUEUED, ENDPOINTS_ENABLED, DISABLED, STREAM_SEQUENCE)
