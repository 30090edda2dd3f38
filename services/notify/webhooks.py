"""Telling that an agency's webhook endpoint was disabled for failing (issue #19, ADR 18).

The webhook registry is an internal aggregate: its events never travel on NATS, since they
hold URLs and (sealed) secrets and say which agency is reachable where. So this follower
reads the registry's disablings from the event store (``webhook_disablings``), where the
notifier already writes its own notification events, rather than from the bus: nothing new
is published, no subject or account is added, and no agency's consumer can ever see it.

Each ``follow(db, ...)`` is one transaction of the sender's file: the notices of the
disablings recorded after the registry version it last followed, and that version, commit
together, so a restart neither forgets one nor makes one twice (the outbox key makes a
second insert a no-op anyway). It runs in the process that holds the sender's lease, at each
scheduler tick. From there the notices go as every other (the sender's committed steps, one
``Notification.Sent``/``GivenUp`` each in the log, on ``cbcm.v1.evt.network.notification.*``,
which only the network's services read).

Who is told of a disabling with reason ``failing`` (the deliverer's, after
``CBCM_WEBHOOK_DISABLE_AFTER_DAYS``; one the coordinator made is not news to them):
- every coordinator with a contact, with a link to the endpoint (``/v1/webhooks/<id>``);
- the focal points of the agency whose endpoint it is who registered a reachable contact.
The notice's subject is ``<endpoint id>:v<registry version>`` (a second disabling after an
enabling is told again); the message holds a count, the kind and the link, nothing else.
Disablings recorded before the notifier's history limit (``notify_since`` less the grace)
are history, as for the intake: told to no one.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from domain.vocabulary import NotificationKind
from domain.webhooks import DisableReason
from services.application.mechanism import ComplaintMechanism
from services.notify import outbox
from services.notify.intake import coordinators

SCHEMA = ("CREATE TABLE IF NOT EXISTS notify_webhook_registry (version INTEGER NOT NULL)",)

COORDINATOR_DETAIL = "coordinator"
"""``detail`` key of a coordinator's notice (its link goes to the endpoint)."""


def create(db: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        db.execute(statement)


def followed(db: sqlite3.Connection) -> int:
    """The registry version whose disablings are in the outbox (0: none yet)."""
    row = db.execute("SELECT max(version) FROM notify_webhook_registry").fetchone()
    return int(row[0] or 0)


def reachable_focal_points(source: sqlite3.Connection, agency: str) -> list[str]:
    """The agency's appointed focal points who registered a contact not erased since."""
    rows = source.execute(
        "SELECT f.user FROM notify_focal_points f JOIN notify_contacts c ON c.user = f.user"
        " WHERE f.agency = ? AND c.reachable = 1 ORDER BY f.user",
        (agency,),
    )
    return [r[0] for r in rows]


def follow(
    db: sqlite3.Connection,
    source: sqlite3.Connection,
    app: ComplaintMechanism,
    *,
    history_from: datetime | None,
) -> int:
    """Add the notices of the disablings recorded since the last call (one transaction of
    ``db``, the sender's file; ``source``: the intake's, for contacts and focal points).
    How many notices were added. Blocking: call it in a thread."""
    after = followed(db)
    if app.webhook_registry_version() == after:
        return 0
    head, disablings = app.webhook_disablings(after)
    added = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        if followed(db) != after:  # another sender got here first (it holds the lease)
            db.execute("ROLLBACK")
            return 0
        for disabling in disablings:
            if disabling.reason is not DisableReason.FAILING:
                continue
            if history_from is not None and disabling.at < history_from:
                continue
            about = f"{disabling.endpoint_id}:v{disabling.version}"
            told = [(user, {COORDINATOR_DETAIL: 1}) for user in coordinators(source)]
            told += [(user, {}) for user in reachable_focal_points(source, disabling.agency)]
            for user, detail in told:
                added += outbox.enqueue(
                    db,
                    recipient=user,
                    kind=NotificationKind.WEBHOOK_DISABLED,
                    about=about,
                    organisation=disabling.agency,
                    detail=detail,
                    at=disabling.at,
                )
        db.execute("DELETE FROM notify_webhook_registry")
        db.execute("INSERT INTO notify_webhook_registry (version) VALUES (?)", (head,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return added
