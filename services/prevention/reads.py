"""The prevention view, fed from the event store: the prevention and network events, as the
contract messages the relay publishes (same translation, so the view reads exactly what an
agency's consumer on NATS would read), folded by ``projections.prevention``.

Also the latest statistics release of a period, for the risk map's allegation column.
"""

from __future__ import annotations

import json
from datetime import date

import msgspec
from eventsourcing.utils import get_topic

from contracts.statistics import StatisticsReleaseV1, decode_release
from domain.network import Network
from domain.prevention import (
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    RiskAssessment,
    TrainingSession,
    WorkPlan,
)
from projections.prevention import PreventionView
from services.application.mechanism import ComplaintMechanism
from services.relay.translation import published_event_classes, to_cloud_event
from services.statistics.releases import (
    LedgerPlace,
    get_release,
    has_ledger,
    list_releases,
    open_ledger,
)

SOURCE = "cbcm:prevention-view"
BATCH = 1000

_AGGREGATES = (
    Network,
    TrainingSession,
    AwarenessActivity,
    FocalPointReadiness,
    RiskAssessment,
    WorkPlan,
    PreventionPolicy,
)
TOPICS: tuple[str, ...] = tuple(
    get_topic(event_class)
    for aggregate in _AGGREGATES
    for event_class in published_event_classes(aggregate)
)
"""Every stored event the view folds: the network's registry and the prevention records."""


def prevention_view(app: ComplaintMechanism) -> PreventionView:
    """The view as of now, folded from the store in log order."""
    view = PreventionView()
    start = 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=BATCH, topics=list(TOPICS))
        if not batch:
            return view
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            view.apply(to_cloud_event(event, source=SOURCE, position=notification.id))
        start = batch[-1].id + 1


def latest_release(
    ledger: LedgerPlace, year: int, quarter: int | None = None
) -> StatisticsReleaseV1 | None:
    """The latest version of the release of ``year`` (or of its ``quarter``) in the ledger at
    ``ledger`` (``ledger_place``), if any was published; else the latest release of a
    quarter of that year."""
    if not has_ledger(ledger):
        return None
    with open_ledger(ledger, readonly=True) as db:
        if quarter is not None:
            found = get_release(db, f"{year}-q{quarter}")
        else:
            found = get_release(db, str(year))
            if found is None:
                of_year = [r for r in list_releases(db) if r.period.startswith(f"{year}-Q")]
                found = of_year[-1] if of_year else None
    if found is None:
        return None
    try:
        return decode_release(json.dumps(found.document).encode())
    except msgspec.ValidationError:
        return None


def quarter_of(day: date) -> int:
    return (day.month - 1) // 3 + 1
