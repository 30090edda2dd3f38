"""Structured logs (structlog), JSON or console by ``CBCM_LOG_FORMAT``.

Log events name what happened and carry ids, codes, counts and positions, never personal data.
Event names are ``component.event_name``: lowercase words, dotted (``serve.service_started``,
``relay.leader``, ``audit.checkpoint_published``).

Everything a process logs is rendered by the same processors and written to stderr, one
write per line: cbcm's own structlog events directly, and, through one handler on the root
logger of the standard library (``structlog.stdlib.ProcessorFormatter``), the libraries'
stdlib logging (uvicorn, nats-py, psycopg, eventsourcing, asyncio), Python's warnings, and
(in JSON mode) a thread's uncaught exception or an exception Python ignored.
So in JSON mode every line on stderr is one JSON object with ``event``, ``level``,
``service`` and ``timestamp`` (a library's record is named after its logger, e.g.
``uvicorn.error``, its text in ``message``), and each line is written in one piece (lines
from processes sharing a stderr do not interleave).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LIBRARY_LEVELS: dict[str, int] = {
    # chatty at INFO with nothing an operator acts on; their warnings and errors still show
    "uvicorn.access": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "asyncio": logging.WARNING,
}

_json_mode = False


def json_mode() -> bool:
    """Whether this process logs JSON lines (``configure_logging`` with ``json``)."""
    return _json_mode


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (a test may have replaced it), one write per
    line."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            stream = sys.stderr
            stream.write(text)
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # logging must never take the process down
            self.handleError(record)


def _stderr_logger(*_args: object) -> structlog.WriteLogger:
    """Writes a rendered line and its newline in one write to whatever ``sys.stderr`` is now."""
    return structlog.WriteLogger(sys.stderr)


def _tag_service(service: str) -> Processor:
    def tag(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return tag


def library_event_name(logger_name: str) -> str:
    """The event name of a library's record: its logger's name, in the same dotted style
    (``uvicorn.error``, ``nats.aio.client``, ``asyncio.log``, ``py.warnings``)."""
    name = re.sub(r"[^a-z0-9_.]+", "_", logger_name.lower()).strip("._") or "root"
    return name if "." in name else f"{name}.log"


def _library_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """A library's record: ``event`` named after its logger, its text (one line) as
    ``message``."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict["message"] = " ".join(str(event_dict.get("event", "")).split())[:1000]
        event_dict["event"] = library_event_name(record.name)
    return event_dict


def configure_logging(log_format: str, service: str) -> None:
    """Send structured log lines to stderr, each tagged with the emitting service; route
    the standard library's logging (and warnings) through the same processors."""
    global _json_mode  # noqa: PLW0603 - one process, one logging configuration
    _json_mode = log_format == "json"
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if _json_mode
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _tag_service(service),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # cbcm's own events straight to stderr (the stdlib detour costs ~2.5x per line)
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _library_event],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if _json_mode else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers (if it configured any) would print plain text: use ours
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True
    logging.captureWarnings(True)
    if _json_mode:
        # what Python itself would print as plain text: a thread's uncaught exception, an
        # exception ignored in __del__ or a callback
        threading.excepthook = _thread_crashed
        sys.unraisablehook = _unraisable
    else:
        threading.excepthook = threading.__excepthook__
        sys.unraisablehook = sys.__unraisablehook__
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _thread_crashed(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    structlog.get_logger().error(
        "python.thread_crashed",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    structlog.get_logger().error(
        "python.exception_ignored",
        message=unraisable.err_msg or "Exception ignored",
        object_type=type(unraisable.object).__name__,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )
