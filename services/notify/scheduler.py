"""The SOP's clock: due-soon and overdue reminders, and the daily digests.

Each ``tick(now)`` is one transaction on the notifier's file. It reads the pending actions
the intake keeps (the inbox's rules under the network policy's deadlines) and adds, for
every open case's action with a deadline:
- ``action_due_soon`` when the deadline is less than ``due_soon`` away and not yet passed,
- ``action_overdue`` once it has passed,
to the case's assigned focal points (the agency's appointed ones while none is assigned).
The subject names the case, the action and the deadline, so each arrives once per
deadline (a deadline moved by a new policy, or a case reopened, is a new subject), however
often the clock is looked at, and after any restart.

Once a day, from ``digest_hour`` (UTC): each coordinator with a contact gets the count of
overdue actions across the network and of notices given up on in the last day; each person
who chose a digest gets the count of the notices held for it (they move to ``digested`` in
the same transaction). The clock is a parameter: tests move it, the service reads the real
one.
"""

# Table and column names in SQL text are constants of this module, never input.

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.vocabulary import NotificationKind
from projections.base import parse_ts, ts
from services.notify import outbox
from services.notify.intake import coordinators, focal_points_of


@dataclass(frozen=True)
class Ticked:
    """What one tick added."""

    due_soon: int = 0
    overdue: int = 0
    digests: int = 0


def _compact(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _recipients(db: sqlite3.Connection, case_id: str, agency: str) -> list[str]:
    # db: the intake's file
    assigned = [
        r[0]
        for r in db.execute(
            "SELECT user FROM inbox_focal_points WHERE case_id = ? ORDER BY user", (case_id,)
        )
    ]
    return assigned or focal_points_of(db, agency)


def _reminders(
    db: sqlite3.Connection, source: sqlite3.Connection, now: datetime, due_soon: timedelta
) -> tuple[int, int]:
    rows = source.execute(
        "SELECT a.case_id, a.action, a.due_at, c.agency, c.immediate_safety_risk"
        " FROM inbox_actions a JOIN inbox_cases c ON c.case_id = a.case_id"
        " WHERE c.closed_at IS NULL AND a.due_at IS NOT NULL AND a.due_at <= ?"
        " ORDER BY a.due_at, a.case_id, a.action",
        (ts(now + due_soon),),
    ).fetchall()
    soon = overdue = 0
    for row in rows:
        due_at = parse_ts(row["due_at"])
        kind = (
            NotificationKind.ACTION_OVERDUE if due_at <= now else NotificationKind.ACTION_DUE_SOON
        )
        about = f"{row['case_id']}:{row['action']}:{_compact(due_at)}"
        for user in _recipients(source, row["case_id"], row["agency"]):
            added = outbox.enqueue(
                db,
                recipient=user,
                kind=kind,
                about=about,
                case_id=row["case_id"],
                organisation=row["agency"],
                urgent=bool(row["immediate_safety_risk"]),
                at=now,
            )
            if added and kind is NotificationKind.ACTION_OVERDUE:
                overdue += 1
            elif added:
                soon += 1
    return soon, overdue


def overdue_actions(db: sqlite3.Connection, now: datetime) -> int:
    row = db.execute(
        "SELECT count(*) FROM inbox_actions a JOIN inbox_cases c ON c.case_id = a.case_id"
        " WHERE c.closed_at IS NULL AND a.due_at IS NOT NULL AND a.due_at < ?",
        (ts(now),),
    ).fetchone()
    return int(row[0])


def _digests(
    db: sqlite3.Connection, source: sqlite3.Connection, now: datetime, digest_hour: int
) -> int:
    now = now.astimezone(UTC)
    if now.hour < digest_hour:
        return 0
    day = now.date().isoformat()
    added = 0
    overdue = overdue_actions(source, now)
    undelivered = outbox.undelivered_between(db, now - timedelta(days=1), now)
    for user in coordinators(source):
        added += outbox.enqueue(
            db,
            recipient=user,
            kind=NotificationKind.COORDINATOR_DIGEST,
            about=day,
            count=overdue,
            detail={"overdue": overdue, "undelivered": undelivered},
            at=now,
        )
    held = db.execute(
        "SELECT key, recipient, kind, count FROM notify_outbox WHERE state = 'held'"
        " ORDER BY recipient, key"
    ).fetchall()
    by_recipient: dict[str, Counter[str]] = {}
    for row in held:
        by_recipient.setdefault(row["recipient"], Counter())[row["kind"]] += row["count"]
    for user, kinds in by_recipient.items():
        made = outbox.enqueue(
            db,
            recipient=user,
            kind=NotificationKind.DIGEST,
            about=day,
            count=sum(kinds.values()),
            detail=dict(kinds),
            at=now,
        )
        if made:
            added += 1
            db.execute(
                "UPDATE notify_outbox SET state = 'digested', finished_at = ?"
                " WHERE recipient = ? AND state = 'held'",
                (ts(now), user),
            )
    return added


def tick(
    db: sqlite3.Connection,
    now: datetime,
    *,
    due_soon: timedelta,
    digest_hour: int,
    source: sqlite3.Connection | None = None,
) -> Ticked:
    """Add the reminders and digests due at ``now`` to the outbox of ``db`` (one
    transaction), from the cases, deadlines and contacts of ``source`` (the intake's file;
    ``db`` when it is one)."""
    source = db if source is None else source
    if now.tzinfo is None:
        raise ValueError("now must be zone-aware")
    db.execute("BEGIN IMMEDIATE")
    try:
        soon, overdue = _reminders(db, source, now, due_soon)
        digests = _digests(db, source, now, digest_hour)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return Ticked(soon, overdue, digests)
