"""The one place that wires the application to its event store."""

from __future__ import annotations

from eventsourcing.postgres import PostgresDatastore

from services.application.mechanism import ComplaintMechanism
from services.event_store.config import OutageGuard, persistence_env
from services.settings import Settings


def complaint_mechanism(settings: Settings | None = None) -> ComplaintMechanism:
    """The application on the event store that ``settings`` (default: the environment) name.

    Where it may create tables, it creates all of them at once, the relay's tracking table
    included, so that a deployment can then hand the application a role that creates nothing
    (deploy/postgres). While a PostgreSQL store's server is down, calls fail at once
    (``EventStoreUnreachable``, an ``EventStoreUnavailable``) rather than hang."""
    settings = settings or Settings()
    app = ComplaintMechanism(env=persistence_env(settings))
    guard_against_outages(app)
    if settings.create_tables:
        app.factory.tracking_recorder()
    return app


def guard_against_outages(app: ComplaintMechanism) -> None:
    """Fail fast while the event store's server is down (PostgreSQL; SQLite is a file)."""
    datastore = getattr(app.recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        guard = OutageGuard(datastore)
        guard.install(datastore)
        app.store_connections = guard
