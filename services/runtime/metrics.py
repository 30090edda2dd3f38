"""Each worker's Prometheus metrics on an address of its own (``CBCM_METRICS_ADDR``).

prometheus_client's default registry already carries the process, platform and GC
collectors; a worker adds its own metrics to it at import and serves it here.
``cbcm serve`` gives each child a port and lists them in its start-up log.
"""

from __future__ import annotations

import threading

import prometheus_client
from prometheus_client.registry import Collector


class MetricsAddressError(ValueError):
    """CBCM_METRICS_ADDR cannot be served (not HOST:PORT, or the port is taken)."""


def split_addr(addr: str, setting: str = "CBCM_METRICS_ADDR") -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsAddressError(f"{setting} {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def serve_metrics(addr: str | None, setting: str = "CBCM_METRICS_ADDR") -> tuple[str, int] | None:
    """Serve the default registry on ``addr`` in a daemon thread; the address bound, or
    ``None`` when ``addr`` is unset. ``setting`` names the address in errors."""
    if not addr:
        return None
    host, port = split_addr(addr, setting)
    try:
        server, _thread = prometheus_client.start_http_server(port, addr=host)
    except OSError as e:
        raise MetricsAddressError(
            f"{setting}: cannot serve metrics on {addr}: {e.strerror or e}"
        ) from e
    bound = server.server_address
    return str(bound[0]), int(bound[1])


_served: set[int] = set()
_served_lock = threading.Lock()


def serve_once(*collectors: Collector) -> None:
    """Add ``collectors`` to the default registry, once per process. A worker's metrics are
    created unregistered (every cbcm process imports every worker's module) and served only
    by the process that runs that worker: a projector serving ``cbcm_relay_leader 0`` would
    set off an alert meant for the relay."""
    with _served_lock:
        for collector in collectors:
            if id(collector) not in _served:
                prometheus_client.REGISTRY.register(collector)
                _served.add(id(collector))
