"""A store written before issue 13's re-layout reads after it.

Moved classes keep their old topics.

The fixture ``tests/fixtures/pre_relayout/`` is a data dir written by the code before the
re-layout (``relayout.py`` made it with ``services.idempotency``, as it was then): an event store
with two idempotent requests, stored under ``services.idempotency:IdempotentRequest.Recorded``
through the hash-chained recorder, and the test key ring (``keys/kek``) its data keys are
wrapped in.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from eventsourcing.utils import get_topic

from services.application.idempotency import IdempotentRequest, record_id, seal, unseal
from services.audit.verify import verify
from services.bootstrap import complaint_mechanism
from services.event_store.chain import start_marks
from services.settings import Settings

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_relayout"
OLD_TOPIC = "services.idempotency:IdempotentRequest.Recorded"
USER, KEY = "fp-unhcr-1", "relayout-fixture-key-0001"


def _settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir)
    return Settings(
        data_dir=data_dir, event_store=None, kek_dir=None, kms_hook=None, event_cipher="off"
    )


def test_an_idempotent_request_stored_before_the_relayout_is_read_back_after_it(
    tmp_path: Path,
) -> None:
    # given a store written before the re-layout, whose events name the old module
    app = complaint_mechanism(_settings(tmp_path))
    try:
        stored = app.recorder.select_notifications(1, 10)
        assert {n.topic for n in stored} == {OLD_TOPIC}
        # when the application reads a request recorded then
        record = app.idempotent_request(record_id(USER, KEY))
        # then it is the class that moved, with its answer and its sealed receipt code
        assert isinstance(record, IdempotentRequest)
        assert record.status_code == 201
        assert record.answer == '{"id": "before-the-relayout", "version": 1}'
        assert record.sealed_secret is not None
        assert unseal(record.sealed_secret, KEY, record_id(USER, KEY)) == "RC-BEFORE-1"
    finally:
        app.close()


def test_a_request_recorded_after_the_relayout_is_stored_under_the_new_topic_beside_the_old(
    tmp_path: Path,
) -> None:
    # given the store written before the re-layout (and before writer marks: the operator
    # starts them, `cbcm audit start-marks`)
    app = complaint_mechanism(_settings(tmp_path))
    try:
        assert start_marks(app.recorder) == 3
        user, key = "fp-unicef-1", "relayout-after-key-0003"
        rid = record_id(user, key)
        # when a new request is recorded
        app.save(
            IdempotentRequest.record(
                user=user,
                key=key,
                request_fingerprint="0" * 64,
                status_code=200,
                answer="{}",
                sealed_secret=seal("RC-AFTER-1", key, rid),
                at=datetime(2026, 6, 1, tzinfo=UTC),
            )
        )
        # then it names the new module, both generations read back, and the chain holds
        topics = [n.topic for n in app.recorder.select_notifications(1, 10)]
        assert topics == [OLD_TOPIC, OLD_TOPIC, get_topic(IdempotentRequest.Recorded)]
        assert get_topic(IdempotentRequest.Recorded).startswith("services.application.")
        assert app.idempotent_request(record_id(USER, KEY)) is not None
        assert app.idempotent_request(rid) is not None
        report = verify(app.recorder)
        assert report.intact
        assert report.checked == 3
    finally:
        app.close()
