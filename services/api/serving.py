"""How ``cbcm api`` serves the app: the uvicorn configuration, in one place, so that tests
run the API exactly as ``cbcm api`` does."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the API on ``host:port``.

    ``proxy_headers=False``: uvicorn would otherwise believe ``X-Forwarded-For`` from
    127.0.0.1 (its default ``FORWARDED_ALLOW_IPS``), so that anything on the API's host, or a
    proxy there passing the header on, could choose the address the public throttles count.
    The app decides instead, from ``CBCM_TRUSTED_PROXIES`` (``services.api.edge``).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=False,
        server_header=False,
        # uvicorn's records go through our handler (JSON lines in JSON mode); no access log:
        # a path could hold what a client should not have put there
        log_level="warning",
        log_config=None,
        access_log=False,
    )
