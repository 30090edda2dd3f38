"""Sealed shares on the bus (issue #6): what a transfer or an investigation referral lets the
recipient see travels on its share subjects, sealed to its registered key, and nothing else.

Every test runs on SQLite and on a real PostgreSQL (``store_url``) against a real
nats-server started in a temp dir; the relay is the real one. Nothing sleeps and hopes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import nats
import nats.js.errors
import pytest
import structlog
from nacl.public import PrivateKey
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from contracts.catalogue import decode_message
from contracts.shares import decode_share, decode_withdrawal
from contracts.subjects import SHARES_STREAM, STREAM, share_subject
from domain.actors import Actor, Role
from domain.case import Allegation
from domain.personal_data import DataSubject, PersonDetails
from domain.vocabulary import (
    AgeBand,
    AgencyType,
    AllegationType,
    Channel,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    ErasureReason,
    FeedbackChannel,
    PersonnelCategory,
    Sex,
    SharedItem,
    TransferReason,
)
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.nats.client import TRANSIENT
from services.relay.relay import (
    APPLICATION_NAME,
    Relay,
    RelayStalled,
    ensure_shares_stream,
    ensure_stream,
    shares_stream_config,
)
from services.relay.share_keys import (
    ShareCannotBeOpened,
    ShareNotForThisKey,
    key_id_of,
    open_share,
    public_key_of,
)
from services.relay.sharing import NOTE, Share, Sharer
from tests.conftest import T0
from tests.world import COORDINATOR

INTAKE = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)
FOCAL = Actor("fp-unhcr-1", "unhcr", Role.FOCAL_POINT)

KEYED = ("wfp", "ngo-b")
"""Agencies that registered a share key; ngo-c registered none."""


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_stream(context)
    await ensure_shares_stream(context)
    return context


@dataclass
class World:
    app: ComplaintMechanism
    keys: dict[str, PrivateKey]
    clock: Callable[[], datetime]


@pytest.fixture
def world(app: ComplaintMechanism) -> World:
    ticks = itertools.count()

    def clock() -> datetime:
        return T0 + timedelta(minutes=next(ticks))

    keys = {agency: PrivateKey.generate() for agency in KEYED}
    app.establish_network(actor=COORDINATOR, name="Sharing network", at=clock())
    for code in ("unhcr", "wfp", "ngo-b", "ngo-c"):
        app.register_agency(
            actor=COORDINATOR, code=code, name=code.upper(), agency_type=AgencyType.UN_AGENCY,
            at=clock(),
        )  # fmt: skip
        app.designate_investigating_entity(
            actor=COORDINATOR, agency=code, entity=f"{code}-oig", at=clock()
        )
    app.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user=FOCAL.user, at=clock())
    for agency, key in keys.items():
        app.register_agency_share_key(
            actor=COORDINATOR, agency=agency, public_key=public_key_of(key), at=clock()
        )
    return World(app, keys, clock)


# ---------------------------------------------------------------------------------- helpers

CANARY = "CANARY-5e1c"


def received(world: World, role: ComplainantRole, implicated: str = "wfp") -> UUID:
    """A complaint with a canary in every personal field, assessed as an SEA allegation."""
    app, clock = world.app, world.clock
    said = clock()
    case_id = app.receive_complaint(
        actor=INTAKE,
        at=clock(),
        received_at=said,
        channel=Channel.HOTLINE,
        complainant_role=role,
        immediate_safety_risk=False,
        narrative=f"{CANARY} narrative",
        complainant=PersonDetails(
            name=f"{CANARY} complainant name", phone=f"{CANARY} complainant phone"
        ),
        survivor=PersonDetails(
            name=f"{CANARY} survivor name",
            phone=f"{CANARY} survivor phone",
            address=f"{CANARY} survivor address",
        ),
    ).id
    app.assess_case(
        case_id,
        actor=FOCAL,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=Allegation(
            allegation_type=AllegationType.SEXUAL_EXPLOITATION,
            subtype=None,
            child_involved=False,
            implicated_agency=implicated,
            personnel_category=PersonnelCategory.UN_STAFF,
            incident_date=None,
            incident_area="SO1101",
            victim_sex=Sex.FEMALE,
            victim_age_band=AgeBand.ADULT,
            incident_place_detail=f"{CANARY} place",
            alleged_perpetrator=f"{CANARY} perpetrator",
        ),
        at=clock(),
    )
    return case_id


def consent(world: World, case_id: UUID) -> None:
    world.app.give_consent(
        case_id,
        actor=COORDINATOR,
        kind=ConsentKind.IDENTITY_DISCLOSURE,
        given_by=ConsentGiver.SURVIVOR,
        at=world.clock(),
    )


def transfer(
    world: World, case_id: UUID, to: str, *shared: SharedItem, note: str | None = None
) -> int:
    """Transfer the case; the store position of the transfer."""
    return world.app.transfer_case(
        case_id,
        actor=COORDINATOR,
        to_agency=to,
        reason=TransferReason.IMPLICATED_AGENCY_CUSTODY,
        shared=(SharedItem.ALLEGATION_SUMMARY, *shared),
        note=note,
        at=world.clock(),
    ).position


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    msg_id: str
    data: bytes


async def stream(js: JetStreamContext, name: str) -> list[Stored]:
    """The messages ``name`` holds, by sequence (an empty stream, or a purged message, has
    none to read)."""
    info = await js.stream_info(name)
    out: list[Stored] = []
    if not info.state.messages:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(name, seq)
        except nats.js.errors.NotFoundError:
            continue
        assert raw.subject is not None and raw.data is not None and raw.headers is not None
        out.append(Stored(seq, raw.subject, raw.headers["Nats-Msg-Id"], raw.data))
    return out


async def publish_all(app: ComplaintMechanism, js: JetStreamContext) -> Relay:
    relay = Relay(app, js)
    await relay.publish_pending()
    return relay


def transferred_then_survivor_erased(world: World) -> tuple[UUID, int]:
    """A case transferred to ngo-b sharing the survivor's identity, the narrative, the
    complainant's identity and a note, then the survivor's data erased: (case, position of
    the transfer)."""
    case_id = received(world, ComplainantRole.WITNESS)
    consent(world, case_id)
    position = transfer(
        world,
        case_id,
        "ngo-b",
        SharedItem.SURVIVOR_IDENTITY,
        SharedItem.NARRATIVE,
        SharedItem.COMPLAINANT_IDENTITY,
        note=f"{CANARY} note",
    )
    world.app.erase_personal_data(
        case_id,
        actor=COORDINATOR,
        subjects=(DataSubject.SURVIVOR,),
        reason=ErasureReason.SURVIVOR_REQUEST,
        at=world.clock(),
    )
    return case_id, position


def published_positions(app: ComplaintMechanism) -> list[int]:
    return [
        n.id
        for n in app.recorder.select_notifications(1, 10**6)
        if is_published(app.mapper.to_domain_event(n))
    ]


def canaries_in(messages: list[Stored]) -> list[str]:
    return [m.subject for m in messages if CANARY.encode() in m.data + m.msg_id.encode()]


# ---------------------------------------------------------------------------------- tests


async def test_a_transfer_shares_exactly_what_the_recipient_may_see_sealed_to_its_key(
    world: World, js: JetStreamContext
) -> None:
    # given a witness's complaint transferred without disclosure consent, sharing the
    # complainant's identity and the perpetrator details, with a note
    without = received(world, ComplainantRole.WITNESS)
    first = transfer(
        world,
        without,
        "ngo-b",
        SharedItem.COMPLAINANT_IDENTITY,
        SharedItem.ALLEGED_PERPETRATOR_DETAILS,
        note=f"{CANARY} note",
    )
    # and a survivor's complaint transferred under disclosure consent sharing the survivor's
    # identity and the narrative, the consent withdrawn after the transfer
    with_consent = received(world, ComplainantRole.SURVIVOR)
    consent(world, with_consent)
    second = transfer(
        world, with_consent, "ngo-b", SharedItem.SURVIVOR_IDENTITY, SharedItem.NARRATIVE
    )
    world.app.withdraw_consent(
        with_consent, actor=COORDINATOR, kind=ConsentKind.IDENTITY_DISCLOSURE, at=world.clock()
    )

    # when the relay publishes the log
    await publish_all(world.app, js)

    # then one share per transfer is on ngo-b's share subject, with its position's message id
    shares = await stream(js, SHARES_STREAM)
    assert [s.subject for s in shares] == [
        share_subject("ngo-b", "case", "transferred", str(without)),
        share_subject("ngo-b", "case", "transferred", str(with_consent)),
    ]
    events = await stream(js, STREAM)
    store = events[0].msg_id.split(":")[0]
    assert [s.msg_id for s in shares] == [f"{store}:{first}:share", f"{store}:{second}:share"]
    # and ngo-b's key opens each to exactly the fields and values it may see
    key = world.keys["ngo-b"]
    opened = [open_share(s.data, key) for s in shares]
    assert opened[0].values == {
        "complainant.name": f"{CANARY} complainant name",
        "complainant.phone": f"{CANARY} complainant phone",
        "allegation.alleged_perpetrator": f"{CANARY} perpetrator",
        "allegation.incident_place_detail": f"{CANARY} place",
        NOTE: f"{CANARY} note",
    }
    # (as of the transfer: the consent withdrawn since does not reach back)
    assert opened[1].values == {
        "narrative": f"{CANARY} narrative",
        "survivor.name": f"{CANARY} survivor name",
    }
    assert [(o.case_id, o.recipient, o.erased) for o in opened] == [
        (without, "ngo-b", ()),
        (with_consent, "ngo-b", ()),
    ]
    assert [o.position for o in opened] == [first, second]
    assert [o.version for o in opened] == [
        world.app.get_case(c).version - d for c, d in ((without, 0), (with_consent, 1))
    ]
    # and another agency's key opens none of them
    for share in shares:
        with pytest.raises(ShareNotForThisKey):
            open_share(share.data, world.keys["wfp"])
        claimed = json.loads(share.data)
        claimed["data"]["key_id"] = key_id_of(world.keys["wfp"])
        with pytest.raises(ShareCannotBeOpened):
            open_share(json.dumps(claimed).encode(), world.keys["wfp"])
    # and no canary is in clear in any message of either stream
    assert canaries_in(events) == []
    assert canaries_in(shares) == []
    # and the events are the events, as before
    assert all(decode_message(e.data).position for e in events)


async def test_an_investigation_referral_shares_with_the_implicated_agency(
    world: World, js: JetStreamContext
) -> None:
    # given a case held by unhcr, implicating wfp, referred with the survivor's identity
    case_id = received(world, ComplainantRole.WITNESS, implicated="wfp")
    consent(world, case_id)
    referral = world.app.refer_for_investigation(
        case_id,
        actor=FOCAL,
        entity="wfp-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
        at=world.clock(),
    ).position

    # when the relay publishes
    await publish_all(world.app, js)

    # then the event stays under the holder, its share goes to wfp
    events = {decode_message(e.data).position: e.subject for e in await stream(js, STREAM)}
    assert events[referral] == "cbcm.v1.evt.unhcr.case.referred_for_investigation"
    shares = await stream(js, SHARES_STREAM)
    assert [s.subject for s in shares] == [
        share_subject("wfp", "case", "referred_for_investigation", str(case_id))
    ]
    opened = open_share(shares[0].data, world.keys["wfp"])
    assert opened.values == {"survivor.name": f"{CANARY} survivor name"}
    assert opened.event_type == "org.psea.cbcm.case.referred_for_investigation.v1"
    assert decode_share(shares[0].data).data.fields == ("survivor.name",)
    with pytest.raises(ShareNotForThisKey):
        open_share(shares[0].data, world.keys["ngo-b"])


async def test_no_key_no_share_one_warning_and_the_event_still_flows(
    world: World, js: JetStreamContext
) -> None:
    # given a transfer to ngo-c, which registered no key, and one to ngo-b, which did
    case_id = received(world, ComplainantRole.WITNESS)
    unkeyed = transfer(world, case_id, "ngo-c", SharedItem.COMPLAINANT_IDENTITY, note="hello")
    other = received(world, ComplainantRole.WITNESS)
    keyed = transfer(world, other, "ngo-b", SharedItem.COMPLAINANT_IDENTITY)

    # when the relay publishes
    with structlog.testing.capture_logs() as logs:
        relay = await publish_all(world.app, js)

    # then the transfer to ngo-c is in the event stream, and no share of it anywhere
    events = {decode_message(e.data).position: e.subject for e in await stream(js, STREAM)}
    assert events[unkeyed] == "cbcm.v1.evt.ngo-c.case.transferred"
    shares = await stream(js, SHARES_STREAM)
    assert [open_share(s.data, world.keys["ngo-b"]).position for s in shares] == [keyed]
    assert relay.sharer.without_key == 1
    # and one warning says so, naming the agency and the position only
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warnings == [
        {
            "event": "relay.share_without_key",
            "agency": "ngo-c",
            "position": unkeyed,
            "log_level": "warning",
        }
    ]
    # and the relay's position is past everything
    assert await relay.recorded_position() == world.app.recorder.max_notification_id()


async def test_a_share_follows_the_key_registered_when_its_step_was_recorded(
    world: World, js: JetStreamContext
) -> None:
    # given a transfer to ngo-c before it had a key, then one after it registered a key,
    # then one after it replaced that key: all published in one pass, afterwards
    before = transfer(world, received(world, ComplainantRole.WITNESS), "ngo-c", note="one")
    first_key, second_key = PrivateKey.generate(), PrivateKey.generate()
    world.app.register_agency_share_key(
        actor=COORDINATOR, agency="ngo-c", public_key=public_key_of(first_key), at=world.clock()
    )
    after = transfer(world, received(world, ComplainantRole.WITNESS), "ngo-c", note="two")
    world.app.register_agency_share_key(
        actor=COORDINATOR, agency="ngo-c", public_key=public_key_of(second_key), at=world.clock()
    )
    replaced = transfer(world, received(world, ComplainantRole.WITNESS), "ngo-c", note="three")

    # when a relay publishes the whole log
    await publish_all(world.app, js)

    # then each share is sealed to the key of its time, none to a key not yet registered
    shares = await stream(js, SHARES_STREAM)
    assert [decode_share(s.data).data.key_id for s in shares] == [
        key_id_of(first_key),
        key_id_of(second_key),
    ]
    assert open_share(shares[0].data, first_key).position == after
    assert open_share(shares[1].data, second_key).position == replaced
    assert before < after
    with pytest.raises(ShareNotForThisKey):
        open_share(shares[0].data, second_key)


async def test_an_erased_cases_shares_are_withdrawn_and_the_recipient_told(
    world: World, js: JetStreamContext
) -> None:
    # given a transfer sharing the survivor's identity, the narrative, the complainant's
    # identity and a note, then the survivor's data erased before the relay got to it
    case_id, _ = transferred_then_survivor_erased(world)

    # when the relay publishes
    await publish_all(world.app, js)

    # then the erasure is published, the case's share withdrawn from the stream, and the
    # recipient told to erase what it kept of it
    types = [decode_message(e.data).type for e in await stream(js, STREAM)]
    assert types[-1] == "org.psea.cbcm.case.personal_data_erased.v1"
    shares = await stream(js, SHARES_STREAM)
    assert [s.subject for s in shares] == [
        share_subject("ngo-b", "case", "share_withdrawn", str(case_id))
    ]
    notice = decode_withdrawal(shares[0].data)
    assert notice.type == "org.psea.cbcm.case.share_withdrawn.v1"
    assert notice.data.recipient == "ngo-b" and notice.data.subjects == ("survivor",)
    assert canaries_in(shares) == []


async def test_a_share_sealed_after_an_erasure_names_what_was_erased_and_sends_none_of_it(
    world: World, js: JetStreamContext
) -> None:
    # given a transfer sharing the survivor's identity, the narrative, the complainant's
    # identity and a note, the survivor's data erased before the relay reads it
    case_id, position = transferred_then_survivor_erased(world)

    # when the relay seals the transfer's share (it reads up to it only)
    relay = Relay(world.app, js)
    share = relay.sharer.share_of(
        world.app.case_history(case_id)[-2], position, "urn:cbcm:store:test"
    )

    # then the share holds what is left and names what was erased, sending none of it
    assert share is not None
    opened = open_share(share.payload, world.keys["ngo-b"])
    assert opened.values == {
        "complainant.name": f"{CANARY} complainant name",
        "complainant.phone": f"{CANARY} complainant phone",
        NOTE: f"{CANARY} note",
    }
    assert opened.erased == ("narrative", "survivor.name")
    assert decode_share(share.payload).data.erased == ("narrative", "survivor.name")


async def test_the_position_passes_a_share_only_once_it_is_stored_and_nothing_goes_twice(
    app: ComplaintMechanism,
    world: World,
    nc: NatsClient,
    reopen: Callable[[], ComplaintMechanism],
) -> None:
    # given a share stream that takes no share yet (its subjects miss them) and some log
    js = nc.jetstream(timeout=2)
    await ensure_stream(js)
    await js.add_stream(StreamConfig(name=SHARES_STREAM, subjects=["cbcm.v1.share.nobody.>"]))
    plain = received(world, ComplainantRole.WITNESS)
    shared = transfer(world, plain, "ngo-b", SharedItem.COMPLAINANT_IDENTITY)
    world.app.give_feedback(
        plain,
        actor=COORDINATOR,
        message="we are on it",
        channel=FeedbackChannel.PHONE,
        at=world.clock(),
    )
    referred = received(world, ComplainantRole.WITNESS)
    consent(world, referred)
    referral = world.app.refer_for_investigation(
        referred,
        actor=COORDINATOR,
        entity="wfp-oig",
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
        at=world.clock(),
    ).position
    world.app.acknowledge_investigation(referred, actor=COORDINATOR, at=world.clock())
    last = app.recorder.max_notification_id()
    assert last is not None and shared < referral < last

    # when a relay publishes: the events are stored, the shares are refused
    relay = Relay(app, js, publish_timeout=2)
    with pytest.raises(TRANSIENT):
        await relay.publish_pending()

    # then every event is in the stream, but the recorded position stops before the share
    events = await stream(js, STREAM)
    assert decode_message(events[-1].data).position == last
    before_share = max(n.id for n in app.recorder.select_notifications(1, 10**6) if n.id < shared)
    assert await relay.recorded_position() == before_share

    # when the share stream is fixed and a new relay (a restart, cold caches) publishes
    await ensure_shares_stream(js)
    restarted = Relay(reopen(), js)
    assert await restarted.publish_pending() == 0  # every event was already stored

    # then the events were not sent again, and each share is stored once, in order
    assert len(await stream(js, STREAM)) == len(events)
    shares = await stream(js, SHARES_STREAM)
    store = events[0].msg_id.split(":")[0]
    assert [s.msg_id for s in shares] == [f"{store}:{shared}:share", f"{store}:{referral}:share"]
    assert await restarted.recorded_position() == last

    # when a relay whose position was lost publishes again
    rewound = Relay(reopen(), js, tracking_name=f"{APPLICATION_NAME}-rewound")
    assert await rewound.publish_pending() == 0

    # then nothing was sent twice: one share per position
    assert [s.msg_id for s in await stream(js, SHARES_STREAM)] == [s.msg_id for s in shares]
    assert await rewound.recorded_position() == last
    # and a share re-sent with its message id within the duplicate window is dropped
    ack = await js.publish(
        shares[0].subject, shares[0].data, headers={"Nats-Msg-Id": shares[0].msg_id}
    )
    assert ack.duplicate and ack.seq == shares[0].seq
    assert len(await stream(js, SHARES_STREAM)) == 2


async def test_the_share_stream_expires_shares_and_ensuring_it_twice_is_harmless(
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    first = await ensure_shares_stream(js, max_age_days=30)
    again = await ensure_shares_stream(js, max_age_days=30)
    assert first.config.max_age == again.config.max_age == 30 * 86_400
    assert again.config.subjects == ["cbcm.v1.share.>"]
    # a new max_age is applied to the existing stream
    shorter = await ensure_shares_stream(js, max_age_days=0.5)
    assert shorter.config.max_age == 43_200
    assert shares_stream_config(max_age_days=0.5).duplicate_window == 120
    assert shares_stream_config(max_age_days=0.0005).duplicate_window == pytest.approx(43.2)


async def test_a_share_that_waited_across_an_erasure_carries_what_is_left(
    app: ComplaintMechanism,
    world: World,
    nc: NatsClient,
    reopen: Callable[[], ComplaintMechanism],
) -> None:
    # given a relay that read a transfer sharing the survivor's identity, whose share the
    # stream does not take yet (the relay keeps it pending)
    js = nc.jetstream(timeout=2)
    await ensure_stream(js)
    await js.add_stream(StreamConfig(name=SHARES_STREAM, subjects=["cbcm.v1.share.nobody.>"]))
    case_id = received(world, ComplainantRole.WITNESS)
    consent(world, case_id)
    transfer(world, case_id, "ngo-b", SharedItem.SURVIVOR_IDENTITY, note=f"{CANARY} note")
    relay = Relay(app, js, publish_timeout=2)
    with pytest.raises(TRANSIENT):
        await relay.publish_pending()

    # when another process erases the case's personal data meanwhile, then the share goes out
    other = reopen()
    other.erase_personal_data(
        case_id,
        actor=COORDINATOR,
        subjects=tuple(DataSubject),
        reason=ErasureReason.NETWORK_DECISION,
        at=world.clock(),
    )
    await js.delete_stream(SHARES_STREAM)
    await ensure_shares_stream(js)
    await relay.publish_pending()

    # then nothing erased went out: the share, sealed again, was withdrawn after the erasure
    # and only the notice is left
    shares = await stream(js, SHARES_STREAM)
    assert [decode_withdrawal(s.data).type for s in shares] == [
        "org.psea.cbcm.case.share_withdrawn.v1"
    ]
    assert canaries_in(shares) == []


async def test_a_share_after_a_share_withdrawal_is_published_across_relay_restarts(
    world: World, js: JetStreamContext, reopen: Callable[[], ComplaintMechanism]
) -> None:
    # given a case shared with ngo-b, published; then its personal data erased, published
    # (the share withdrawn: the notice is the share stream's last message)
    first, _ = transferred_then_survivor_erased(world)
    await publish_all(world.app, js)
    shares = await stream(js, SHARES_STREAM)
    assert [s.subject for s in shares] == [
        share_subject("ngo-b", "case", "share_withdrawn", str(first))
    ]
    store = shares[0].msg_id.split(":")[0]
    erasure = world.app.recorder.max_notification_id()
    assert shares[0].msg_id == f"{store}:{erasure}:withdrawn:ngo-b"

    # when another case is shared with ngo-b and a restarted relay (it reads the tails back)
    # publishes it, and once more after a second restart
    second = received(world, ComplainantRole.WITNESS)
    position = transfer(world, second, "ngo-b", SharedItem.COMPLAINANT_IDENTITY)
    restarted = Relay(reopen(), js)
    await restarted.publish_pending()
    third = received(world, ComplainantRole.WITNESS)
    later = transfer(world, third, "wfp", SharedItem.COMPLAINANT_IDENTITY)
    assert await Relay(reopen(), js).publish_pending() > 0

    # then both shares follow the notice, once each, and the position is past everything
    shares = await stream(js, SHARES_STREAM)
    assert [s.msg_id for s in shares] == [
        f"{store}:{erasure}:withdrawn:ngo-b",
        f"{store}:{position}:share",
        f"{store}:{later}:share",
    ]
    assert open_share(shares[1].data, world.keys["ngo-b"]).case_id == second
    assert open_share(shares[2].data, world.keys["wfp"]).case_id == third
    assert await restarted.recorded_position() == world.app.recorder.max_notification_id()
    assert decode_message((await stream(js, STREAM))[-1].data).position == later


async def test_a_recipient_without_a_key_is_logged_once_per_agency_not_once_per_share(
    world: World, js: JetStreamContext
) -> None:
    # given three transfers to ngo-c and two investigation referrals to unhcr, neither of
    # which registered a key
    to_ngo_c = [
        transfer(world, received(world, ComplainantRole.WITNESS), "ngo-c", note=f"n{i}")
        for i in range(3)
    ]
    to_unhcr = []
    for _ in range(2):
        case_id = received(world, ComplainantRole.WITNESS, implicated="unhcr")
        consent(world, case_id)
        to_unhcr.append(
            world.app.refer_for_investigation(
                case_id,
                actor=FOCAL,
                entity="unhcr-oig",
                shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
                at=world.clock(),
            ).position
        )

    # when the relay publishes them, then ngo-c registers a key and is transferred one more
    with structlog.testing.capture_logs() as logs:
        relay = await publish_all(world.app, js)
        ngo_c_key = PrivateKey.generate()
        world.app.register_agency_share_key(
            actor=COORDINATOR, agency="ngo-c", public_key=public_key_of(ngo_c_key), at=world.clock()
        )
        keyed = transfer(world, received(world, ComplainantRole.WITNESS), "ngo-c", note="keyed")
        await relay.publish_pending()

    # then each agency without a key was named once, at its first share, though five shares
    # were not sent
    assert relay.sharer.without_key == 5
    assert [
        (entry["agency"], entry["position"])
        for entry in logs
        if entry["event"] == "relay.share_without_key"
    ] == [("ngo-c", to_ngo_c[0]), ("unhcr", to_unhcr[0])]
    # and once ngo-c has a key its share goes out
    shares = await stream(js, SHARES_STREAM)
    assert [open_share(s.data, ngo_c_key).position for s in shares] == [keyed]


@pytest.mark.parametrize("failing", ["sealing", "resealing", "withdrawing"])
async def test_a_share_the_relay_cannot_seal_or_withdraw_stops_it_there_until_fixed(
    world: World,
    js: JetStreamContext,
    reopen: Callable[[], ComplaintMechanism],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    failing: str,
) -> None:
    # given a case shared with ngo-b then erased, and a relay whose sealing (when it reads
    # the transfer, or right before sending its share) or withdrawal fails with a bug
    case_id, shared = transferred_then_survivor_erased(world)
    erasure = world.app.recorder.max_notification_id()
    assert erasure is not None

    def bug(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"{CANARY} in an error text")

    share_of = Sharer.share_of

    def sealing_bug(sharer: Sharer, event: Any, position: int, source: str) -> Share | None:
        if position == shared:
            bug()
        return share_of(sharer, event, position, source)

    if failing == "sealing":
        monkeypatch.setattr(Sharer, "share_of", sealing_bug)
    elif failing == "resealing":
        monkeypatch.setattr(Sharer, "reseal", bug)
    else:
        monkeypatch.setattr("services.relay.relay.withdrawal_notice", bug)
    stops_at = erasure if failing == "withdrawing" else shared

    # when a relay publishes
    relay = Relay(world.app, js, data_dir=tmp_path)
    with pytest.raises(RelayStalled) as stalled:
        await relay.publish_pending()

    # then it stops at that step: recorded up to the position before it, no share out
    assert stalled.value.poison.position == stops_at
    assert stalled.value.poison.error == "RuntimeError"
    assert CANARY not in str(stalled.value)
    assert await relay.recorded_position() < stops_at
    public = published_positions(world.app)
    in_stream = [decode_message(e.data).position for e in await stream(js, STREAM)]
    if failing == "withdrawing":  # the erasure is stored before its shares are withdrawn
        assert in_stream == public
    else:
        assert in_stream == [p for p in public if p < shared]
    shares = await stream(js, SHARES_STREAM)
    assert [s.msg_id.split(":", 1)[1] for s in shares] == (
        [f"{shared}:share"] if failing == "withdrawing" else []
    )

    # when the fix is deployed and a relay restarted
    monkeypatch.undo()
    await Relay(reopen(), js, data_dir=tmp_path).publish_pending()

    # then the step is done: the share was sent and withdrawn, only the notice is left
    shares = await stream(js, SHARES_STREAM)
    assert [s.subject for s in shares] == [
        share_subject("ngo-b", "case", "share_withdrawn", str(case_id))
    ]
    assert canaries_in(shares) == []
    assert [decode_message(e.data).position for e in await stream(js, STREAM)] == public


async def test_shares_stored_before_a_withdrawal_notice_are_not_sent_again(
    world: World, js: JetStreamContext, reopen: Callable[[], ComplaintMechanism]
) -> None:
    # given one pass over a shared case erased, then two more cases shared: their shares are
    # stored in the window before the erasure's notice is sent
    first, _ = transferred_then_survivor_erased(world)
    later = [
        transfer(world, received(world, ComplainantRole.WITNESS), "ngo-b", note=f"later {i}")
        for i in range(2)
    ]
    await publish_all(world.app, js)
    before = await stream(js, SHARES_STREAM)
    assert [s.msg_id.split(":", 1)[1] for s in before][:2] == [f"{p}:share" for p in later]
    assert before[-1].subject == share_subject("ngo-b", "case", "share_withdrawn", str(first))

    # when a relay whose position was lost publishes again (it reads the notice at the tail)
    with structlog.testing.capture_logs() as logs:
        rewound = Relay(reopen(), js, tracking_name=f"{APPLICATION_NAME}-rewound")
        await rewound.publish_pending()

    # then it finds the later shares stored and sends none of them again
    assert [e["event"] for e in logs if e["event"].startswith("relay.window")] == []
    assert await stream(js, SHARES_STREAM) == before
    assert await rewound.recorded_position() == world.app.recorder.max_notification_id()
