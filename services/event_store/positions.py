"""Where one stored event sits in the store's total order (its notification id).

The library answers "the events of this aggregate" and "the events from this position", not
"the position of this event"; a retried request is answered with the position its first try
recorded, so the store is asked directly, in its own SQL.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Tracking
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier


def position_of(recorder: ApplicationRecorder, aggregate_id: UUID, version: int) -> int:
    """The position of the event ``version`` of ``aggregate_id``; 0 if there is none."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (
            f"SELECT rowid FROM {recorder.events_table_name} "  # noqa: S608 - the library's table
            "WHERE originator_id = ? AND originator_version = ?"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (aggregate_id.hex, version))
            row = cursor.fetchone()
        return int(row[0]) if row else 0
    if isinstance(recorder, PostgresApplicationRecorder):
        query = SQL(
            "SELECT notification_id AS p FROM {}.{} "
            "WHERE originator_id = %s AND originator_version = %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(query, (aggregate_id, version))
            found = cursor.fetchone()
        return int(found["p"]) if found else 0
    if isinstance(recorder, POPOApplicationRecorder):
        start = 1
        while batch := recorder.select_notifications(start=start, limit=1000):
            for notification in batch:
                if (
                    notification.originator_id == aggregate_id
                    and notification.originator_version == version
                ):
                    return notification.id
            start = batch[-1].id + 1
        return 0
    raise TypeError(f"no position look-up for a {type(recorder).__name__}")


class TrackingRecorder(PostgresTrackingRecorder):
    """The library's PostgreSQL tracking recorder (the relay records the position it published
    up to with it), its one statement sent alone: the library wraps it in a transaction block,
    three round trips (BEGIN, the INSERT, COMMIT) where the statement on its own is one, and
    as atomic. The relay records its position after each pass, on PostgreSQL after about
    every commit."""

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit  # the statement is its own transaction
            self._insert_tracking(curs, tracking)


POSTGRES_TRACKING_TOPIC = get_topic(TrackingRecorder)
