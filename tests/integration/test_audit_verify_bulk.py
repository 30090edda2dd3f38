"""The bulk reader (ADR 33) against a database administrator who changes how a row is stored
rather than what it says: a value's type, an id's spelling, a link's length. SQLite keeps
whatever type it is given, so such a row can put the same bytes into the buffer as the
genuine one; the fast path must not vouch for it. Each damage is held to the careful path,
which alone names damage (``test_audit_verify_paths.same``: every batch size, as tuples and
as buffers). SQLite only: PostgreSQL's columns refuse another type, and PostgreSQL has no
bulk reader yet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit.verify import verify
from services.bootstrap import complaint_mechanism
from services.event_store import log_blobs
from services.event_store.log_blobs import blob_reader
from tests.integration.test_audit_chain import START, Dba, positions
from tests.integration.test_audit_verify_paths import careful_only, same
from tests.integration.walked_stores import (
    Template,
    copy_of,
    demo_walk,
    sqlite_template_fixture,
)

template = sqlite_template_fixture(demo_walk(8, 11, START), "bulk")


def sql(dba: Dba, statement: str, *args: Any) -> None:
    with dba.sql() as c:
        c.execute(statement, args)


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
    "linked to two before": lambda d, p: sql(
        d, f"UPDATE {d.chain} SET previous_position = position - 2 WHERE position = ?", p
    ),
}


@pytest.mark.parametrize("restyle", list(RESTYLED))
def test_a_row_stored_otherwise_is_not_vouched_for(
    template: Template, tmp_path: Path, restyle: str
) -> None:
    with copy_of(template, tmp_path) as settings_:
        app = complaint_mechanism(settings_)
        try:
            dba = Dba(app)
            dba.drop_triggers()
            target = positions(app)[len(positions(app)) // 2]
            RESTYLED[restyle](dba, target)
            report = same(app)  # as the careful path names it, whatever path reads it
            bulk = verify(app.recorder)
            # the range holding the damage was not vouched for by the buffers
            assert bulk.bulk < bulk.checked
        finally:
            app.close()
    assert report.checked  # the careful path read the store


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    damages=st.lists(
        st.tuples(st.sampled_from(sorted(RESTYLED)), st.floats(min_value=0, max_value=1)),
        min_size=1,
        max_size=4,
    )
)
def test_restyled_rows_anywhere_are_named_as_the_careful_path_names_them(
    template: Template, tmp_path_factory: pytest.TempPathFactory, damages: list[Any]
) -> None:
    with copy_of(template, tmp_path_factory.mktemp("restyled")) as settings_:
        app = complaint_mechanism(settings_)
        try:
            dba = Dba(app)
            dba.drop_triggers()
            stored = positions(app)
            for restyle, where in damages:
                RESTYLED[restyle](dba, stored[min(int(where * len(stored)), len(stored) - 1)])
            same(app)
        finally:
            app.close()


def test_the_reader_reads_with_the_sqlite_library_python_uses(
    template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of SQLite in one process do not see each other's locks: the C reader is
    used only when it calls the very library Python's sqlite3 calls (here it does), and
    verify reads tuples otherwise, with the same report."""
    assert log_blobs.same_sqlite()
    with copy_of(template, tmp_path) as settings_:
        app = complaint_mechanism(settings_)
        try:
            assert verify(app.recorder).bulk == len(positions(app))

            class OtherLibrary:
                read_range = staticmethod(log_blobs._log_reader.read_range)

                @staticmethod
                def open_v2_address() -> int:
                    return 1  # another copy of SQLite

            monkeypatch.setattr(log_blobs, "_log_reader", OtherLibrary)
            log_blobs.same_sqlite.cache_clear()
            assert blob_reader(app.recorder) is None
            report = verify(app.recorder)
            assert report.intact and report.bulk == 0 and report.checked == len(positions(app))
        finally:
            log_blobs.same_sqlite.cache_clear()
            app.close()


def test_an_intact_store_is_vouched_for_by_the_buffers(template: Template, tmp_path: Path) -> None:
    with copy_of(template, tmp_path) as settings_:
        app = complaint_mechanism(settings_)
        try:
            report = verify(app.recorder)
            assert report.intact and report.bulk == report.checked == len(positions(app))
            assert careful_only(app).findings == []
        finally:
            app.close()
