"""The C log reader (ADR 33) hashes exactly what ``chain.link_hash`` hashes: for any events
the library writes (any topic in UTF-8, any state, versions across the 64-bit range), its
digests are the stored links, and a digest differs as soon as one stored byte does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.event_store.chain import GENESIS, head, link_before, read_log
from services.event_store.log_blobs import BlobReader, blob_reader
from services.settings import Settings
from tests.integration.test_audit_chain import Dba


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComplaintMechanism]:
    root = tmp_path_factory.mktemp("reader")
    app = complaint_mechanism(
        Settings(data_dir=root, event_store=f"sqlite:///{Path(root) / 'events.sqlite3'}")
    )
    yield app
    app.close()


events = st.lists(
    st.tuples(
        st.text(min_size=0, max_size=40),  # topic: any text (UTF-8 in the file)
        st.binary(max_size=600),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=events)
def test_the_readers_digests_are_the_links(
    store: ComplaintMechanism, batch: list[tuple[str, bytes, int]]
) -> None:
    reader = blob_reader(store.recorder)
    assert isinstance(reader, BlobReader)
    top = head(store.recorder)
    first = 1 if top is None else top.position + 1
    store.recorder.insert_events(
        [StoredEvent(uuid.uuid4(), version, topic, state) for topic, state, version in batch]
    )
    rows = [r for r in read_log(store.recorder, first)]
    assert len(rows) == len(batch)
    before = link_before(store.recorder, first)
    previous = GENESIS if before is None else before.link
    expected = []
    link = previous
    for row in rows:
        assert row.chain is not None and row.originator_id is not None
        assert row.version is not None and row.topic is not None and row.state is not None
        link = row.link_from(link)  # chain.link_hash over the row as read back
        expected.append(link)
    end = rows[-1].position + 1
    got = reader.read(first, end, 0 if before is None else before.position, previous)
    assert got.plain and got.rows == len(batch)
    assert got.digests == got.links == b"".join(expected)
    # the previous link is part of the first preimage: another one changes the digest
    other = reader.read(first, end, 0 if before is None else before.position, bytes(31) + b"x")
    assert other.digests[:32] != got.digests[:32] and other.digests[32:] == got.digests[32:]
    # and so is every stored byte: one flipped in the last event's state changes its digest
    dba = Dba(store)
    dba.drop_triggers()
    last = rows[-1]
    assert last.state is not None
    changed = bytes([last.state[0] ^ 1]) + last.state[1:] if last.state else b"\x00"
    with dba.sql() as c:
        c.execute(f"UPDATE {dba.events} SET state = ? WHERE rowid = ?", (changed, last.position))
    damaged = reader.read(first, end, 0 if before is None else before.position, previous)
    assert damaged.digests[:-32] == got.digests[:-32]
    assert damaged.digests[-32:] != damaged.links[-32:]
    with dba.sql() as c:  # put back, for the next example
        c.execute(f"UPDATE {dba.events} SET state = ? WHERE rowid = ?", (last.state, last.position))
