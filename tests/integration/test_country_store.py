"""The bulk generator of the country benchmark (issue #16, ADR 28) writes a store production
reads: ``cbcm audit verify`` finds it intact and every commit marked, every event decodes
(its sealed fields open under the data keys of its own record), and the replicas are new
records, not copies: fresh case ids, the derived ids derived again, times spread over the
years."""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.case import Case
from domain.feedback import Feedback, forwarded_feedback_id
from services.bootstrap import complaint_mechanism
from tests.bench import country
from tests.bench.test_event_flow import CBCM


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> country.Generated:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CBCM_BENCH_TEMPLATE_CASES", "12")
        mp.setattr(country, "BATCH", 97)  # transactions cut through replicas and records
        return country.generate(
            tmp_path_factory.mktemp("country") / "store", 1500, progress=lambda _: None
        )


def test_audit_verify_finds_the_generated_store_intact_and_marked(
    generated: country.Generated,
) -> None:
    settings = generated.settings
    env = {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": settings.event_store,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [CBCM, "audit", "verify", "--no-checkpoints"],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"intact: {generated.events} positions" in done.stdout
    assert "writer marks: every commit" in done.stdout


def test_replicas_are_new_records_whose_sealed_fields_open(
    generated: country.Generated, tmp_path: Path
) -> None:
    assert generated.events >= 1500
    app = complaint_mechanism(generated.settings)
    try:
        events = [
            app.mapper.to_domain_event(n)  # opens every sealed field, or raises
            for n in app.recorder.select_notifications(1, generated.events + 10)
        ]
    finally:
        app.close()
    assert len(events) == generated.events
    received = [e for e in events if isinstance(e, Case.Received)]
    cases = Counter(e.originator_id for e in received)
    assert len(cases) == generated.cases and max(cases.values()) == 1
    assert set(generated.case_ids) <= set(cases)
    narratives = Counter(e.narrative for e in received if e.narrative)
    assert narratives and max(narratives.values()) > 1  # the same walk, replicated...
    forwarded = [e for e in events if isinstance(e, Feedback.Received) and e.source_case_id]
    assert len(forwarded) > 1
    for e in forwarded:  # ...as new records, their derived ids derived again
        assert e.source_case_id is not None
        assert e.originator_id == forwarded_feedback_id(e.source_case_id)
        assert e.source_case_id in cases
    now = datetime.now(UTC)
    times = [e.timestamp for e in received]
    assert min(times) < now - timedelta(days=365 * (country.YEARS - 1))
    assert max(times) <= now
