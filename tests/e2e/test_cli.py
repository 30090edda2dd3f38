"""The installed ``cbcm`` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from domain.case import Case
from services.bootstrap import complaint_mechanism
from services.settings import Settings

CBCM = Path(sys.executable).parent / "cbcm"


def cbcm(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return subprocess.run(
        [str(CBCM), *args],
        env={**clean, "CBCM_DATA_DIR": str(data_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _cases_in(data_dir: Path) -> int:
    app = complaint_mechanism(Settings(data_dir=data_dir, event_store=None))
    try:
        topic = get_topic(Case.Received)
        return len(app.recorder.select_notifications(1, 1_000_000, topics=[topic]))
    finally:
        app.close()


def test_demo_fills_the_event_store_with_the_cases_asked_for(tmp_path: Path) -> None:
    done = cbcm(tmp_path, "demo", "--cases", "20", "--seed", "3")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "events.sqlite3").is_file()
    assert _cases_in(tmp_path) == 20
    assert "events written" in done.stdout
    assert str(tmp_path / "events.sqlite3") in done.stdout


def test_demo_run_again_adds_cases_to_the_existing_network(tmp_path: Path) -> None:
    cbcm(tmp_path, "demo", "--cases", "5", "--seed", "1")

    again = cbcm(tmp_path, "demo", "--cases", "5", "--seed", "2")

    assert again.returncode == 0, again.stderr
    assert "(reused)" in again.stdout
    assert _cases_in(tmp_path) == 10


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_demo_refuses_a_case_count_that_is_not_a_natural_number(tmp_path: Path, value: str) -> None:
    done = cbcm(tmp_path, "demo", "--cases", value)

    assert done.returncode == 2
    assert "Invalid value for '--cases'" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unsupported_event_store_url_is_one_clear_line(tmp_path: Path) -> None:
    done = cbcm(tmp_path, "demo", "--cases", "1", env={"CBCM_EVENT_STORE": "mysql://x"})

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "CBCM_EVENT_STORE" in done.stderr
    assert "'mysql' is not supported" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_postgresql_is_one_clear_line(tmp_path: Path) -> None:
    done = cbcm(
        tmp_path,
        "demo",
        "--cases",
        "1",
        env={"CBCM_EVENT_STORE": "postgresql://postgres@127.0.0.1:1/nope"},
    )

    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot open the event store (PostgreSQL postgres@127.0.0.1:1/nope" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rebuild_without_nats_says_nats_is_unreachable_and_fails(tmp_path: Path) -> None:
    # before: nats-py retried the refused connection forever (a one-shot client with
    # max_reconnect_attempts=0 never gives its server up), and the command never ended
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed below: nothing listens there
    url = f"nats://127.0.0.1:{port}"

    done = cbcm(tmp_path, "projections", "rebuild", "stats", env={"CBCM_NATS_URL": url}, timeout=60)

    assert done.returncode == 3
    assert f"cannot reach NATS at {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_configuration_is_named_in_one_line(tmp_path: Path) -> None:
    done = cbcm(tmp_path, "demo", "--cases", "1", env={"CBCM_LOG_FORMAT": "xml"})

    assert done.returncode == 2
    assert "CBCM_LOG_FORMAT" in done.stderr
    assert "Traceback" not in done.stderr


def test_contracts_schema_writes_one_json_schema_file_per_message(tmp_path: Path) -> None:
    out = tmp_path / "schemas"

    done = cbcm(tmp_path, "contracts", "schema", "--out", str(out))

    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.splitlines()]
    assert written
    for path in written:
        assert path.parent == out
        assert "$schema" in json.loads(path.read_text())


def test_contracts_schema_prints_every_schema_without_out(tmp_path: Path) -> None:
    done = cbcm(tmp_path, "contracts", "schema")

    assert done.returncode == 0, done.stderr
    schemas = json.loads(done.stdout)
    assert schemas
    assert all("$schema" in schema for schema in schemas.values())


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_service_failing_for_a_known_cause_says_it_in_one_line(
    tmp_path: Path, log_format: str
) -> None:
    # a relay whose named key ring does not exist: before, a 77-line KeyRingError traceback
    done = cbcm(
        tmp_path,
        "relay",
        env={
            "CBCM_KEK_DIR": str(tmp_path / "no-such-ring"),
            "CBCM_NATS_URL": "nats://127.0.0.1:1",  # never reached
            "CBCM_LOG_FORMAT": log_format,
        },
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    cause = f"no active key-encryption key in {tmp_path / 'no-such-ring'}"
    if log_format == "console":
        assert line.startswith("cbcm: error: the key-encryption keys of personal data: ")
        assert cause in line
    else:
        entry = json.loads(line)
        assert (entry["event"], entry["service"], entry["exit_code"]) == ("cli.failed", "relay", 2)
        assert cause in entry["error"]


def test_a_bad_setting_of_a_service_in_json_mode_is_one_json_line(tmp_path: Path) -> None:
    # before: a plain 'cbcm: error: ...' line among the JSON an aggregator expects
    done = cbcm(tmp_path, "relay", env={"CBCM_LOG_FORMAT": "json", "CBCM_READ_WAIT_SECONDS": "abc"})
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "cli.failed" and entry["exit_code"] == 2
    assert "CBCM_READ_WAIT_SECONDS" in entry["error"]
