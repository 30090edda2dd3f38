"""Structured logs (structlog), JSON or console by ``CBCM_LOG_FORMAT``.

Log events name what happened and carry ids, codes, counts and positions, never personal data.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(log_format: str, service: str) -> None:
    """Send structured log lines to stderr, each tagged with the emitting service."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
