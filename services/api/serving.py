"""How ``cbcm api`` serves the app: the uvicorn configuration, in one place, so that tests
run the API exactly as ``cbcm api`` does."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger()

HEADER_TIMEOUT_SECONDS = 10.0
"""How long a client has to send a request's line and headers, from the connection (or the
end of the previous answer on a kept-alive one) to their last byte."""


class HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on a request's head (slowloris).

    uvicorn times out a kept-alive connection only while it is idle: a client that sends a
    request's headers a byte at a time, or never finishes them, holds its connection (and a
    file descriptor) for as long as it likes, and a few thousand such clients hold them all.
    Here each connection must deliver a complete request head within ``header_timeout``
    seconds of opening, or of its previous answer, or it is closed without an answer."""

    header_timeout = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            log.info("api.request_head_too_slow", seconds=self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a whole request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_config(
    app: ASGIApp, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT_SECONDS
) -> uvicorn.Config:
    """uvicorn's configuration for the API on ``host:port``.

    ``proxy_headers=False``: uvicorn would otherwise believe ``X-Forwarded-For`` from
    127.0.0.1 (its default ``FORWARDED_ALLOW_IPS``), so that anything on the API's host, or a
    proxy there passing the header on, could choose the address the public throttles count.
    The app decides instead, from ``CBCM_TRUSTED_PROXIES`` (``services.api.edge``).

    Slow clients (ADR 27): a request's head within ``header_timeout`` seconds
    (``HeaderDeadline``); an idle kept-alive connection closed after uvicorn's 5 s; bodies
    are bounded in size by ``CBCM_MAX_BODY_BYTES`` (``services.api.edge.BodyLimit``).
    """
    protocol = type("HeaderDeadlineProtocol", (HeaderDeadline,), {"header_timeout": header_timeout})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        proxy_headers=False,
        server_header=False,
        # uvicorn's records go through our handler (JSON lines in JSON mode); no access log:
        # a path could hold what a client should not have put there
        log_level="warning",
        log_config=None,
        access_log=False,
    )
