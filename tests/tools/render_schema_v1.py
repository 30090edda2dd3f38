"""How schema version 1 (services/event_store/migrations/*/0001_*.sql) was made: the DDL the
recorders of the release before migrations ran at start-up, rendered as it was.

Run once, on the commit before migrations existed (a86d587), against any PostgreSQL:

    python tests/tools/render_schema_v1.py postgresql://... > 0001.sql   (both dialects)

Kept for provenance: ``test_schema_versions`` checks that a store built by that start-up DDL
and one built by the files have the same catalogue.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import psycopg
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from services.application.mechanism import ComplaintMechanism
from services.event_store.config import persistence_env
from services.settings import Settings

PLACEHOLDER = "__cbcm_schema__"


def recorders(url: str, data_dir: Path) -> tuple[object, object]:
    env = persistence_env(Settings(data_dir=data_dir, event_store=url))
    env["CREATE_TABLE"] = "n"
    factory = InfrastructureFactory.construct(Environment(ComplaintMechanism.name, env))
    return factory.application_recorder(), factory.tracking_recorder()


def postgres(url: str, data_dir: Path) -> str:
    app, tracking = recorders(f"{url}{'&' if '?' in url else '?'}schema={PLACEHOLDER}", data_dir)
    out = []
    with psycopg.connect(url) as conn:
        for recorder in (app, tracking):
            for statement in recorder.sql_create_statements:  # type: ignore[attr-defined]
                text = statement.as_string(conn)
                if text.startswith("CREATE TYPE"):
                    # the library runs it alone and ignores duplicate_object: the same here
                    text = f"DO $$ BEGIN {text}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
                out.append(text.rstrip(";") + ";")
    table = f'"{PLACEHOLDER}"."cbcm_tracking"'
    out.append(
        f"INSERT INTO {table} VALUES ('__migration__', 1) ON CONFLICT (application_name) "
        "DO NOTHING;"
    )
    return "\n\n".join(out) + "\n"


def sqlite(data_dir: Path) -> str:
    app, tracking = recorders(f"sqlite:///{data_dir / 'x.sqlite3'}", data_dir)
    out = [
        s.rstrip(";") + ";"
        for recorder in (app, tracking)
        for s in recorder.create_table_statements  # type: ignore[attr-defined]
    ]
    out.append("INSERT OR IGNORE INTO tracking VALUES ('__migration__', 1);")
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        root = Path(__file__).resolve().parents[2] / "services/event_store/migrations"
        header = "-- cbcm schema version 1: what the release before versions made at start-up\n\n"
        (root / "postgresql/0001_initial.sql").write_text(header + postgres(sys.argv[1], Path(d)))
        (root / "sqlite/0001_initial.sql").write_text(header + sqlite(Path(d)))
