"""The second attacker review of custody (issue 15, ADR 14), each attack a test on SQLite and
PostgreSQL that the defence must hold against, through what a user of cbcm sees.

- A6/A6b: a made-up erasure event, or another record's genuine erasure copied as a live
  case's next event with a correct link (INSERT grant only), must hide nothing and be named
  as forged.
- A4/A4b/A4c: the owner moves the writer key's record past a forged or rewritten event
  (keeping every mark): verify must alarm, the publisher must not sign over it.
- A2: the log's tail cut at a commit boundary with its marks left: verify says truncated.
- A5: rotating the KEK must not rewrap data keys the log erased (rows put back).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from services.application.mechanism import ComplaintMechanism
from services.event_store.chain import link_hash
from services.event_store.personal_data.erasure_log import CASE_ERASED
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import T0
from tests.integration.test_custody import (
    Dba,
    complaint,
    erase_everyone,
    every_read_path,
    verify_chain_alone,
)

SUBJECTS = ["complainant", "survivor", "alleged_perpetrator", "case"]


def _insert_event(
    app: ComplaintMechanism, oid: UUID, version: int, topic: str, state: bytes, *, link: bool
) -> int:
    """What the INSERT grant allows: an event (and, if ``link``, its correct chain link)."""
    dba = Dba(app)
    ev, ch = dba.tables["events"], dba.tables["chain"]
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(
            dba.q(
                f"INSERT INTO {ev} (originator_id, originator_version, topic, state) "
                f"VALUES (?, ?, ?, ?) RETURNING {pos}"
            ),
            (oid.hex if dba.sqlite else oid, version, topic, state),
        )
        position = int(dba.values(c.fetchone())[0])
        if link:
            c.execute(f"SELECT position, link FROM {ch} ORDER BY position DESC LIMIT 1")
            previous, last = dba.values(c.fetchone())
            linked = link_hash(
                bytes(last),
                position=position,
                originator_id=oid,
                version=version,
                topic=topic,
                state=state,
            )
            c.execute(
                dba.q(f"INSERT INTO {ch} VALUES (?, ?, ?)"), (position, int(previous), linked)
            )
    return position


# ------------------------------------------------------------------ A6: forged erasures


def test_a_made_up_erasure_event_hides_no_live_case(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a live case
    build_network(app, T0 - timedelta(days=1))
    victim = complaint(app, "CANARY-live", at=1)
    assert "CANARY-live narrative" in every_read_path(reopen(), settings, victim)

    # when someone with the INSERT grant makes up an erasure event naming it (encrypted as
    # the store's events are, as if they also held the whole-event cipher's key)
    state = json.dumps({"records": [str(victim)], "subjects": SUBJECTS}).encode()
    cipher = app.mapper.cipher
    stored = state if cipher is None else cipher.encrypt(state)
    forged_at = _insert_event(app, uuid4(), 1, CASE_ERASED, stored, link=True)

    # then every read path still shows the live case's data, and verify names the forgery
    shown = every_read_path(reopen(), settings, victim)
    assert "CANARY-live narrative" in shown
    assert "CANARY-live name" in shown
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"first bad position {forged_at}: forged" in done.output
    assert "put back" not in done.output


def test_another_records_erasure_copied_as_a_live_cases_next_event_erases_nothing(
    app: ComplaintMechanism, settings: Settings, reopen: Any
) -> None:
    # given a live case, and another case whose personal data was erased
    build_network(app, T0 - timedelta(days=1))
    victim = complaint(app, "CANARY-victim", at=1)
    other = complaint(app, "CANARY-other", at=5)
    erase_everyone(app, other)

    # when the other case's erasure event is copied byte for byte (ciphertext) as the
    # victim's next event, with a correct link (the INSERT grant)
    dba = Dba(app)
    pos = "rowid" if dba.sqlite else "notification_id"
    with dba.sql() as c:
        c.execute(
            dba.q(
                f"SELECT state FROM {dba.tables['events']} WHERE topic = ? "
                f"ORDER BY {pos} DESC LIMIT 1"
            ),
            (CASE_ERASED,),
        )
        (state,) = dba.values(c.fetchone())
    version = app.get_case(victim).version + 1
    forged_at = _insert_event(app, victim, version, CASE_ERASED, bytes(state), link=True)

    # then the victim's data is still shown, and verify names the copy as forged
    shown = every_read_path(reopen(), settings, victim)
    assert "CANARY-victim narrative" in shown
    done = verify_chain_alone(settings)
    assert done.exit_code == 4, done.output
    assert f"{forged_at}: forged" in done.output
    assert "put back" not in done.output
