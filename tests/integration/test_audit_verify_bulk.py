"""The bulk reader (ADR 33) against a database administrator who changes how a row is stored
rather than what it says: a value's type, an id's spelling, a link's length. SQLite keeps
whatever type it is given, so such a row can put the same bytes into the buffer as the
genuine one; the fast path must not vouch for it. Each damage is held to the careful path,
which alone names damage (``test_audit_verify_paths.same``: every batch size, as tuples and
as buffers). SQLite only: PostgreSQL's columns refuse another type, and PostgreSQL has no
bulk reader yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.application.mechanism import ComplaintMechanism
from services.audit.verify import verify
from services.event_store import log_blobs
from services.event_store.log_blobs import blob_reader
from tests.integration.test_audit_chain import START, Dba, positions
from tests.integration.test_audit_verify_paths import careful_only, same
from tests.integration.walked_stores import (
    Template,
    demo_walk,
    opened_copy,
    sqlite_template_fixture,
)

template = sqlite_template_fixture(demo_walk(8, 11, START), "bulk")


def sql(dba: Dba, statement: str, *args: Any) -> None:
    with dba.sql() as c:
        c.execute(statement, args)


def forge_links(dba: Dba, first: int) -> None:
    """Recompute every link from ``first`` on over the bytes as stored (a topic's raw bytes,
    an id's hex), as a forger who wants a fast path to vouch would: the fast paths must still
    send each restyled row to the careful path. A restyled link is kept, and the next link
    recomputed from its bytes."""
    with dba.sql() as c:
        c.execute(
            f"SELECT CAST(link AS BLOB) FROM {dba.chain} WHERE position < ? ORDER BY position DESC",
            (first,),
        )
        found = c.fetchone()
        previous = bytes(found[0]) if found else bytes(32)
        c.execute(
            f"SELECT e.rowid, CAST(e.originator_id AS BLOB), e.originator_version, "
            f"CAST(e.topic AS BLOB), CAST(e.state AS BLOB), CAST(c.link AS BLOB), "
            f"typeof(c.link) = 'blob' AND length(c.link) = 32 FROM {dba.events} e "
            f"JOIN {dba.chain} c ON c.position = e.rowid WHERE e.rowid >= ? ORDER BY e.rowid",
            (first,),
        )
        for position, oid, version, topic, state, stored, plain_link in c.fetchall():
            if not plain_link:  # the restyled link itself: kept
                previous = bytes(stored)
                continue
            try:
                raw_id = bytes.fromhex(bytes(oid or b"").decode("ascii", "replace"))
                number = int(version)
            except (TypeError, ValueError):
                previous = bytes(stored)  # bytes no path would hash: its link is kept
                continue
            previous = hashlib.sha256(
                previous
                + position.to_bytes(8, "big", signed=True)
                + raw_id
                + number.to_bytes(8, "big", signed=True)
                + len(bytes(topic or b"")).to_bytes(4, "big")
                + bytes(topic or b"")
                + bytes(state or b"")
            ).digest()
            c.execute(f"UPDATE {dba.chain} SET link = ? WHERE position = ?", (previous, position))


@contextmanager
def as_dba(template: Template, root: Path) -> Iterator[tuple[ComplaintMechanism, Dba, int]]:
    """A fresh copy, its triggers dropped as a DBA would, and the position in its middle."""
    with opened_copy(template, root) as app:
        dba = Dba(app)
        dba.drop_triggers()
        yield app, dba, positions(app)[len(positions(app)) // 2]


Restyling = Callable[[Dba, int], None]

RESTYLED: dict[str, Restyling] = {
    # the same bytes as the genuine row, stored as another type or spelling
    "id in capitals": lambda d, p: sql(
        d, f"UPDATE {d.events} SET originator_id = upper(originator_id) WHERE rowid = ?", p
    ),
    "id stored as a blob": lambda d, p: sql(
        d,
        f"UPDATE {d.events} SET originator_id = CAST(originator_id AS BLOB) WHERE rowid = ?",
        p,
    ),
    "state stored as text": lambda d, p: sql(
        d, f"UPDATE {d.events} SET state = CAST(state AS TEXT) WHERE rowid = ?", p
    ),
    "topic stored as a blob": lambda d, p: sql(
        d, f"UPDATE {d.events} SET topic = CAST(topic AS BLOB) WHERE rowid = ?", p
    ),
    "link stored as text": lambda d, p: sql(
        d, f"UPDATE {d.chain} SET link = CAST(link AS TEXT) WHERE position = ?", p
    ),
    # other bytes, or none
    "link one byte longer": lambda d, p: sql(
        d, f"UPDATE {d.chain} SET link = link || X'00' WHERE position = ?", p
    ),
    "id not hex": lambda d, p: sql(
        d,
        f"UPDATE {d.events} SET originator_id = 'zz' || substr(originator_id, 3) WHERE rowid = ?",
        p,
    ),
    "state NULL": lambda d, p: sql(d, f"UPDATE {d.events} SET state = NULL WHERE rowid = ?", p),
    "topic not UTF-8": lambda d, p: sql(
        d, f"UPDATE {d.events} SET topic = CAST(X'c3' AS TEXT) WHERE rowid = ?", p
    ),
    "id with a NUL inside": lambda d, p: sql(
        d,
        f"UPDATE {d.events} SET originator_id = "
        "CAST(CAST(originator_id AS BLOB) || X'0078' AS TEXT) WHERE rowid = ?",
        p,
    ),
    "linked to two before": lambda d, p: sql(
        d, f"UPDATE {d.chain} SET previous_position = position - 2 WHERE position = ?", p
    ),
}


@pytest.mark.parametrize("forged", [False, True], ids=["as it was", "links forged"])
@pytest.mark.parametrize("restyle", list(RESTYLED))
def test_a_row_stored_otherwise_is_not_vouched_for(
    template: Template, tmp_path: Path, restyle: str, forged: bool
) -> None:
    with as_dba(template, tmp_path) as (app, dba, target):
        RESTYLED[restyle](dba, target)
        if forged:
            forge_links(dba, target)
        report = same(app)  # as the careful path names it, whatever path reads it
        bulk = verify(app.recorder)
        # the range holding the damage was not vouched for by the reader
        assert bulk.bulk < bulk.checked
    assert report.checked  # the careful path read the store


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    damages=st.lists(
        st.tuples(st.sampled_from(sorted(RESTYLED)), st.floats(min_value=0, max_value=1)),
        min_size=1,
        max_size=4,
    ),
    forged=st.booleans(),
)
def test_restyled_rows_anywhere_are_named_as_the_careful_path_names_them(
    template: Template,
    tmp_path_factory: pytest.TempPathFactory,
    damages: list[Any],
    forged: bool,
) -> None:
    with as_dba(template, tmp_path_factory.mktemp("restyled")) as (app, dba, _):
        stored = positions(app)
        targets = []
        for restyle, where in damages:
            targets.append(stored[min(int(where * len(stored)), len(stored) - 1)])
            RESTYLED[restyle](dba, targets[-1])
        if forged:
            forge_links(dba, min(targets))
        same(app)


def test_the_reader_reads_with_the_sqlite_library_python_uses(
    template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of SQLite in one process do not see each other's locks: the C reader is
    used only when it calls the very library Python's sqlite3 calls (here it does), and
    verify reads tuples otherwise, with the same report."""
    assert log_blobs.same_sqlite()
    with opened_copy(template, tmp_path) as app:
        assert verify(app.recorder).bulk == len(positions(app))

        class OtherLibrary:
            read_range = staticmethod(log_blobs._log_reader.read_range)

            @staticmethod
            def open_v2_address() -> int:
                return 1  # another copy of SQLite

        monkeypatch.setattr(log_blobs, "_log_reader", OtherLibrary)
        log_blobs.same_sqlite.cache_clear()
        try:
            assert blob_reader(app.recorder) is None
            report = verify(app.recorder)
            assert report.intact and report.bulk == 0 and report.checked == len(positions(app))
        finally:
            log_blobs.same_sqlite.cache_clear()


def test_an_intact_store_is_vouched_for_by_the_reader(template: Template, tmp_path: Path) -> None:
    with opened_copy(template, tmp_path) as app:
        report = verify(app.recorder)
        assert report.intact and report.bulk == report.checked == len(positions(app))
        assert careful_only(app).findings == []


REBUILT: dict[str, list[str]] = {
    # tables that are not as the library creates them: only the careful path reads them
    "the chain a view whose links depend on the connection reading them": [
        "ALTER TABLE {chain} RENAME TO kept_chain",
        "CREATE VIEW {chain} AS SELECT position, previous_position, CASE WHEN "
        "(SELECT timeout FROM pragma_busy_timeout) = 5000 OR position <> {target} "
        "THEN link ELSE zeroblob(32) END AS link FROM kept_chain",
    ],
    "the chain's positions rebuilt as text": [
        "CREATE TABLE new_chain (position TEXT PRIMARY KEY, previous_position INTEGER "
        "NOT NULL, link BLOB NOT NULL)",
        "INSERT INTO new_chain SELECT position, previous_position, link FROM {chain}",
        "DROP TABLE {chain}",
        "ALTER TABLE new_chain RENAME TO {chain}",
    ],
    "the chain's positions rebuilt untyped": [
        "CREATE TABLE new_chain (position, previous_position INTEGER NOT NULL, link BLOB NOT NULL)",
        "INSERT INTO new_chain SELECT CAST(position AS TEXT), previous_position, link FROM {chain}",
        "DROP TABLE {chain}",
        "ALTER TABLE new_chain RENAME TO {chain}",
    ],
    "an event moved to the last rowid": [
        "UPDATE {events} SET rowid = 9223372036854775807 WHERE rowid = {target}",
    ],
    "the events' ids compared without case, one in capitals": [
        "CREATE TABLE new_events (originator_id TEXT COLLATE NOCASE, originator_version "
        "INTEGER, topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))",
        "INSERT INTO new_events (rowid, originator_id, originator_version, topic, state) "
        "SELECT rowid, originator_id, originator_version, topic, state FROM {events}",
        "DROP TABLE {events}",
        "ALTER TABLE new_events RENAME TO {events}",
        "UPDATE {events} SET originator_id = upper(originator_id) WHERE rowid = {target}",
    ],
}
READ_BY_THE_READER = {
    "an event moved to the last rowid",
    "the events' ids compared without case, one in capitals",
}
"""Damages in tables the reader still reads (it refuses the damaged range itself)."""


@pytest.mark.parametrize("rebuild", list(REBUILT))
def test_tables_not_as_created_are_read_by_the_careful_path_to_the_end(
    template: Template, tmp_path: Path, rebuild: str
) -> None:
    """A view's values may depend on the connection that reads it (the C reader's is its
    own), and positions that are not integers compare otherwise: the fast paths read only
    tables as created. And the careful path ends, naming the damage, whatever the
    positions (it looped for good on untyped texts, and stopped on the last rowid). An id
    in capitals is refused by the reader even where the column compares without case (an
    SQL ``lower(id) = id`` passed it)."""
    with as_dba(template, tmp_path) as (app, dba, target):
        names = {"chain": dba.chain, "events": dba.events, "target": target}
        with dba.sql() as c:
            for statement in REBUILT[rebuild]:
                c.execute(statement.format(**names))
        report = same(app)
        assert not report.intact
        if rebuild in READ_BY_THE_READER:
            assert verify(app.recorder).bulk < report.checked  # not the damaged range
        else:
            assert blob_reader(app.recorder) is None
            assert verify(app.recorder).bulk == 0
