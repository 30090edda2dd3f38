"""``cbcm audit case`` and auditors' grants (issue #5, item 4), on SQLite and PostgreSQL.

A case is walked through the workflow (receive, assess, consent, transfer, refer for
investigation, acknowledge, feedback, a focal point's read of personal data), with a canary
in every personal field. The replay must tell its custody steps in plain words, in order,
naming who acted and who held the case, without a single personal value unless the auditor
holds the coordinator's grant for the case; give the state at a version or a time; and give
for each event the chain's evidence, which a damaged store must contradict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from domain.actors import Actor, Role
from domain.case import Allegation, CaseStatus
from domain.errors import ActionNotPermitted, InvalidCommand
from domain.network import NETWORK_ID
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    AgeBand,
    AllegationType,
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    FeedbackChannel,
    PersonnelCategory,
    Sex,
    SharedItem,
    TransferReason,
)
from services.api.app import create_app
from services.api.replay import ReplayError, render_text, replay_case
from services.application.mechanism import ComplaintMechanism
from services.audit.checkpoints import sign_checkpoint
from services.audit.keys import load_signing_key
from services.audit.verify import Attested, Damage
from services.audit.witness import WitnessBook
from services.event_store.chain import ChainRow, head, link_at
from services.event_store.store_id import store_id_of
from services.identity.tokens import issue_token
from services.settings import Settings
from tests.api_world import build_network, cheap_hasher
from tests.conftest import T0
from tests.integration.cli_runs import run_cbcm
from tests.integration.test_audit_chain import Dba
from tests.integration.walked_stores import Template, copy_of, make_template
from tests.world import COORDINATOR

CANARY = "CANARY-5e1b"
"""In every personal field: a leak is one substring search away."""

OPERATOR = Actor("op-unhcr", "unhcr", Role.INTAKE_OPERATOR)
FP_UNHCR = Actor("fp-unhcr", "unhcr", Role.FOCAL_POINT)
FP_WFP = Actor("fp-wfp", "wfp", Role.FOCAL_POINT)
INVESTIGATOR = Actor("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY)

STEPS = [
    "Case.Received",
    "Case.Assessed",
    "Case.ConsentGiven",
    "Case.Transferred",
    "Case.ReferredForInvestigation",
    "Case.InvestigationAcknowledged",
    "Case.FeedbackGiven",
    "PersonalDataReads.Read",
]


def minutes(n: int) -> Any:
    return T0 + timedelta(minutes=n)


@dataclass(frozen=True)
class Walked:
    case_id: UUID
    checkpoint: Attested
    """The head as signed right after the transfer (version 4), before further writes."""


def walk_a_case(app: ComplaintMechanism) -> Walked:
    build_network(app, T0 - timedelta(days=1))
    case_id = app.receive_complaint(
        actor=OPERATOR,
        at=minutes(1),
        received_at=minutes(0),
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=False,
        narrative=f"{CANARY} narrative",
        survivor=PersonDetails(name=f"{CANARY} name", phone=f"{CANARY} phone"),
    ).id
    app.assess_case(
        case_id,
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
            alleged_perpetrator=f"{CANARY} perpetrator",
        ),
        at=minutes(10),
    )
    app.give_consent(
        case_id,
        actor=FP_UNHCR,
        kind=ConsentKind.ASSISTANCE_REFERRAL,
        given_by=ConsentGiver.SURVIVOR,
        at=minutes(20),
    )
    app.transfer_case(
        case_id,
        actor=FP_UNHCR,
        to_agency="wfp",
        reason=TransferReason.CAPACITY,
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=minutes(30),
    )
    top = head(app.recorder)
    assert top is not None
    checkpoint = Attested(top.position, top.link, "2026-03-02T08:35:00Z")
    app.refer_for_investigation(
        case_id,
        actor=FP_WFP,
        entity="wfp-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY,),
        at=minutes(40),
    )
    app.acknowledge_investigation(case_id, actor=INVESTIGATOR, at=minutes(50))
    app.give_feedback(
        case_id,
        actor=FP_WFP,
        message=f"{CANARY} message",
        channel=FeedbackChannel.PHONE,
        at=minutes(60),
    )
    app.record_personal_data_read(
        case_id, actor=FP_WFP, fields=("narrative", "survivor.name"), purpose="case", at=minutes(70)
    )
    return Walked(case_id, checkpoint)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Template, Walked]]:
    """The case walked once per module and store, by the application; no test writes to it."""
    server = request.getfixturevalue("postgres_server_url") if request.param == "postgres" else None
    walks: list[Walked] = []
    root = tmp_path_factory.mktemp(f"walked-{request.param}")
    with make_template(
        request.param, root, server, lambda app: walks.append(walk_a_case(app))
    ) as made:
        yield made, walks[0]


@pytest.fixture
def settings(template: tuple[Template, Walked], tmp_path: Path) -> Iterator[Settings]:
    """A copy of the walked store and its data directory, the test's own (``app``, from
    ``tests/conftest.py``, opens the application on it)."""
    with copy_of(template[0], tmp_path) as copied:
        yield copied


@pytest.fixture
def walked(template: tuple[Template, Walked], app: ComplaintMechanism) -> Walked:
    return template[1]


def run_cli(settings: Settings, *args: str) -> Any:
    env = {"CBCM_DATA_DIR": str(settings.data_dir), "CBCM_EVENT_STORE": str(settings.event_store)}
    return run_cbcm(["audit", "case", *args], env=env)


# ---------------------------------------------------------------------------------- steps


def test_a_walked_case_replays_as_custody_steps_in_plain_words(
    app: ComplaintMechanism, walked: Walked
) -> None:
    # when an auditor without a grant replays the case
    replay = replay_case(app, walked.case_id)
    # then every step is there, in order, each naming who acted and who held the case
    assert [s.event for s in replay.steps] == STEPS
    holders = [s.holder for s in replay.steps]
    assert holders == ["unhcr"] * 3 + ["wfp"] * 5
    for step in replay.steps:
        assert step.actor is not None
        assert step.summary.startswith(f"{step.actor.user} (")
        assert step.summary.endswith(f"; held by {step.holder}")
    received, _, _, transfer, referral, _, _, read = (s.summary for s in replay.steps)
    assert received.startswith(
        "op-unhcr (intake operator of unhcr) recorded a complaint received by hotline on 2026-03-02"
    )
    assert transfer.startswith(
        "fp-unhcr (focal point of unhcr) transferred custody from unhcr to wfp "
        "(reason: capacity), sharing: allegation summary; the survivor's identity was not shared"
    )
    assert "referred the allegation to wfp-oig (investigating entity of wfp)" in referral
    assert read == (
        "fp-wfp (focal point of wfp) read personal data: narrative, survivor.name (case); "
        "held by wfp"
    )
    # and no personal value appears anywhere, but the fields it holds are named
    document = json.dumps(replay.to_json())
    assert CANARY not in document
    assert {"narrative", "survivor.name"} <= set(replay.steps[0].redacted)
    assert replay.revealed == ()


def test_the_state_is_given_at_a_version_or_a_time(app: ComplaintMechanism, walked: Walked) -> None:
    # at version 2: assessed, not yet transferred
    then = replay_case(app, walked.case_id, at_version=2)
    assert then.state is not None and then.state_version == 2
    assert then.state.assessment is not None
    assert then.state.custodian == "unhcr"
    assert then.state.consents == []
    assert len(then.steps) == len(STEPS)  # the whole history is still told
    # as of a time between the transfer and the referral: held by wfp, not yet referred
    transferred = replay_case(app, walked.case_id, as_of=minutes(35))
    assert transferred.state is not None and transferred.state_version == 4
    assert transferred.state.custodian == "wfp"
    assert transferred.state.investigation is None
    assert transferred.state.status is CaseStatus.UNDER_PRELIMINARY_ASSESSMENT
    assert CANARY not in transferred.state.model_dump_json()
    # what the history cannot answer is refused
    for asked in (
        {"at_version": 0},
        {"at_version": 8},
        {"as_of": minutes(0)},
        {"at_version": 2, "as_of": minutes(35)},
        {"as_of": minutes(35).replace(tzinfo=None)},
    ):
        with pytest.raises(ReplayError):
            replay_case(app, walked.case_id, **asked)


# ---------------------------------------------------------------------------------- evidence


def test_each_event_carries_its_evidence_in_the_chain(
    app: ComplaintMechanism, walked: Walked
) -> None:
    replay = replay_case(app, walked.case_id, checkpoints=[walked.checkpoint])
    for step in replay.steps:
        evidence = step.evidence
        # the position and link are the store's
        assert evidence.position == app.position_of(step.aggregate_id, step.version)
        stored = link_at(app.recorder, evidence.position)
        assert stored is not None and evidence.link == stored.link.hex()
        assert evidence.recomputes
        # events up to the checkpoint are attested by it; later ones are not yet covered
        if evidence.position <= walked.checkpoint.position:
            assert evidence.checkpoint is not None
            assert evidence.checkpoint.position == walked.checkpoint.position
            assert evidence.status.startswith("attested by the checkpoint at position")
        else:
            assert evidence.checkpoint is None
            assert evidence.status == "not yet covered by a checkpoint"
    assert [s.evidence.attested for s in replay.steps] == [True] * 4 + [False] * 4
    assert replay.verification is not None and replay.verification.checkpoints == 1
    # and the replay is intact, but not called verified: no checkpoint covers its end yet
    top = head(app.recorder)
    assert top is not None
    assert replay.verification.intact
    assert replay.verification.uncovered == (walked.checkpoint.position + 1, top.position)
    assert not replay.verified
    assert "INTACT, NOT YET VERIFIED" in render_text(replay)


def test_a_replay_is_verified_only_once_a_checkpoint_covers_its_whole_range(
    app: ComplaintMechanism, walked: Walked
) -> None:
    # given a case whose last steps no checkpoint covers yet (the head signed after its
    # fourth step)
    early = replay_case(app, walked.case_id, checkpoints=[walked.checkpoint])
    assert early.to_json()["verification"]["verified"] is False
    assert early.to_json()["verification"]["intact"] is True

    # when the head is signed
    top = head(app.recorder)
    assert top is not None
    signed = Attested(top.position, top.link, "2026-03-02T09:00:00Z")
    replay = replay_case(app, walked.case_id, checkpoints=[walked.checkpoint, signed])

    # then the replay is verified, and says so in its JSON and its text
    document = replay.to_json()["verification"]
    assert document["verified"] is True and document["uncovered"] is None
    assert replay.verified
    assert render_text(replay).rstrip().endswith("VERIFIED.")
    assert "NOT" not in render_text(replay).splitlines()[-1]


def test_a_checkpoint_the_store_contradicts_vouches_for_nothing(
    app: ComplaintMechanism, walked: Walked
) -> None:
    other = Attested(walked.checkpoint.position, bytes(32), "2026-03-02T08:35:00Z")
    replay = replay_case(app, walked.case_id, checkpoints=[other])
    assert not any(s.evidence.attested for s in replay.steps)
    assert not replay.verified
    assert replay.verification is not None
    assert Damage.CHANGED in {f.kind for f in replay.verification.findings}


def test_a_changed_byte_in_one_of_the_cases_events_is_named(
    app: ComplaintMechanism, walked: Walked
) -> None:
    # given a database administrator who changed one byte of the complaint as stored
    target = app.position_of(walked.case_id, 1)
    dba = Dba(app)
    oid, version, topic, state = dba.row(target)
    dba.drop_triggers()
    # (the personal data is sealed, and on PostgreSQL the whole state is ciphertext: any byte)
    middle = len(state) // 2
    damaged = state[:middle] + bytes([state[middle] ^ 0x01]) + state[middle + 1 :]
    assert len(damaged) == len(state) and damaged != state
    dba.set_row(target, oid, version, topic, damaged)
    # when the case is replayed
    replay = replay_case(app, walked.case_id, checkpoints=[walked.checkpoint])
    # then that event's link does not recompute, the others' do, and nothing is verified
    first = replay.steps[0]
    assert first.evidence.position == target
    assert not first.evidence.recomputes
    assert first.evidence.status.startswith("DAMAGED")
    assert all(s.evidence.recomputes for s in replay.steps[1:])
    assert not replay.verified
    assert replay.verification is not None
    assert (Damage.CHANGED, target) in {(f.kind, f.position) for f in replay.verification.findings}


def test_an_event_that_no_longer_decodes_is_a_step_not_a_crash(
    app: ComplaintMechanism, walked: Walked
) -> None:
    # given the transfer's reason changed into a value that is no reason at all
    target = app.position_of(walked.case_id, 4)
    dba = Dba(app)
    oid, version, topic, state = dba.row(target)
    dba.drop_triggers()
    # (a DBA who holds the whole-event cipher's key, where it is on, re-encrypts the edit)
    cipher = app.mapper.cipher
    plain = cipher.decrypt(state) if cipher else state
    assert b"capacity" in plain
    edited = plain.replace(b"capacity", b"capacitx", 1)
    dba.set_row(target, oid, version, topic, cipher.encrypt(edited) if cipher else edited)
    replay = replay_case(app, walked.case_id)
    # then the step says so, the state before it can still be rebuilt, the state after not
    broken = replay.steps[3]
    assert broken.event == "unreadable"
    assert not broken.evidence.recomputes
    assert replay.state is None and replay.state_note is not None
    assert replay_case(app, walked.case_id, at_version=3).state is not None
    assert not replay.verified


# ---------------------------------------------------------------------------------- grants


def test_only_the_coordinator_grants_an_auditor_a_cases_personal_data(
    app: ComplaintMechanism, walked: Walked
) -> None:
    with pytest.raises(ActionNotPermitted):
        app.grant_audit_access(
            walked.case_id, actor=FP_WFP, auditor="aud-1", reason="audit", at=minutes(80)
        )
    app.grant_audit_access(
        walked.case_id, actor=COORDINATOR, auditor="aud-1", reason="audit", at=minutes(80)
    )
    assert app.audit_grantees(walked.case_id) == {"aud-1"}
    with pytest.raises(InvalidCommand):  # granted once
        app.grant_audit_access(
            walked.case_id, actor=COORDINATOR, auditor="aud-1", reason="again", at=minutes(81)
        )
    app.revoke_audit_access(walked.case_id, actor=COORDINATOR, auditor="aud-1", at=minutes(82))
    assert app.audit_grantees(walked.case_id) == frozenset()
    with pytest.raises(InvalidCommand):  # nothing left to revoke
        app.revoke_audit_access(walked.case_id, actor=COORDINATOR, auditor="aud-1", at=minutes(83))
    # the case itself did not move: grants live beside it
    assert app.get_case(walked.case_id).version == 7


def test_the_cli_shows_personal_data_only_to_an_auditor_holding_a_grant(
    app: ComplaintMechanism, walked: Walked, settings: Settings
) -> None:
    # without a grant: redacted, and nothing recorded as read
    before = len(app.personal_data_reads(walked.case_id))
    refused = run_cli(settings, str(walked.case_id), "--json", "--auditor", "aud-1")
    assert refused.exit_code == 0, refused.stderr
    assert CANARY not in refused.stdout
    assert "holds no grant" in refused.stderr
    assert len(app.personal_data_reads(walked.case_id)) == before
    # with the coordinator's grant: shown, and the read is recorded first
    app.grant_audit_access(
        walked.case_id,
        actor=COORDINATOR,
        auditor="aud-1",
        reason=f"{CANARY} reason",
        at=minutes(80),
    )
    shown = run_cli(settings, str(walked.case_id), "--json", "--auditor", "aud-1")
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["state"]["case"]["narrative"] == f"{CANARY} narrative"
    assert document["personal_data"] == "shown"
    last = app.personal_data_reads(walked.case_id)[-1]
    assert last.actor == Actor("aud-1", "network", Role.AUDITOR)
    assert last.purpose == "audit replay"
    assert {"narrative", "survivor.name"} <= set(last.fields)
    summaries = [s["summary"] for s in document["steps"]]
    assert any(
        s.startswith("coord-1 (network coordinator, ocha) granted auditor aud-1") for s in summaries
    )
    assert summaries[-1].startswith("aud-1 (auditor, network) read personal data: ")
    # another auditor, and the same one after revocation: redacted again
    other = run_cli(settings, str(walked.case_id), "--json", "--auditor", "aud-2")
    assert CANARY not in other.stdout
    app.revoke_audit_access(walked.case_id, actor=COORDINATOR, auditor="aud-1", at=minutes(90))
    revoked = run_cli(settings, str(walked.case_id), "--json", "--auditor", "aud-1")
    assert revoked.exit_code == 0, revoked.stderr
    assert CANARY not in revoked.stdout


@pytest.fixture
def client(app: ComplaintMechanism, settings: Settings, walked: Walked) -> Iterator[TestClient]:
    api = create_app(settings, mechanism=app, receipt_hasher=cheap_hasher())
    with TestClient(api) as test_client:
        yield test_client


def bearer(settings: Settings, user: str, agency: str, role: Role) -> dict[str, str]:
    token = issue_token(settings.data_dir, user=user, agency=agency, roles=[role])
    return {"Authorization": f"Bearer {token}"}


def test_over_http_an_auditor_sees_personal_data_only_under_a_grant(
    app: ComplaintMechanism, walked: Walked, settings: Settings, client: TestClient
) -> None:
    case = f"/v1/cases/{walked.case_id}"
    auditor = bearer(settings, "aud-1", "ocha", Role.AUDITOR)
    coordinator = bearer(settings, "coord-1", "ocha", Role.COORDINATOR)
    grant = {"auditor": "aud-1", "reason": f"{CANARY} reason"}
    # without a grant: redacted
    assert client.get(case, headers=auditor).json()["narrative"] is None
    assert CANARY not in client.get(f"{case}/history", headers=auditor).text
    # the focal point holding the case may not grant (403); another agency's does not see it
    held_by = bearer(settings, "fp-wfp", "wfp", Role.FOCAL_POINT)
    stranger = bearer(settings, "fp-unhcr", "unhcr", Role.FOCAL_POINT)
    assert client.post(f"{case}/audit-grants", json=grant, headers=held_by).status_code == 403
    assert client.post(f"{case}/audit-grants", json=grant, headers=stranger).status_code == 404
    assert client.post(f"{case}/audit-grants", json=grant, headers=auditor).status_code == 403
    # the coordinator grants: the auditor sees the values, and each read is recorded
    granted = client.post(f"{case}/audit-grants", json=grant, headers=coordinator)
    assert granted.status_code == 200, granted.text
    view = client.get(case, headers=auditor).json()
    assert view["narrative"] == f"{CANARY} narrative"
    assert view["redacted"] == []
    read = app.personal_data_reads(walked.case_id)[-1]
    assert (read.actor.user, read.actor.role, read.purpose) == ("aud-1", Role.AUDITOR, "case")
    history = client.get(f"{case}/history", headers=auditor).json()
    assert history["events"][0]["data"]["narrative"] == f"{CANARY} narrative"
    assert app.personal_data_reads(walked.case_id)[-1].purpose == "history"
    # the coordinator revokes: redacted again
    revoked = client.delete(f"{case}/audit-grants/aud-1", headers=coordinator)
    assert revoked.status_code == 200, revoked.text
    assert client.get(case, headers=auditor).json()["narrative"] is None
    assert CANARY not in client.get(f"{case}/history", headers=auditor).text
    assert client.delete(f"{case}/audit-grants/aud-1", headers=coordinator).status_code == 422


def test_over_http_the_history_gives_each_events_place_in_the_chain(
    app: ComplaintMechanism, walked: Walked, settings: Settings, client: TestClient
) -> None:
    auditor = bearer(settings, "aud-1", "ocha", Role.AUDITOR)
    history = client.get(f"/v1/cases/{walked.case_id}/history", headers=auditor).json()
    for event in history["events"]:
        position = app.position_of(walked.case_id, event["version"])
        stored = link_at(app.recorder, position)
        assert stored is not None
        assert (event["position"], event["link"]) == (position, stored.link.hex())
        assert event["actor"]["user"] in event["summary"]
    assert [s["type"] for s in history["steps"]] == STEPS
    assert all(s["link_recomputes"] for s in history["steps"])
    assert history["steps"][3]["summary"].startswith(
        "fp-unhcr (focal point of unhcr) transferred custody from unhcr to wfp"
    )


# ---------------------------------------------------------------------------------- the CLI


def test_the_cli_prints_the_steps_the_state_and_the_evidence(
    walked: Walked, settings: Settings
) -> None:
    done = run_cli(settings, str(walked.case_id), "--at-version", "2")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    numbered = [line for line in lines if line.lstrip()[:2].rstrip(".").isdigit()]
    assert len(numbered) == len(STEPS)
    assert "op-unhcr (intake operator of unhcr) recorded a complaint" in numbered[0]
    assert "State at version 2" in done.stdout
    assert "custodian: unhcr" in done.stdout
    assert "Evidence: 8 events" in done.stdout
    # no checkpoint covers the case: intact, never called verified
    assert "INTACT, NOT YET VERIFIED" in done.stdout and "NOT VERIFIED" not in done.stdout
    assert CANARY not in done.stdout
    as_json = run_cli(settings, str(walked.case_id), "--json", "--as-of", minutes(35).isoformat())
    assert as_json.exit_code == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["state"]["version"] == 4
    assert [s["event"] for s in document["steps"]] == STEPS
    assert document["verification"]["verified"] is False
    assert document["verification"]["intact"] is True
    assert document["verification"]["uncovered"]["to"] == document["verification"]["head"]


def test_the_cli_takes_its_checkpoints_from_the_witness_book(
    app: ComplaintMechanism, walked: Walked, settings: Settings
) -> None:
    # given a witness that holds the head signed after the transfer (the witness checked the
    # signature when it received it)
    key = load_signing_key(settings)
    store = store_id_of(app.recorder)
    assert store is not None
    signed = sign_checkpoint(
        key,
        store,
        ChainRow(walked.checkpoint.position, 0, walked.checkpoint.link),
        minutes(35),
    )
    book_path = settings.data_dir.parent / "witness" / "checkpoints.sqlite3"
    with WitnessBook.open(book_path) as book:
        book.record([signed])
    # when the case is replayed from the command line
    done = run_cli(settings, str(walked.case_id), "--json", "--witness-db", str(book_path))
    # then the events up to it are attested by it
    assert done.exit_code == 0, done.stderr
    document = json.loads(done.stdout)
    attested = [s["evidence"]["attested"] for s in document["steps"]]
    assert attested == [True] * 4 + [False] * 4
    assert document["verification"]["checkpoints"] == 1


def test_bad_input_is_one_line_and_no_traceback(walked: Walked, settings: Settings) -> None:
    case = str(walked.case_id)
    for args in (
        ["not-a-case"],
        [case, "--at-version", "2", "--as-of", minutes(35).isoformat()],
        [case, "--at-version", "99"],
        [case, "--as-of", "2026-03-02T09:00:00"],
        [case, "--as-of", "yesterday"],
        [case, "--auditor", "Jane Doe"],
        [str(uuid4())],
        [str(NETWORK_ID)],  # stored, but no case
    ):
        done = run_cli(settings, *args)
        assert done.exit_code in (1, 2), (args, done.stdout, done.stderr)
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
        assert done.stderr.startswith("cbcm: error: ")
        assert "Traceback" not in done.stderr
        assert done.exception is None or isinstance(done.exception, SystemExit)
