"""The one place that wires the application to its event store."""

from __future__ import annotations

from eventsourcing.postgres import PostgresDatastore

from services.application.mechanism import ComplaintMechanism
from services.event_store import schema
from services.event_store.config import OutageGuard, persistence_env
from services.settings import Settings


def complaint_mechanism(settings: Settings | None = None) -> ComplaintMechanism:
    """The application on the event store that ``settings`` (default: the environment) name.

    Only the embedded SQLite store creates its tables at start (the relay's tracking table
    included); a PostgreSQL store must be at this code's schema version (``cbcm db
    migrate``), or the application refuses to start with a message saying so. While a
    PostgreSQL store's server is down, calls fail at once (``EventStoreUnreachable``, an
    ``EventStoreUnavailable``) rather than hang."""
    settings = settings or Settings()
    env = persistence_env(settings)
    # SQLite with CBCM_CREATE_TABLES: the missing tables made by the versioned files; else
    # (PostgreSQL always) refused unless the schema is at this code's version (ADR 21)
    schema.prepare(env, create=settings.create_tables)
    app = ComplaintMechanism(env=env)
    guard_against_outages(app)
    if env["CREATE_TABLE"] == "y":
        app.factory.tracking_recorder()
    return app


def guard_against_outages(app: ComplaintMechanism) -> None:
    """Fail fast while the event store's server is down (PostgreSQL; SQLite is a file)."""
    datastore = getattr(app.recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        guard = OutageGuard(datastore)
        guard.install(datastore)
        app.store_connections = guard
