"""Prometheus metrics of the API: requests by route and status, latency, receipt look-ups,
and each read model's applied position. Labels are route templates, never raw paths (a path
may hold a receipt code)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _ReadModelPositions(Collector):
    def __init__(self, positions: Callable[[], dict[str, int | None]]) -> None:
        self._positions = positions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "cbcm_read_model_position",
            "Last event-store position applied by each read model.",
            labels=["read_model"],
        )
        for name, position in self._positions().items():
            if position is not None:
                gauge.add_metric([name], position)
        yield gauge


class ApiMetrics:
    """One registry per API instance (tests build many apps in one process)."""

    def __init__(
        self,
        positions: Callable[[], dict[str, int | None]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "cbcm_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cbcm_http_request_seconds",
            "Time to answer, by route template.",
            ["route"],
            registry=self.registry,
        )
        self.receipt_lookups = Counter(
            "cbcm_receipt_lookups",
            "Public receipt look-ups, by result (found, not_found, throttled).",
            ["result"],
            registry=self.registry,
        )
        self.intake = Counter(
            "cbcm_intake_submissions",
            "Submissions from other tools (kobo, rapidpro, hotline), by outcome (recorded, "
            "replayed, refused) and, when refused, a fixed reason code",
            ["tool", "outcome", "reason"],
            registry=self.registry,
        )
        self.receipt_lookups_held = Counter(
            "cbcm_receipt_lookups_held",
            "Receipt look-ups held before verifying, their locator having had failures.",
            registry=self.registry,
        )
        self.registry.register(_ReadModelPositions(positions))


class MetricsMiddleware:
    """Counts every HTTP answer under its route template."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ApiMetrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics = self.metrics()
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            metrics.requests.labels(method, template, str(status)).inc()
            metrics.latency.labels(template).observe(time.perf_counter() - started)
