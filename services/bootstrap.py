"""The one place that wires the application to its event store."""

from __future__ import annotations

from services.event_store import persistence_env
from services.mechanism import ComplaintMechanism
from services.settings import Settings


def complaint_mechanism(settings: Settings | None = None) -> ComplaintMechanism:
    """The application on the event store that ``settings`` (default: the environment) name."""
    return ComplaintMechanism(env=persistence_env(settings or Settings()))
