"""Stall records where every host sees them (issue #16, ADR 27).

With read models on PostgreSQL, the relay, the projectors and the API instances run on hosts
of their own: a stall recorded as a file of one host's data directory was invisible to an
API on another (``/status`` said "ok" while the relay stood still). The records are now rows
of ``<prefix>_status.worker_stalls`` in the read-model database. Two "hosts" here are two data
directories that share nothing but that database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.projector.storage import read_model_store, status_place_of
from services.runtime.worker_status import (
    clear_stall,
    record_stall,
    stall_of,
    stalls,
    status_dir,
    status_place,
)
from services.settings import Settings


@pytest.fixture
def network(postgres_server_url: str) -> Iterator[str]:
    """A ``CBCM_READ_MODEL_STORE`` of a network of its own (schemas ``<prefix>_...``)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in postgres_server_url else "?"
    yield f"{postgres_server_url}{sep}schema={prefix}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {prefix}_status CASCADE")


def host(tmp_path: Path, name: str, read_models: str) -> Settings:
    data_dir = tmp_path / name
    data_dir.mkdir()
    return Settings(
        data_dir=data_dir,
        event_store=f"sqlite:///{data_dir / 'events.sqlite3'}",
        read_model_store=read_models,
    )


def test_a_stall_recorded_on_one_host_is_seen_and_cleared_from_another(
    network: str, postgres_server_url: str, tmp_path: Path
) -> None:
    relay_host = host(tmp_path, "relay-host", network)
    api_host = host(tmp_path, "api-host", network)
    # given the relay's host records its stall
    record_stall(
        status_place(relay_host),
        "relay",
        position=41,
        message_type="cbcm.case.Case.Received",
        error="ValueError",
    )
    # then no file is written on its host, and the API's host sees the stall: in the
    # records, as a read model's "stall before" place, and in /status (503, named)
    assert not status_dir(relay_host.data_dir).exists()
    seen = stall_of(status_place(api_host), "relay")
    assert seen is not None and (seen.position, seen.error) == (41, "ValueError")
    inbox = read_model_store(api_host, "inbox")
    assert stall_of(status_place_of(inbox), "relay") == seen
    client = TestClient(create_app(api_host))
    status = client.get("/status")
    assert status.status_code == 503
    assert [(s["worker"], s["position"]) for s in status.json()["stalls"]] == [("relay", 41)]
    # and another network sharing the database does not see it
    sep = "&" if "?" in postgres_server_url else "?"
    other = host(tmp_path, "other", f"{postgres_server_url}{sep}schema=o{uuid.uuid4().hex[:9]}")
    assert stalls(status_place(other)) == []
    # when the relay, restarted with a fix on a third host, goes past it
    fixed_host = host(tmp_path, "fixed-host", network)
    assert clear_stall(status_place(fixed_host), "relay")
    # then every host sees it cleared
    assert stalls(status_place(api_host)) == []
    assert client.get("/status").json()["stalls"] == []


def test_embedded_sqlite_keeps_its_records_as_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    place = status_place(settings)
    assert place == settings.data_dir
    record_stall(place, "project-inbox", position=3, message_type="x", error="KeyError")
    assert (status_dir(settings.data_dir) / "project-inbox.json").exists()
    assert [s.worker for s in stalls(place)] == ["project-inbox"]
