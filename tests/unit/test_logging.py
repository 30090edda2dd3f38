"""In JSON mode every line on stderr is one JSON object (issue #12): cbcm's own events and the
libraries' stdlib logging alike, each with ``event`` (dotted), ``service`` and ``level``."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from services.runtime import logging as cbcm_logging
from services.runtime.logging import configure_logging, json_mode, library_event_name

EVENT_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put the test process's logging back as it was (pytest's own handlers included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = structlog.get_config()
    hooks = threading.excepthook, sys.unraisablehook
    was_json = cbcm_logging._json_mode
    yield
    cbcm_logging._json_mode = was_json  # or later in-process CLI runs think they are services
    threading.excepthook, sys.unraisablehook = hooks
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


def lines(err: str) -> list[dict[str, Any]]:
    parsed = []
    for line in err.splitlines():
        assert line.startswith("{"), line
        parsed.append(json.loads(line))
    return parsed


def test_every_line_is_json_with_event_service_and_level(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "relay")
    assert json_mode()
    log = structlog.get_logger()
    log.info("relay.resuming", after_position=3)
    log.debug("relay.hidden")  # below INFO: not written
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("nats.aio.client").error("nats: encountered error\nsecond line")
    logging.getLogger("psycopg.pool").error("error connecting\tin pool")
    logging.getLogger("uvicorn.access").info("GET / 200")  # access lines are not wanted
    logging.getLogger("eventsourcing").warning("library says something")
    thread = threading.Thread(target=lambda: logging.getLogger("asyncio").error("in a thread"))
    thread.start()
    thread.join()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("relay.failed")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    out = capsys.readouterr()
    assert out.out == ""
    entries = lines(out.err)
    assert [e["event"] for e in entries] == [
        "relay.resuming",
        "uvicorn.error",
        "nats.aio.client",
        "psycopg.pool",
        "eventsourcing.log",
        "asyncio.log",
        "py.warnings",
        "relay.failed",
        "asyncio.log",
    ]
    for entry in entries:
        assert entry["service"] == "relay"
        assert entry["level"] in {"info", "warning", "error"}
        assert EVENT_NAME.match(entry["event"]), entry
        assert entry["timestamp"].endswith("Z")
    assert entries[0]["after_position"] == 3
    assert entries[1]["message"] == "Invalid HTTP request received."
    assert entries[1]["level"] == "warning"
    assert entries[2]["message"] == "nats: encountered error second line"
    assert "DeprecationWarning: deprecated thing" in entries[6]["message"]
    assert "ValueError: boom" in entries[7]["exception"]
    assert "ValueError: boom" in entries[8]["exception"]


def test_asyncio_and_nats_records_inside_a_running_loop_are_json(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "project-inbox")

    async def main() -> None:
        logging.getLogger("nats.aio.client").warning("nats: reconnecting")
        structlog.get_logger().info("projector.consuming", position=0)

    asyncio.run(main())
    entries = lines(capsys.readouterr().err)
    assert [(e["event"], e["service"]) for e in entries] == [
        ("nats.aio.client", "project-inbox"),
        ("projector.consuming", "project-inbox"),
    ]


def test_console_mode_stays_readable(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("console", "api")
    assert not json_mode()
    structlog.get_logger().info("api.started", port=8080)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    err = capsys.readouterr().err
    assert "api.started" in err
    assert "Invalid HTTP request received." in err
    assert not err.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("logger", "event"),
    [
        ("uvicorn.error", "uvicorn.error"),
        ("asyncio", "asyncio.log"),
        ("py.warnings", "py.warnings"),
        ("Some-Lib.Sub", "some_lib.sub"),
        ("", "root.log"),
    ],
)
def test_library_events_are_named_in_the_same_style(logger: str, event: str) -> None:
    assert library_event_name(logger) == event
    assert EVENT_NAME.match(event)


def test_a_crashed_thread_and_an_ignored_exception_are_json_lines_too(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "audit-witness")

    def crash() -> None:
        raise RuntimeError("thread broke")

    thread = threading.Thread(target=crash, name="worker-1")
    thread.start()
    thread.join()

    class Leaky:
        def __del__(self) -> None:
            raise ValueError("in del")

    leaky = Leaky()
    del leaky
    entries = lines(capsys.readouterr().err)
    assert [(e["event"], e["service"], e["level"]) for e in entries] == [
        ("python.thread_crashed", "audit-witness", "error"),
        ("python.exception_ignored", "audit-witness", "error"),
    ]
    assert entries[0]["thread"] == "worker-1"
    assert "RuntimeError: thread broke" in entries[0]["exception"]
    assert entries[1]["object_type"] == "function"
    assert "ValueError: in del" in entries[1]["exception"]
