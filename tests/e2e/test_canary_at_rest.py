"""The canary test of issue #6, on the whole stack (``cbcm serve``, real processes).

A workflow records every event class with a unique canary in every personal field; the stack
publishes it, projects it and reports statistics. Then every file the stack wrote (the event
store, the read models, the JetStream store of the NATS server, the witness's book), every
log line of every process and the exported statistics are scanned: no canary is there in
clear. After the main case's personal data is erased over HTTP, no role can get any of its
canaries back, and the audit log still verifies.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from domain.case import Case
from services.bootstrap import complaint_mechanism
from services.projector.runner import read_model_path, read_position
from services.settings import Settings
from tests.canary import new_canaries, walk_every_event_type
from tests.e2e.test_serve import CBCM, START_WITHIN, Stack, stack, wait_until

__all__ = ["stack"]

# Everyone who may ask, as the embedded token issuer names them (see tests/canary.py).
CALLERS = {
    "coordinator": ("coord-1", "ocha", "coordinator"),
    "focal point (receiving agency)": ("fp-a1", "agency-a", "focal_point"),
    "focal point (holder)": ("fp-b1", "ngo-b", "focal_point"),
    "investigating entity": ("oig-1", "ngo-b", "investigating_entity"),
    "service provider": ("clinic-user", "clinic-1", "service_provider"),
    "auditor": ("aud-1", "ocha", "auditor"),
    "intake operator": ("hotline-7", "agency-a", "intake_operator"),
    "statistics reader": ("stats-1", "ocha", "statistics_reader"),
}


def _leaks(haystack: bytes, canaries: dict[str, str]) -> list[str]:
    return sorted(
        f
        for f, c in canaries.items()
        if c.encode() in haystack or c.removeprefix("CANARY-").encode() in haystack
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_canary_in_clear_at_rest_on_the_bus_in_logs_or_statistics_and_none_after_erasure(
    stack: Stack,
) -> None:
    # given the whole stack on a fresh data dir, and a workflow with a canary in every field
    wait_until(stack.ready, START_WITHIN, "/readyz")
    canaries = new_canaries()
    app = complaint_mechanism(Settings(data_dir=stack.data_dir))
    try:
        walk_every_event_type(app, canaries)
        last = app.recorder.max_notification_id() or 0
        received = [
            n.originator_id
            for n in app.recorder.select_notifications(start=1, limit=10_000)
            if n.topic.endswith("Case.Received")
        ]
    finally:
        app.close()
    main_case = str(received[0])

    # when the stack has published and projected all of it, and every role has read the case
    paths = [
        read_model_path(stack.data_dir, name)
        for name in ("inbox", "assistance", "stats", "register")
    ]
    wait_until(
        lambda: all(p.exists() and read_position(p) >= last for p in paths),
        60,
        "every read model at the last position",
    )
    tokens = {who: stack.issue(*caller) for who, caller in CALLERS.items()}
    granted = stack.post(
        f"/v1/cases/{main_case}/audit-grants",
        tokens["coordinator"],
        {"auditor": "aud-1", "reason": "custody audit"},
    )
    assert granted.status_code == 200, granted.text
    for token in tokens.values():
        stack.get(f"/v1/cases/{main_case}", token)
        stack.get(f"/v1/cases/{main_case}/history", token)
    # (the granted auditor sees the personal data: else the erasure below would prove nothing)
    audited = stack.get(f"/v1/cases/{main_case}", tokens["auditor"])
    assert audited.status_code == 200, audited.text
    assert "narrative" in _leaks(audited.content, canaries)
    exported = subprocess.run(
        [CBCM, "stats", "export", "--format", "json"],
        env=stack.env,
        capture_output=True,
        check=True,
    )
    assert json.loads(exported.stdout)

    # and the main case's personal data is then erased on a recorded decision
    erased = stack.post(
        f"/v1/cases/{main_case}/erasure",
        tokens["coordinator"],
        {
            "subjects": ["complainant", "survivor", "alleged_perpetrator", "case"],
            "reason": "network_decision",
        },
    )
    assert erased.status_code == 200, erased.text

    # then no role gets any of that case's canaries back, by any read
    main_fields = {
        f: c
        for f, c in canaries.items()
        if not f.startswith(("duplicate_", "feedback_"))  # the other cases' own fields
    }
    for who, token in tokens.items():
        for path in (
            f"/v1/cases/{main_case}",
            f"/v1/cases/{main_case}/history",
            f"/v1/inbox/cases/{main_case}",
            f"/v1/assistance/cases/{main_case}",
            "/v1/assistance/referrals",
        ):
            answer = stack.get(path, token)
            assert _leaks(answer.content, main_fields) == [], (who, path)
    history = stack.get(f"/v1/cases/{main_case}/history", tokens["coordinator"]).json()
    last = history["events"][-1]
    assert last["type"] == Case.PersonalDataErased.__qualname__
    assert "narrative" in next(e for e in history["events"] if e["version"] == 1)["erased"]

    # ... the log still verifies, and once the stack is stopped nothing anywhere holds a canary
    verified = subprocess.run(
        [CBCM, "audit", "verify", "--no-checkpoints"],
        env=stack.env,
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert stack.stop() == 0
    files = _files(stack.data_dir)
    witness = _files(Path(stack.env["CBCM_WITNESS_DIR"]))
    assert "checkpoints.sqlite3" in witness  # the witness's book (outside the data dir)
    files |= {f"witness/{name}": data for name, data in witness.items()}
    assert any(name.startswith("nats/") for name in files)  # the JetStream store was scanned
    assert "events.sqlite3" in files
    leaks = {name: _leaks(data, canaries) for name, data in files.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert _leaks(exported.stdout, canaries) == []
    assert _leaks(stack.log.read_bytes(), canaries) == []
