"""Notices in the custody trail (issue #18): the trail shows that the network was alerted, and
when. On SQLite and PostgreSQL.

The notices are sent by the real notifier (its intake and its sender, a channel that accepts
every message standing in for the SMTP server), then read back through ``cbcm audit case``,
``GET /v1/cases/{id}/history`` and a case bundle. The attacks: a notice about one case in
another case's trail, a reader who may not see a case's history, a database administrator who
deletes, changes or moves a notice's row, and an exporter who leaves a notice out of a bundle.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from domain.actors import Actor, Role
from domain.case import Allegation
from domain.case_notices import case_notices_id
from domain.notification import Notification
from domain.vocabulary import (
    AgeBand,
    AllegationType,
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    NotificationChannel,
    NotificationDelivery,
    NotificationKind,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
    TransferReason,
)
from services.api.app import create_app
from services.api.replay import Step, case_steps, render_text, replay_case, stored_with_positions
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.audit.checkpoints import sign_checkpoint, tree_head
from services.audit.keys import LogIdentity, load_signing_key, witness_vkey
from services.audit.verify import Attested
from services.audit.witness import Cosigner, WitnessBook
from services.cli.main import cli
from services.event_store import chain
from services.event_store.chain import head, link_at
from services.event_store.store_id import store_id
from services.identity.tokens import issue_token
from services.notify.intake import NotifierIntake
from services.notify.sender import Sender
from services.projector.runner import apply_batch, open_projection
from services.relay.translation import to_cloud_event
from services.settings import Settings
from tests.api_world import build_network, cheap_hasher
from tests.conftest import T0
from tests.integration.test_audit_chain import Dba
from tests.unit.test_notify_exactly_once import RecordingChannel
from tests.world import COORDINATOR

OPERATOR = Actor("op-unhcr", "unhcr", Role.INTAKE_OPERATOR)
FP_UNHCR = Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
REGISTERED = ("fp-unhcr", "fp-unhcr-1", "fp-wfp", "fp-wfp-1")
"""Focal points with an e-mail address; fp-unhcr-2 has none: its notices are given up."""
ADDRESS_MARK = "@mail.cbcm.test"
"""In every registered address: an address in a trail is one substring search away."""


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Notifier:
    """The real notifier's intake and sender over the application's log, with a clock."""

    def __init__(self, app: ComplaintMechanism, folder: Path) -> None:
        self.app = app
        self.intake = NotifierIntake(now=T0 - timedelta(days=1), history_grace=timedelta(days=2))
        self.db = open_projection(self.intake, folder / "notify.sqlite3")
        self.channel = RecordingChannel()

    def run(self, now: datetime) -> None:
        """Take in every published event (as the relay publishes them) and send what is due."""
        messages = []
        for n in self.app.recorder.select_notifications(start=1, limit=100_000):
            event = self.app.mapper.to_domain_event(n)
            if is_published(event):
                messages.append((n.id, to_cloud_event(event, source="urn:t", position=n.id)))
        positions = [p for p, _ in messages]
        previous = dict(zip(positions[1:], positions, strict=False))
        done = apply_batch(self.intake, self.db, messages, previous)
        assert done.gap is None and done.stall is None
        sender = Sender(
            self.db,
            self.app,
            {NotificationChannel.EMAIL: self.channel},
            base_url="https://cbcm.test",
            max_attempts=3,
            retry_base=1,
            retry_max=1,
            clock=lambda: now,
        )

        async def drain() -> None:
            while await sender.run_once():
                pass

        asyncio.run(drain())


def register_contacts(app: ComplaintMechanism) -> None:
    for user in REGISTERED:
        agency = "unhcr" if "unhcr" in user else "wfp"
        app.register_staff_contact(
            actor=COORDINATOR,
            user=user,
            organisation=agency,
            role=Role.FOCAL_POINT,
            email=f"{user}{ADDRESS_MARK}",
            phone=None,
            channels=(NotificationChannel.EMAIL,),
            quiet_hours=None,
            delivery=NotificationDelivery.IMMEDIATE,
            at=T0 - timedelta(hours=1),
        )


def receive(app: ComplaintMechanism, minute: int, *, urgent: bool) -> UUID:
    return app.receive_complaint(
        actor=OPERATOR,
        at=at(minute),
        received_at=at(minute),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.ANONYMOUS,
        immediate_safety_risk=urgent,
        narrative="what was said",
    ).id


def notices_in_log(app: ComplaintMechanism) -> dict[UUID, set[UUID]]:
    """Every notice about a case, by case, from a scan of the whole log (the ground truth)."""
    found: dict[UUID, set[UUID]] = {}
    for n in app.recorder.select_notifications(start=1, limit=1_000_000):
        event = app.mapper.to_domain_event(n)
        if isinstance(event, Notification.Sent | Notification.GivenUp) and event.case_id:
            found.setdefault(event.case_id, set()).add(event.originator_id)
    return found


def notice_steps(steps: tuple[Step, ...] | list[Step]) -> list[Step]:
    return [s for s in steps if s.record == "notification"]


@pytest.fixture
def told(app: ComplaintMechanism, tmp_path: Path) -> tuple[UUID, UUID, Notifier]:
    """An urgent case received by unhcr and transferred to wfp, and a quiet one, each told."""
    build_network(app, T0 - timedelta(days=1))
    register_contacts(app)
    notifier = Notifier(app, tmp_path)
    urgent = receive(app, 0, urgent=True)
    quiet = receive(app, 2, urgent=False)
    notifier.run(at(1))
    app.transfer_case(
        urgent,
        actor=FP_UNHCR,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(30),
    )
    notifier.run(at(31))
    return urgent, quiet, notifier


def bearer(settings: Settings, user: str, agency: str, role: Role) -> dict[str, str]:
    token = issue_token(settings.data_dir, user=user, agency=agency, roles=[role])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(app: ComplaintMechanism, settings: Settings) -> Iterator[TestClient]:
    api = create_app(settings, mechanism=app, receipt_hasher=cheap_hasher())
    with TestClient(api) as test_client:
        yield test_client


# ---------------------------------------------------------------------------------- the trail


def test_the_trail_says_who_was_alerted_of_what_how_and_when_in_order_with_the_case(
    app: ComplaintMechanism, told: tuple[UUID, UUID, Notifier]
) -> None:
    urgent, _, _ = told
    top = head(app.recorder)
    assert top is not None
    # when an auditor replays the urgent case against a checkpoint of the head
    replay = replay_case(
        app, urgent, checkpoints=[Attested(top.position, top.link, "2026-03-02T09:00:00Z")]
    )
    # then the notices sit among the case's steps, in time order: received, the unhcr focal
    # points alerted (one without an address: given up), transferred, the wfp ones alerted
    kinds = [(s.event, s.notice.agency if s.notice else None) for s in replay.steps]
    assert kinds == [
        ("Case.Received", None),
        *[("Notification.GivenUp", "unhcr")],
        *[("Notification.Sent", "unhcr")] * 2,
        ("Case.Transferred", None),
        *[("Notification.Sent", "wfp")] * 2,
    ]
    sent = [s for s in notice_steps(replay.steps) if s.notice and s.notice.recipient == "fp-unhcr"]
    assert [s.summary for s in sent] == [
        "focal point fp-unhcr of unhcr alerted: 1 urgent case (immediate safety risk), by "
        "e-mail, at 2026-03-02T08:01:00+00:00; delivered after 1 try; held by unhcr"
    ]
    [given_up] = [s for s in replay.steps if s.event == "Notification.GivenUp"]
    assert given_up.summary == (
        "focal point fp-unhcr-2 of unhcr NOT alerted: 1 urgent case (immediate safety risk), "
        "given up at 2026-03-02T08:01:00+00:00, undelivered after 0 tries (no address "
        "registered); held by unhcr"
    )
    transfer = [s for s in notice_steps(replay.steps) if s.notice and s.notice.agency == "wfp"]
    assert {s.notice.kind for s in transfer if s.notice} == {"transfer_received"}
    assert all("1 case transferred to them" in s.summary for s in transfer)
    # and each notice is in the chain at its own position, attested by the checkpoint
    truth = notices_in_log(app)[urgent]
    assert {s.aggregate_id for s in notice_steps(replay.steps)} == truth
    for step in notice_steps(replay.steps):
        [(position, _)] = stored_with_positions(app.recorder, step.aggregate_id)
        stored = link_at(app.recorder, position)
        assert stored is not None
        assert (step.evidence.position, step.evidence.link) == (position, stored.link.hex())
        assert step.evidence.attested
    assert replay.verified
    assert replay.verification is not None and replay.verification.intact
    # and no address, anywhere
    assert ADDRESS_MARK not in json.dumps(replay.to_json()) + render_text(replay)


def test_the_cli_and_the_history_list_the_notices_with_their_places_in_the_chain(
    app: ComplaintMechanism,
    told: tuple[UUID, UUID, Notifier],
    settings: Settings,
    client: TestClient,
) -> None:
    urgent, _, _ = told
    env = {"CBCM_DATA_DIR": str(settings.data_dir), "CBCM_EVENT_STORE": str(settings.event_store)}
    # the auditor's replay, as text and as JSON
    text = CliRunner().invoke(cli, ["audit", "case", str(urgent)], env=env)
    assert text.exit_code == 0, text.output
    assert "[notification]  focal point fp-wfp of wfp alerted: 1 case transferred" in text.output
    as_json = CliRunner().invoke(cli, ["audit", "case", str(urgent), "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    steps = json.loads(as_json.stdout)["steps"]
    notices = [s for s in steps if s["record"] == "notification"]
    assert len(notices) == 5
    assert {n["notice"]["delivered"] for n in notices} == {True, False}
    assert all(n["evidence"]["link"] and n["evidence"]["recomputes"] for n in notices)
    # the history over HTTP: the same steps, for the focal point holding the case
    history = client.get(
        f"/v1/cases/{urgent}/history", headers=bearer(settings, "fp-wfp", "wfp", Role.FOCAL_POINT)
    )
    assert history.status_code == 200, history.text
    listed = [s for s in history.json()["steps"] if s["record"] == "notification"]
    assert [(s["position"], s["summary"]) for s in listed] == [
        (n["evidence"]["position"], n["summary"]) for n in notices
    ]
    assert {s["notice"]["channels"][0] for s in listed if s["notice"]["delivered"]} == {"email"}
    assert ADDRESS_MARK not in history.text + text.output + as_json.stdout


# ---------------------------------------------------------------------------------- attacks


def test_a_notice_about_one_case_never_appears_in_anothers_trail(
    app: ComplaintMechanism,
    told: tuple[UUID, UUID, Notifier],
    settings: Settings,
    client: TestClient,
) -> None:
    urgent, quiet, _ = told
    truth = notices_in_log(app)
    assert truth[urgent] and truth[quiet] and not truth[urgent] & truth[quiet]
    for case in (urgent, quiet):
        listed = {s.aggregate_id for s in notice_steps(replay_case(app, case).steps)}
        assert listed == truth[case]
    # over HTTP, the unhcr focal point holding the quiet case sees its notices only
    history = client.get(
        f"/v1/cases/{quiet}/history",
        headers=bearer(settings, "fp-unhcr", "unhcr", Role.FOCAL_POINT),
    ).json()
    ids = {UUID(s["aggregate_id"]) for s in history["steps"] if s["record"] == "notification"}
    assert ids == truth[quiet]
    assert not any(str(n) in json.dumps(history) for n in truth[urgent])
    assert str(urgent) not in json.dumps(history)


def test_a_reader_who_may_not_see_the_history_gets_none_of_its_notices(
    app: ComplaintMechanism,
    told: tuple[UUID, UUID, Notifier],
    settings: Settings,
    client: TestClient,
) -> None:
    urgent, _, _ = told  # held by wfp since the transfer
    truth = notices_in_log(app)[urgent]
    path = f"/v1/cases/{urgent}/history"
    # the holder's focal point sees them (the control: the attack below can fail)
    seen = client.get(path, headers=bearer(settings, "fp-wfp", "wfp", Role.FOCAL_POINT)).json()
    assert {UUID(s["aggregate_id"]) for s in seen["steps"] if s["notice"]} == truth
    # the agency that gave the case away, an agency that never held it, the investigating
    # entity, the intake operator who recorded it and a statistics reader see nothing of it
    for who in (
        ("fp-unhcr", "unhcr", Role.FOCAL_POINT),
        ("fp-ngo-1", "ngo-a", Role.FOCAL_POINT),
        ("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY),
        ("op-unhcr", "unhcr", Role.INTAKE_OPERATOR),
        ("stats-1", "ocha", Role.STATISTICS_READER),
    ):
        refused = client.get(path, headers=bearer(settings, *who))
        assert refused.status_code in (403, 404), (who, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.text
        assert not any(str(n) in body for n in truth), who
        assert "alerted" not in body and "fp-wfp" not in body, who


def test_a_deleted_notice_row_is_named_missing_not_silently_dropped(
    app: ComplaintMechanism,
    told: tuple[UUID, UUID, Notifier],
    settings: Settings,
    client: TestClient,
) -> None:
    urgent, _, _ = told
    victim = sorted(notices_in_log(app)[urgent])[0]
    [(position, _)] = stored_with_positions(app.recorder, victim)
    # given a database administrator who deleted the notice's row (its link stays)
    dba = Dba(app)
    dba.drop_triggers()
    dba.delete(position)
    # when the case is replayed
    replay = replay_case(app, urgent)
    # then the trail has a step saying the notice is missing, and nothing is intact
    [missing] = [s for s in replay.steps if s.event == "missing"]
    assert missing.aggregate_id == victim and missing.record == "notification"
    assert missing.evidence.missing and not missing.evidence.attested
    assert "MISSING" in missing.summary and "1 MISSING from the log" in render_text(replay)
    assert replay.verification is not None
    assert not replay.verification.intact and not replay.verified
    assert any(str(victim) in m for m in replay.verification.missing)
    # and the history over HTTP says so too
    history = client.get(
        f"/v1/cases/{urgent}/history", headers=bearer(settings, "fp-wfp", "wfp", Role.FOCAL_POINT)
    ).json()
    [gone] = [s for s in history["steps"] if s["missing"]]
    assert gone["aggregate_id"] == str(victim)


def test_a_deleted_notice_row_with_its_link_and_a_relinked_chain_is_still_named_missing(
    app: ComplaintMechanism, told: tuple[UUID, UUID, Notifier]
) -> None:
    urgent, _, _ = told
    victim = sorted(notices_in_log(app)[urgent])[-1]
    [(position, _)] = stored_with_positions(app.recorder, victim)
    # a careful DBA removes the row and its link and recomputes every link after it
    dba = Dba(app)
    dba.drop_triggers()
    dba.delete(position, link_too=True)
    dba.relink_from(position + 1)
    replay = replay_case(app, urgent)
    assert [s.aggregate_id for s in replay.steps if s.event == "missing"] == [victim]
    assert replay.verification is not None and not replay.verification.intact


def test_a_changed_notice_row_is_named_damaged(
    app: ComplaintMechanism, told: tuple[UUID, UUID, Notifier]
) -> None:
    urgent, _, _ = told
    victim = sorted(notices_in_log(app)[urgent])[1]
    [(position, _)] = stored_with_positions(app.recorder, victim)
    dba = Dba(app)
    dba.drop_triggers()
    dba.change_one_byte(position)
    replay = replay_case(app, urgent)
    [step] = [s for s in replay.steps if s.aggregate_id == victim]
    assert not step.evidence.recomputes and step.evidence.status.startswith("DAMAGED")
    assert not replay.verified


def test_a_notice_moved_to_another_case_is_a_finding_in_the_first_and_absent_from_the_second(
    app: ComplaintMechanism, told: tuple[UUID, UUID, Notifier]
) -> None:
    urgent, quiet, _ = told
    victim = sorted(notices_in_log(app)[urgent])[0]
    [(position, _)] = stored_with_positions(app.recorder, victim)
    # given a DBA holding the keys who rewrote the notice as one about the quiet case
    dba = Dba(app)
    oid, version, topic, state = dba.row(position)
    dba.drop_triggers()
    cipher = app.mapper.cipher
    plain = cipher.decrypt(state) if cipher else state
    assert str(urgent).encode() in plain
    moved = plain.replace(str(urgent).encode(), str(quiet).encode())
    dba.set_row(position, oid, version, topic, cipher.encrypt(moved) if cipher else moved)
    dba.relink_from(position)
    # then the urgent case's trail says its index names a notice about another case
    replay = replay_case(app, urgent)
    [odd] = [s for s in replay.steps if s.aggregate_id == victim]
    assert "not a notice about this case" in odd.summary and odd.notice is None
    assert replay.verification is not None and not replay.verification.intact
    # and the quiet case's trail does not take it: its own index never named it
    assert victim not in {s.aggregate_id for s in replay_case(app, quiet).steps}


# ---------------------------------------------------------------------------------- bundles


def test_a_bundle_holds_the_notices_and_an_exporter_cannot_leave_one_out_unseen(
    app: ComplaintMechanism,
    told: tuple[UUID, UUID, Notifier],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urgent, _, _ = told
    origin = "cbcm.test/log/notices"
    monkeypatch.setenv("CBCM_AUDIT_LOG_ORIGIN", origin)
    env = {
        "CBCM_DATA_DIR": str(settings.data_dir),
        "CBCM_EVENT_STORE": str(settings.event_store),
        "CBCM_AUDIT_LOG_ORIGIN": origin,
        "CBCM_WITNESS_DIR": str(tmp_path / "no-witness-here"),
    }
    key = load_signing_key(settings)
    log = LogIdentity(origin, key.public_key())
    witness = Cosigner("unicef.witness.cbcm.invalid", Ed25519PrivateKey.generate())
    top = chain.head(app.recorder)
    assert top is not None
    first = app.recorder.select_notifications(1, 1)[0]
    checkpoint = sign_checkpoint(
        key, store_id(first), top, datetime.now(UTC), tree_head(app.recorder, origin, top)
    )
    book = tmp_path / "witness" / "checkpoints.sqlite3"
    with WitnessBook.open(book) as opened:
        opened.record([checkpoint], log=log, cosigner=witness)
    w = witness_vkey(witness.name, witness.key)
    out = tmp_path / "case.bundle.json"
    export = ["audit", "export", str(urgent), "--out", str(out), "--witness-db", str(book)]
    done = CliRunner().invoke(cli, [*export, "--witness", w], env=env)
    assert done.exit_code == 0, done.output
    bundle = json.loads(out.read_text())
    truth = notices_in_log(app)[urgent]
    held = {UUID(hex=e["originator_id"]) for e in bundle["events"]}
    assert truth <= held and case_notices_id(urgent) in held
    verified = CliRunner().invoke(
        cli, ["audit", "verify-bundle", str(out), "--witness", w], env=env
    )
    assert verified.exit_code == 0, verified.output
    assert f"notices about the case: {len(truth)}" in verified.output

    def without_notice(also_replay: bool) -> Path:
        copy = json.loads(out.read_text())
        gone = sorted(truth)[0]
        copy["events"] = [e for e in copy["events"] if e["originator_id"] != gone.hex]
        if also_replay:
            copy["replay"]["steps"] = [
                s for s in copy["replay"]["steps"] if s["aggregate_id"] != str(gone)
            ]
        path = tmp_path / f"left-out-{also_replay}.json"
        path.write_text(json.dumps(copy))
        return path

    # a notice left out of the events while the replay still lists it: refused
    refused = CliRunner().invoke(
        cli, ["audit", "verify-bundle", str(without_notice(False)), "--witness", w], env=env
    )
    assert refused.exit_code == 4 and "does not hold" in refused.output
    # left out of both: the case's index still names it, where the index is readable alone
    # (no whole-event cipher: the embedded SQLite store); with the cipher only the network
    # can read the index, and the auditor compares with a replay of their own
    hidden = CliRunner().invoke(
        cli, ["audit", "verify-bundle", str(without_notice(True)), "--witness", w], env=env
    )
    if app.mapper.cipher is None:
        assert hidden.exit_code == 4 and "index of notices names" in hidden.output
    else:
        assert hidden.exit_code == 0


# ---------------------------------------------------------------------------------- search

AGENCY_OPERATORS = {a: Actor(f"op-{a}", a, Role.INTAKE_OPERATOR) for a in ("unhcr", "wfp")}
KINDS = (
    NotificationKind.NEW_CASE,
    NotificationKind.URGENT_CASE,
    NotificationKind.TRANSFER_RECEIVED,
    NotificationKind.ACTION_OVERDUE,
    NotificationKind.INVESTIGATION_REFERRAL,
)
notice_step = st.tuples(
    st.just("notify"),
    st.lists(
        st.tuples(
            st.integers(0, 7),  # which case (of those received so far), or none
            st.sampled_from(("fp-unhcr", "fp-unhcr-1", "fp-wfp", "inv-wfp")),
            st.sampled_from(KINDS),
            st.booleans(),  # sent, or given up
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),  # one commit for the batch, or one each
)
SERIAL = itertools.count()
"""Makes each notice's subject new (the examples share one store)."""
program = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), st.sampled_from(("unhcr", "wfp")), st.booleans()),
        notice_step,
        st.tuples(st.just("again"), st.integers(0, 50)),
        st.tuples(st.just("digest"), st.sampled_from(("coord-1", "fp-unhcr"))),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=program)
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_trail_lists_exactly_the_notices_the_log_holds_for_the_case(
    app: ComplaintMechanism, steps: list[tuple[Any, ...]]
) -> None:
    # given cases and notices about them recorded as the sender records them (in batches
    # across cases, one by one, again after a crash, and digests about no case)
    if app.recorder.select_notifications(1, 1) == []:
        build_network(app, T0 - timedelta(days=1))
    clock = [datetime.now(UTC)]
    cases: list[UUID] = []
    recorded: list[Notification] = []

    def tick() -> datetime:
        clock[0] += timedelta(seconds=7)
        return clock[0]

    def notice(case: UUID | None, user: str, kind: NotificationKind, sent: bool) -> Any:
        about = f"{case or clock[0].date()}:{kind.value}:{next(SERIAL)}"
        common = {"recipient": user, "kind": kind, "about": about, "case_id": case}
        if sent:
            return Notification.sent(
                **common,
                urgent=kind is NotificationKind.URGENT_CASE,
                count=1,
                channels=(NotificationChannel.EMAIL,),
                attempts=1,
                at=tick(),
            )
        return Notification.given_up(
            **common, urgent=False, count=1, attempts=3, reason="send_failed", at=tick()
        )

    for step in steps:
        match step:
            case ("receive", agency, urgent):
                cases.append(
                    app.receive_complaint(
                        actor=AGENCY_OPERATORS[agency],
                        at=tick(),
                        received_at=clock[0],
                        channel=Channel.HOTLINE,
                        complainant_role=ComplainantRole.ANONYMOUS,
                        immediate_safety_risk=urgent,
                        narrative="what was said",
                    ).id
                )
            case ("notify", wanted, batch):
                made = [
                    notice(cases[i % len(cases)] if cases else None, user, kind, sent)
                    for i, user, kind, sent in wanted
                ]
                if batch:
                    app.record_notifications(made)
                else:
                    for one in made:
                        assert app.record_notification(one) is not None
                recorded.extend(made)
            case ("again", index) if recorded:
                # the same notice (recipient, kind, subject) recorded again, as after a crash
                # between the send and the log's commit: the log keeps the first
                [(_, stored)] = stored_with_positions(
                    app.recorder, recorded[index % len(recorded)].id
                )
                first = app.mapper.to_domain_event(stored)
                again = Notification.sent(
                    recipient=first.recipient,
                    kind=first.kind,
                    about=first.about,
                    case_id=first.case_id,
                    urgent=False,
                    count=1,
                    channels=(NotificationChannel.EMAIL,),
                    attempts=2,
                    at=tick(),
                )
                assert app.record_notification(again) is None
            case ("digest", user):
                app.record_notification(notice(None, user, NotificationKind.DIGEST, True))
    # then each case's trail lists exactly the notices the log holds about it, once each,
    # in time order among its events, none missing
    truth = notices_in_log(app)
    for case in cases:
        steps_of = case_steps(app, case)
        listed = [s.aggregate_id for s in notice_steps(steps_of)]
        assert len(listed) == len(set(listed))
        assert set(listed) == truth.get(case, set())
        assert not any(s.evidence.missing for s in steps_of)
        order = [(s.at, s.evidence.position) for s in steps_of if s.at is not None]
        assert order == sorted(order)


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_two_writers_telling_about_one_case_at_once_lose_no_notice_from_its_index(
    app: ComplaintMechanism, reopen: Any
) -> None:
    # given one case, and two notifier processes (a lease hand-over) recording notices about
    # it at the same moment, each through its own application on the same store
    build_network(app, T0 - timedelta(days=1))
    case = receive(app, 0, urgent=False)
    other = reopen()
    barrier = threading.Barrier(2)

    def tell(writer: ComplaintMechanism, who: str) -> None:
        barrier.wait()
        for n in range(12):
            writer.record_notifications(
                [
                    Notification.sent(
                        recipient=who,
                        kind=NotificationKind.ACTION_OVERDUE,
                        about=f"{case}:assess:{n}",
                        case_id=case,
                        urgent=False,
                        count=1,
                        channels=(NotificationChannel.EMAIL,),
                        attempts=1,
                        at=at(1 + n),
                    )
                ]
            )

    threads = [
        threading.Thread(target=tell, args=(writer, who))
        for writer, who in ((app, "fp-unhcr"), (other, "fp-unhcr-1"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then every notice is in the log and in the case's trail, once
    truth = notices_in_log(app)[case]
    assert len(truth) == 24
    listed = [s.aggregate_id for s in notice_steps(case_steps(app, case))]
    assert sorted(listed) == sorted(truth)


def test_an_index_entry_deleted_and_the_chain_relinked_leaves_the_replay_unverified(
    app: ComplaintMechanism, told: tuple[UUID, UUID, Notifier]
) -> None:
    # given a checkpoint signed after the notices (the publisher signs every 30 s)
    urgent, _, _ = told
    top = head(app.recorder)
    assert top is not None
    signed = Attested(top.position, top.link, "2026-03-02T09:00:00Z")
    assert replay_case(app, urgent, checkpoints=[signed]).verified
    # when a DBA deletes the index's last entry with its link and relinks the chain after it,
    # so that the transfer's notices drop out of the trail without a MISSING step
    [*_, (position, _)] = stored_with_positions(app.recorder, case_notices_id(urgent))
    dba = Dba(app)
    dba.drop_triggers()
    dba.delete(position, link_too=True)
    dba.relink_from(position + 1)
    replay = replay_case(app, urgent, checkpoints=[signed])
    # then the replay is not verified: the checkpoint no longer matches the store
    assert not replay.verified
    assert replay.verification is not None and replay.verification.findings


def test_referral_and_deadline_notices_name_the_entity_the_provider_and_the_action(
    app: ComplaintMechanism,
) -> None:
    # given a case assessed as an allegation against wfp staff, referred for investigation
    # and for medical assistance, and the notices the notifier records for those steps
    build_network(app, T0 - timedelta(days=1))
    case = receive(app, 0, urgent=False)
    app.assess_case(
        case,
        actor=FP_UNHCR,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=Allegation(
            allegation_type=AllegationType.SEXUAL_EXPLOITATION,
            subtype=None,
            child_involved=False,
            implicated_agency="wfp",
            personnel_category=PersonnelCategory.UN_STAFF,
            incident_date=None,
            incident_area="SO22",
            victim_sex=Sex.FEMALE,
            victim_age_band=AgeBand.ADULT,
        ),
        at=at(10),
    )
    app.give_consent(
        case,
        actor=FP_UNHCR,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=at(11),
    )
    investigation = app.refer_for_investigation(
        case,
        actor=FP_UNHCR,
        entity="wfp-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=at(12),
    )
    referral = app.refer_for_assistance(
        case,
        actor=FP_UNHCR,
        service_type=ServiceType.MEDICAL,
        provider="med-a",
        area="SO22",
        share_contact=False,
        at=at(13),
    ).id

    def sent(user: str, kind: NotificationKind, about: str, minute: int) -> Notification:
        return Notification.sent(
            recipient=user,
            kind=kind,
            about=about,
            case_id=case,
            urgent=False,
            count=1,
            channels=(NotificationChannel.EMAIL, NotificationChannel.SMS),
            attempts=2,
            at=at(minute),
        )

    app.record_notifications(
        [
            sent("inv-wfp", NotificationKind.INVESTIGATION_REFERRAL, f"{case}:v4", 14),
            sent("nurse-a", NotificationKind.ASSISTANCE_REFERRAL, str(referral), 14),
        ]
    )
    assert investigation.version == 4
    app.record_notification(
        sent("fp-unhcr", NotificationKind.ACTION_DUE_SOON, f"{case}:feedback:20260401T080000Z", 20)
    )
    # when the case is replayed, then each names whom it went to as what, and for which agency
    told = {s.notice.kind: s.summary for s in replay_case(app, case).steps if s.notice}
    assert told["investigation_referral"].startswith(
        "investigating entity inv-wfp of wfp alerted: 1 referral for investigation, by e-mail "
        "and by SMS, at 2026-03-02T08:14:00+00:00; delivered after 2 tries"
    )
    assert told["assistance_referral"].startswith(
        "service provider nurse-a of med-a alerted: 1 assistance referral"
    )
    assert told["action_due_soon"].startswith(
        "focal point fp-unhcr of unhcr alerted: 1 action due soon (feedback, due "
        "2026-04-01T08:00+00:00)"
    )
