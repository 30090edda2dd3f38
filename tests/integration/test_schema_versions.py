"""The event store's schema under version (issue #17, ADR 21).

- Version 1 is exactly the schema the release before versions made at start-up: a store made
  by the recorders' own DDL and one made by ``cbcm db init`` have the same catalogue.
- A store written by that release (``tests/fixtures/release_a86d587``, made by its code: see
  ``make_fixture.py`` there) is refused at start until ``cbcm db migrate``, then reads as it
  did, erasure included, and ``cbcm audit verify`` finds it intact.
- A store behind, empty or ahead of the code is refused at start with what to run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from typer.testing import CliRunner

from domain.personal_data import ERASED
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.event_store import schema
from services.event_store.config import persistence_env, store_location
from services.event_store.schema import SchemaVersionError
from services.settings import Settings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release_a86d587"
FIXTURE_SCHEMA = "cbcm_release_fixture"


def fresh_schema(server: str) -> tuple[str, str]:
    name = f"v_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name, f"{server}{'&' if '?' in server else '?'}schema={name}"


@pytest.fixture
def schemas(postgres_server_url: str) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def catalogue_postgres(server: str, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a schema holds that DDL decides, with the schema's name taken out."""
    queries = {
        "columns": """SELECT table_name, column_name, data_type, udt_name, is_nullable,
                      column_default, ordinal_position FROM information_schema.columns
                      WHERE table_schema = %(s)s""",
        "relations": """SELECT c.relname, c.relkind, c.reloptions FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s""",
        "constraints": """SELECT conrelid::regclass::text, conname, contype,
                          pg_get_constraintdef(c.oid) FROM pg_constraint c
                          JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %(s)s""",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s",
        "triggers": """SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                       JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n
                       ON n.oid = c.relnamespace WHERE n.nspname = %(s)s AND NOT t.tgisinternal""",
        "functions": """SELECT p.proname, pg_get_function_arguments(p.oid), p.prosrc FROM pg_proc p
                        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s""",
        "types": """SELECT t.typname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnum
                    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                    JOIN pg_class c ON c.oid = t.typrelid JOIN pg_attribute a ON a.attrelid = c.oid
                    WHERE n.nspname = %(s)s AND c.relkind = 'c'""",
    }
    found = {}
    with psycopg.connect(server) as conn:
        for kind, query in queries.items():
            rows = conn.execute(query, {"s": name}).fetchall()
            found[kind] = sorted(
                tuple(re.sub(rf'"?{name}"?\.', "S.", str(v)) for v in row)
                for row in rows
                if "schema_version" not in str(row)
            )
    return found


def catalogue_sqlite(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return sorted(
        (t, n, re.sub(r"\s+", " ", s or "")) for t, n, s in rows if "schema_version" not in n
    )


def by_recorders(env: dict[str, str]) -> None:
    """What the release before versions ran at every start: the recorders' own DDL."""
    env = {**env, "CREATE_TABLE": "y"}
    factory = InfrastructureFactory.construct(Environment(ComplaintMechanism.name, env))
    factory.application_recorder()
    factory.tracking_recorder()
    factory.close()


# --------------------------------------------------------------------------- version 1


def test_version_1_is_the_schema_the_recorders_made_on_postgres(
    postgres_server_url: str, schemas: list[str], tmp_path: Path
) -> None:
    # given one store made as the previous release made it, one by `cbcm db init`
    old, old_url = fresh_schema(postgres_server_url)
    new, new_url = fresh_schema(postgres_server_url)
    schemas += [old, new]
    by_recorders(persistence_env(Settings(data_dir=tmp_path, event_store=old_url)))
    done = CliRunner().invoke(
        cli, ["db", "init"], env={"CBCM_EVENT_STORE": new_url, "CBCM_DATA_DIR": str(tmp_path)}
    )
    assert done.exit_code == 0, done.output
    # then they hold the same tables, columns, types, indexes, constraints, triggers and
    # functions, with the same storage options
    old_catalogue = catalogue_postgres(postgres_server_url, old)
    assert old_catalogue == catalogue_postgres(postgres_server_url, new)
    assert len(old_catalogue["triggers"]) >= 12 and len(old_catalogue["functions"]) >= 5
    # and the relay's tracking table has the library's migration mark in both
    with psycopg.connect(postgres_server_url) as conn:
        for name in (old, new):
            row = conn.execute(f"SELECT notification_id FROM {name}.cbcm_tracking").fetchone()
            assert row == (1,)


def test_version_1_is_the_schema_the_recorders_made_on_sqlite(tmp_path: Path) -> None:
    old, new = tmp_path / "old.sqlite3", tmp_path / "new.sqlite3"
    by_recorders(persistence_env(Settings(data_dir=tmp_path, event_store=f"sqlite:///{old}")))
    schema.migrate(store_location(Settings(data_dir=tmp_path, event_store=f"sqlite:///{new}")))
    assert catalogue_sqlite(old) == catalogue_sqlite(new)
    assert len(catalogue_sqlite(new)) >= 20


# ---------------------------------------------------------------- the previous release


def fixture_settings(data_dir: Path, url: str | None) -> Settings:
    keys = data_dir / "keys"
    shutil.copytree(FIXTURE / "keys", keys)
    for key in keys.rglob("*"):
        if key.is_file():
            key.chmod(0o600)
    return Settings(
        data_dir=data_dir,
        event_store=url,
        kek_dir=keys / "kek",
        writer_key_file=keys / "writer.key",
        event_cipher_key_file=keys / "event-cipher.key",
        kms_hook=None,
    )


def cbcm(settings: Settings, *argv: str) -> Any:
    env = {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": settings.event_store or "",
        "CBCM_KEK_DIR": str(settings.kek_dir),
        "CBCM_WRITER_KEY_FILE": str(settings.writer_key_file),
        "CBCM_EVENT_CIPHER_KEY_FILE": str(settings.event_cipher_key_file),
    }
    return CliRunner().invoke(cli, list(argv), env=env)


def reads_as_written(settings: Settings, cases: list[str]) -> None:
    """The first case's personal data erased, the others' readable; a new write works."""
    app = complaint_mechanism(settings)
    try:
        erased, *kept = (app.get_case(UUID(c)) for c in cases)
        assert erased.narrative == ERASED
        for i, case in enumerate(kept, start=1):
            assert case.narrative == f"RELEASE-FIXTURE narrative {i}"
            assert case.complainant is not None
            assert case.complainant.name == f"RELEASE-FIXTURE name {i}"
    finally:
        app.close()


def test_a_postgres_store_of_the_previous_release_is_refused_then_migrated_and_intact(
    postgres_server_url: str, schemas: list[str], tmp_path: Path
) -> None:
    # given the dump of a store the previous release wrote, restored into a schema of its own
    name = f"p_{uuid.uuid4().hex[:12]}"
    schemas.append(name)
    dump = (FIXTURE / "postgres.sql").read_text().replace(FIXTURE_SCHEMA, name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(dump.encode())
    before = catalogue_postgres(postgres_server_url, name)
    url = f"{postgres_server_url}{'&' if '?' in postgres_server_url else '?'}schema={name}"
    settings = fixture_settings(tmp_path / "data", url)
    cases = json.loads((FIXTURE / "cases.json").read_text())["postgres"]

    # when this cbcm starts on it: refused, with what to run
    with pytest.raises(SchemaVersionError, match=r"before schema versions.*cbcm db migrate"):
        complaint_mechanism(settings)
    refused = cbcm(settings, "audit", "verify", "--no-checkpoints")
    assert refused.exit_code == 2
    assert "run `cbcm db migrate`" in str(refused.exception) + refused.output
    status = cbcm(settings, "db", "status")
    assert status.exit_code == 2 and "made before schema versions" in status.output

    # when the owner migrates it
    migrated = cbcm(settings, "db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert "applied 0001 initial" in migrated.output
    assert cbcm(settings, "db", "status").exit_code == 0
    # then nothing of it changed (version 1 is its schema), it reads as it was written, the
    # erasure still holds, and the log verifies: chain, marks, custody record
    assert catalogue_postgres(postgres_server_url, name) == before
    reads_as_written(settings, cases)
    verified = cbcm(settings, "audit", "verify", "--no-checkpoints")
    assert verified.exit_code == 0, verified.output
    assert "intact" in verified.output.lower()
    # and migrating again does nothing
    again = cbcm(settings, "db", "migrate")
    assert again.exit_code == 0 and "applied" not in again.output


def test_a_sqlite_store_of_the_previous_release_is_migrated_at_start_and_intact(
    tmp_path: Path,
) -> None:
    # given the embedded store the previous release wrote
    settings = fixture_settings(tmp_path / "data", None)
    shutil.copy(FIXTURE / "data" / "events.sqlite3", tmp_path / "data" / "events.sqlite3")
    before = catalogue_sqlite(tmp_path / "data" / "events.sqlite3")
    cases = json.loads((FIXTURE / "cases.json").read_text())["sqlite"]
    # when this cbcm starts on it (embedded SQLite: start-up applies what is missing)
    reads_as_written(settings, cases)
    # then it is at this code's version, its schema unchanged, and it verifies
    assert cbcm(settings, "db", "status").exit_code == 0
    assert catalogue_sqlite(tmp_path / "data" / "events.sqlite3") == before
    verified = cbcm(settings, "audit", "verify", "--no-checkpoints")
    assert verified.exit_code == 0, verified.output


# ------------------------------------------------------------------- refusals at start


def test_a_store_with_no_tables_or_a_newer_schema_is_refused_at_start(
    postgres_server_url: str, schemas: list[str], tmp_path: Path
) -> None:
    name, url = fresh_schema(postgres_server_url)
    schemas.append(name)
    settings = Settings(data_dir=tmp_path, event_store=url)
    # an empty schema: nothing is created at start on PostgreSQL
    with pytest.raises(SchemaVersionError, match=r"has no tables: run `cbcm db init`"):
        complaint_mechanism(settings)
    with psycopg.connect(postgres_server_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (name,)
        ).fetchone()
    assert tables == (0,)
    # a store a newer cbcm migrated: refused too, rather than written in a shape it does
    # not know
    schema.migrate(store_location(settings))
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {name}.cbcm_schema_version VALUES (%s, 'from_the_future', now())",
            (schema.latest() + 1,),
        )
    with pytest.raises(SchemaVersionError, match=r"newer than this cbcm knows"):
        complaint_mechanism(settings)
    with pytest.raises(SchemaVersionError, match=r"newer than this cbcm knows"):
        schema.migrate(store_location(settings))


def test_sqlite_without_create_tables_is_checked_like_postgres(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, event_store=f"sqlite:///{tmp_path / 'e.sqlite3'}", create_tables=False
    )
    with pytest.raises(SchemaVersionError, match=r"has no tables: run `cbcm db init`"):
        complaint_mechanism(settings)
    done = CliRunner().invoke(
        cli,
        ["db", "init"],
        env={"CBCM_DATA_DIR": str(tmp_path), "CBCM_EVENT_STORE": settings.event_store or ""},
    )
    assert done.exit_code == 0, done.output
    complaint_mechanism(settings).close()


def test_the_api_refuses_to_start_on_a_store_behind_its_schema(
    postgres_server_url: str, schemas: list[str], tmp_path: Path
) -> None:
    # given a schema no one initialised (the API opens the application only on first use)
    name, url = fresh_schema(postgres_server_url)
    schemas.append(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    env |= {
        "CBCM_EVENT_STORE": url,
        "CBCM_DATA_DIR": str(tmp_path),
        "CBCM_HTTP_ADDR": "127.0.0.1:0",
        "CBCM_API_METRICS_ADDR": "",
    }
    # when `cbcm api` starts, then it refuses at once, saying what to run
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cbcm"), "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "run `cbcm db init`" in done.stderr


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_migration_that_fails_half_way_changes_nothing(
    dialect: str,
    postgres_server_url: str,
    schemas: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a store at version 1 and a version 2 whose second statement fails
    if dialect == "postgresql":
        name, url = fresh_schema(postgres_server_url)
        schemas.append(name)
        table = f'{schema.SCHEMA_PLACEHOLDER}."half_way"'
    else:
        url = f"sqlite:///{tmp_path / 'e.sqlite3'}"
        table = "half_way"
    env = store_location(Settings(data_dir=tmp_path, event_store=url))
    schema.migrate(env)
    shipped = schema.migrations

    def with_a_broken_version(wanted: str) -> list[schema.Migration]:
        broken = f"CREATE TABLE {table} (x integer);\n\nSELECT * FROM no_such_table;\n"
        return [*shipped(wanted), schema.Migration(2, "broken", broken)]

    monkeypatch.setattr(schema, "migrations", with_a_broken_version)
    monkeypatch.setattr(schema, "latest", lambda: 2)
    # when it is applied, it fails
    with pytest.raises(Exception, match="no_such_table"):
        schema.migrate(env)
    # then the store is still at version 1, without the table the first statement made
    monkeypatch.undo()
    found = schema.status(env)
    assert found.current == 1 and found.up_to_date
    if dialect == "postgresql":
        with psycopg.connect(postgres_server_url) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f"{name}.half_way",)).fetchone()
        assert row == (None,)
    else:
        with sqlite3.connect(tmp_path / "e.sqlite3") as db:
            assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'half_way'").fetchall()
