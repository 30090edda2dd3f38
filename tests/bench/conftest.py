"""Bench fixtures: a second fresh store of the same kind as ``store_url``, for the baseline."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import init_store


@pytest.fixture
def baseline_store_url(
    store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, empty store of the same kind as ``store_url`` (another SQLite file in the
    same directory, or another schema on the same PostgreSQL server)."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'baseline.sqlite3'}"
        return
    server_url = str(request.getfixturevalue("postgres_server_url"))
    schema = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server_url else "?"
    yield init_store(f"{server_url}{sep}schema={schema}")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def extra_schema(request: pytest.FixtureRequest) -> str:
    """One more fresh schema on the test PostgreSQL server, dropped at the test's end."""
    server_url = str(request.getfixturevalue("postgres_server_url"))
    schema = f"c_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    request.addfinalizer(drop)
    sep = "&" if "?" in server_url else "?"
    return init_store(f"{server_url}{sep}schema={schema}")
