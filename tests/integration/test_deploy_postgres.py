"""deploy/postgres (issue #5): the application's role may insert and read events, nothing
more; the owner creates the tables (`cbcm db init --grant-to`, issue #17); even the owner
cannot update or delete an event."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from typer.testing import CliRunner

from domain.actors import Actor, Role
from domain.vocabulary import Channel, ComplainantRole
from services.application.mechanism import ComplaintMechanism
from services.audit.verify import verify
from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.settings import Settings
from tests.api_world import build_network

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postgres"


def as_user(url: str, user: str, password: str, schema: str | None) -> str:
    """``url`` as another role (with ``schema``: as a CBCM_EVENT_STORE URL)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("schema="))
    if schema is not None:
        query = "&".join(p for p in (query, f"schema={schema}") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class Deployment:
    def __init__(self, server: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.server = server
        self.owner, self.app, self.schema = (
            f"cbcm_owner_{suffix}",
            f"cbcm_app_{suffix}",
            f"cbcm_{suffix}",
        )
        self.password = uuid.uuid4().hex

    def sql(self, name: str) -> str:
        text = (DEPLOY / name).read_text()
        return (
            text.replace("cbcm_owner", self.owner)
            .replace("cbcm_app", self.app)
            .replace("cbcm.cbcm_", f"{self.schema}.cbcm_")
            .replace("SCHEMA cbcm ", f"SCHEMA {self.schema} ")
        )

    def run(self, name: str) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(self.sql(name))
            if name.startswith("01"):
                for role in (self.owner, self.app):
                    conn.execute(f"ALTER ROLE {role} PASSWORD '{self.password}'")

    def url(self, role: str) -> str:
        return as_user(self.server, role, self.password, self.schema)

    def cbcm(self, data_dir: Path, role: str, *argv: str) -> str:
        """A ``cbcm`` command as ``role``; its output (it must succeed)."""
        env = {"CBCM_EVENT_STORE": self.url(role), "CBCM_DATA_DIR": str(data_dir)}
        done = CliRunner().invoke(cli, list(argv), env=env)
        assert done.exit_code == 0, done.output
        return done.output

    def create_tables_and_grant(self, data_dir: Path) -> None:
        """The owner makes the tables and grants the application's role, in one command;
        then sets up the network."""
        self.cbcm(data_dir, self.owner, "db", "init", "--grant-to", self.app)
        owner = complaint_mechanism(Settings(data_dir=data_dir, event_store=self.url(self.owner)))
        build_network(owner, datetime.now(UTC) - timedelta(days=1))
        owner.close()

    def application(self, data_dir: Path) -> ComplaintMechanism:
        """The application under its own role, creating nothing."""
        return complaint_mechanism(Settings(data_dir=data_dir, event_store=self.url(self.app)))

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            for role in (self.app, self.owner):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def deployment(postgres_server_url: str) -> Iterator[Deployment]:
    deployed = Deployment(postgres_server_url)
    deployed.run("01-roles.sql")
    yield deployed
    deployed.drop()


def test_the_application_role_inserts_and_reads_but_cannot_change_the_log(
    deployment: Deployment, tmp_path: Path
) -> None:
    # given tables created by the owner and the grants of deploy/postgres
    deployment.create_tables_and_grant(tmp_path)

    # when the application runs under its own role, creating nothing
    app = deployment.application(tmp_path)
    try:
        now = datetime.now(UTC)
        app.receive_complaint(
            actor=Actor("op-1", "unhcr", Role.INTAKE_OPERATOR),
            at=now,
            received_at=now,
            channel=Channel.HOTLINE,
            complainant_role=ComplainantRole.ANONYMOUS,
            immediate_safety_risk=False,
            narrative="a guard asked for sex",
        )
        # then its events are chained like the owner's
        assert verify(app.recorder).intact
    finally:
        app.close()

    # and the application's role may not change or remove an event (permission), nor may
    # the owner (trigger)
    events = f"{deployment.schema}.cbcm_events"
    for role, refusal in ((deployment.app, "permission denied"), (deployment.owner, "append-only")):
        for statement in (
            f"UPDATE {events} SET topic = 'x'",
            f"DELETE FROM {events}",
            f"TRUNCATE {events}",
            f"DELETE FROM {events}_chain",
        ):
            with (
                psycopg.connect(
                    as_user(deployment.server, role, deployment.password, None),
                    autocommit=True,
                ) as conn,
                pytest.raises(psycopg.Error, match=refusal),
            ):
                conn.execute(statement)


def test_the_chain_follows_commit_order_even_under_a_repeatable_read_default(
    deployment: Deployment, tmp_path: Path
) -> None:
    # given an application whose role defaults to REPEATABLE READ (a snapshot taken before
    # the insert lock is granted would read a stale last link)
    deployment.create_tables_and_grant(tmp_path)
    with psycopg.connect(deployment.server, autocommit=True) as conn:
        conn.execute(
            f"ALTER ROLE {deployment.app} SET default_transaction_isolation = 'repeatable read'"
        )
    app = deployment.application(tmp_path)
    operator = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)

    def intake(count: int) -> None:
        for _ in range(count):
            now = datetime.now(UTC)
            app.receive_complaint(
                actor=operator,
                at=now,
                received_at=now,
                channel=Channel.HOTLINE,
                complainant_role=ComplainantRole.ANONYMOUS,
                immediate_safety_risk=False,
                narrative="a guard asked for sex",
            )

    try:
        # when eight writers record complaints at once
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(intake, [15] * 8))
        # then every link follows the one committed before it
        report = verify(app.recorder)
        assert report.intact, report.findings[:3]
        assert report.checked >= 120
    finally:
        app.close()


def test_the_committed_grants_file_is_what_cbcm_db_grants_prints(tmp_path: Path) -> None:
    # deploy/postgres/02-grants.sql is for reading (and for psql): the command is the truth
    env = {"CBCM_EVENT_STORE": "postgresql://cbcm_owner@db.invalid/cbcm?schema=cbcm"}
    printed = CliRunner().invoke(cli, ["db", "grants", "--role", "cbcm_app"], env=env)
    assert printed.exit_code == 0, printed.output
    committed = [
        line
        for line in (DEPLOY / "02-grants.sql").read_text().splitlines()
        if line and not line.startswith("--")
    ]
    assert committed == printed.output.splitlines()


def test_the_application_role_can_neither_create_nor_migrate(
    deployment: Deployment, tmp_path: Path
) -> None:
    # given a schema the owner has not initialised yet
    # when the application's role starts, or tries to make the tables itself
    with pytest.raises(Exception, match=r"has no tables: run `cbcm db init`"):
        deployment.application(tmp_path)
    done = CliRunner().invoke(
        cli,
        ["db", "init"],
        env={"CBCM_EVENT_STORE": deployment.url(deployment.app), "CBCM_DATA_DIR": str(tmp_path)},
    )
    # then it is refused, in one line: it may create nothing
    assert done.exit_code == 2, done.output
    assert "permission denied" in done.output
    assert "run `cbcm db` as the tables' owner" in done.output


# --- read models (ADR 16, ADR 27): the projector writes its schemas, the API only reads ---------


def test_the_read_model_roles_the_projector_writes_the_api_only_reads(
    postgres_server_url: str, tmp_path: Path
) -> None:
    from projections.inbox import InboxProjection  # noqa: PLC0415
    from services.api.read_models import read_model_stall  # noqa: PLC0415
    from services.projector.runner import open_projection  # noqa: PLC0415
    from services.projector.storage import read_model_store  # noqa: PLC0415
    from services.runtime.worker_status import record_stall, status_place  # noqa: PLC0415

    suffix = uuid.uuid4().hex[:8]
    projector, reader, prefix = f"cbcm_projector_{suffix}", f"cbcm_reader_{suffix}", f"rm{suffix}"
    password = uuid.uuid4().hex
    text = (
        (DEPLOY / "03-read-models.sql")
        .read_text()
        .replace("cbcm_projector", projector)
        .replace("cbcm_reader", reader)
    )
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(text)
        for role in (projector, reader):
            conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")

    def settings(role: str) -> Settings:
        return Settings(
            data_dir=tmp_path,
            read_model_store=as_user(postgres_server_url, role, password, prefix),
        )

    try:
        # given the projector, under its role, making its read model and recording a stall
        written = read_model_store(settings(projector), "inbox")
        db = open_projection(InboxProjection(), written)
        db.close()
        record_stall(
            status_place(settings(projector)), "project-inbox", position=5, message_type="x",
            error="KeyError",
        )  # fmt: skip
        # then the API, under its role, reads both
        read = read_model_store(settings(reader), "inbox")
        assert read.position() == 0
        stall = read_model_stall(read)
        assert stall is not None and stall.position == 5
        # and can change or create nothing
        reader_url = as_user(postgres_server_url, reader, password, None)
        with psycopg.connect(reader_url, autocommit=True) as conn:
            for statement in (
                f"UPDATE {prefix}_inbox.projection_position SET position = 99",
                f"DELETE FROM {prefix}_status.worker_stalls",
                f"CREATE TABLE {prefix}_inbox.mine (x int)",
                f"CREATE SCHEMA {prefix}_mine",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            for schema in (f"{prefix}_inbox", f"{prefix}_status"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            for role in (reader, projector):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_the_api_role_reads_the_statistics_releases_and_no_role_changes_one(
    postgres_server_url: str, tmp_path: Path
) -> None:
    """The release ledger in the read-model database (ADR 27): the projector's role makes
    it and adds releases; the API's role reads them and can change nothing; not even the
    projector's role can change or remove a release once made, nor forget its publication."""
    from services.statistics.releases import (  # noqa: PLC0415
        get_release,
        has_ledger,
        ledger_place,
        list_releases,
        mark_published,
        open_ledger,
        unpublished,
    )

    suffix = uuid.uuid4().hex[:8]
    projector, reader, prefix = f"cbcm_projector_{suffix}", f"cbcm_reader_{suffix}", f"rm{suffix}"
    password = uuid.uuid4().hex
    text = (
        (DEPLOY / "03-read-models.sql")
        .read_text()
        .replace("cbcm_projector", projector)
        .replace("cbcm_reader", reader)
    )
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(text)
        for role in (projector, reader):
            conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")

    def settings(role: str) -> Settings:
        return Settings(
            data_dir=tmp_path / role,
            read_model_store=as_user(postgres_server_url, role, password, prefix),
        )

    table = f"{prefix}_stats_releases.stats_release"
    try:
        # given a release made and published by the statistics projector, under its role
        document = '{"release": {"id": "2026-q1-v1"}, "reports": {}}'
        with open_ledger(ledger_place(settings(projector))) as led:
            led.execute(
                "INSERT INTO stats_release (id, period, version, released_at, document, counts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ("2026-q1-v1", "2026-Q1", 1, "2026-05-01T00:00:00+00:00", document, "[]"),
            )
            led.commit()
            mark_published(led, "2026-q1-v1")
        # then the API, under its role and on another host, reads it
        place = ledger_place(settings(reader))
        assert has_ledger(place)
        with open_ledger(place, readonly=True) as led:
            assert [v.id for v in list_releases(led)] == ["2026-q1-v1"]
            found = get_release(led, "2026-q1")
            assert found is not None and found.document == json.loads(document)
            assert unpublished(led) == []
        # and can change, add, remove or create nothing in the ledger
        reader_url = as_user(postgres_server_url, reader, password, None)
        with psycopg.connect(reader_url, autocommit=True) as conn:
            for statement in (
                f"UPDATE {table} SET document = '{{}}'",
                f"DELETE FROM {table}",
                f"TRUNCATE {table} CASCADE",
                f"INSERT INTO {table} SELECT 'x-v1', 'X', 1, '', '', '' ",
                f"DELETE FROM {prefix}_stats_releases.stats_release_published",
                f"DROP TABLE {table} CASCADE",
                f"CREATE TABLE {prefix}_stats_releases.mine (x int)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
        # nor can the projector's role, which owns it, change a release or forget that it
        # went out (it would go out again)
        projector_url = as_user(postgres_server_url, projector, password, None)
        with psycopg.connect(projector_url, autocommit=True) as conn:
            for statement in (
                f"UPDATE {table} SET document = '{{}}'",
                f"DELETE FROM {table}",
                f"TRUNCATE {table} CASCADE",
                f"DELETE FROM {prefix}_stats_releases.stats_release_published",
                f"TRUNCATE {prefix}_stats_releases.stats_release_published",
            ):
                with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
                    conn.execute(statement)
        with open_ledger(place, readonly=True) as led:
            found = get_release(led, "2026-q1-v1")
            assert found is not None and found.document == json.loads(document)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {prefix}_stats_releases CASCADE")
            for role in (reader, projector):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE IF EXISTS {role}")
