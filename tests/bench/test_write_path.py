"""Write path: commands per second through the application service, next to a raw
eventsourcing Application on the same kind of store, measured in the same run (issue #2).

The cbcm side sets up a network (not timed), then times a realistic mix of commands over many
cases, stage by stage as a case load would move: receive, assess (SEA allegation), consent,
refer for investigation, acknowledge, outcome, feedback, close.

The raw side is a plain ``eventsourcing.application.Application`` with the library's default
JSON transcoder and repository settings, and a trivial declarative aggregate whose events are
padded to the average stored size measured from the cbcm run (created and later events
separately, from the first round; the averages over the whole run are printed for both and
checked to agree within 2%). It repeats the cbcm run's saves one for one, in the same order and
with the same number of events per save: a new aggregate, then for each later command
``repository.get`` + one event + ``save``. So both sides do load + decide/trigger + save on a
fresh store of the same kind with the same persistence environment.

The timed cases are split into rounds that alternate cbcm and raw, so that drift on a shared
machine (other processes, disk) falls on both alike. Each side is warmed up first.

Figures are printed, not asserted; only sanity is checked (counts match, every case closed).
``CBCM_BENCH_CASES`` overrides the number of timed cases; ``CBCM_BENCH_PROFILE=1`` also prints
a cProfile of extra cbcm cases run after the timings.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.case import Allegation
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    AgeBand,
    AgencyType,
    AllegationSubtype,
    AllegationType,
    Channel,
    ClosureReason,
    ComplainantRole,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    FeedbackChannel,
    InvestigationOutcome,
    PersonnelCategory,
    ServiceType,
    Sex,
    SharedItem,
)
from services.application.mechanism import ComplaintMechanism, Written
from services.event_store.config import describe, persistence_env
from services.settings import Settings
from tests.bench.results import Figure, Target, quick, record
from tests.conftest import T0
from tests.world import COORDINATOR

pytestmark = pytest.mark.bench

CASES = {"sqlite": 1000, "postgres": 600}
WARMUP_CASES = 20
ROUNDS = 4
PROFILE_CASES = 60

AGENCIES = {
    "unhcr": ("UNHCR", AgencyType.UN_AGENCY, "unhcr-ig"),
    "wfp": ("WFP", AgencyType.UN_AGENCY, "wfp-oig"),
    "intl-ngo": ("International NGO", AgencyType.INTERNATIONAL_NGO, "intl-ngo-inv"),
    "natl-ngo": ("National NGO", AgencyType.NATIONAL_NGO, "natl-ngo-inv"),
}

QUICK_CASES = {"sqlite": 300, "postgres": 200}


def _cases(kind: str) -> int:
    return int(os.environ.get("CBCM_BENCH_CASES", (QUICK_CASES if quick() else CASES)[kind]))


# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class Save:
    """One save of a timed run: which case, whether it was created, how many events."""

    case: int
    created: bool
    events: int


@dataclass(frozen=True)
class Timing:
    commands: int
    events: int
    seconds: float

    @property
    def commands_per_s(self) -> float:
        return self.commands / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class StoredSizes:
    """Average ``len(state)`` of stored events, for version-1 (created) and later events."""

    created: float
    later: float
    overall: float
    count: int


def stored_sizes(app: Application[UUID], after: int) -> StoredSizes:
    created: list[int] = []
    later: list[int] = []
    start = after + 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=500)
        if not batch:
            break
        for n in batch:
            (created if n.originator_version == 1 else later).append(len(n.state))
        start = batch[-1].id + 1
    both = created + later
    return StoredSizes(
        created=sum(created) / max(len(created), 1),
        later=sum(later) / max(len(later), 1),
        overall=sum(both) / max(len(both), 1),
        count=len(both),
    )


def last_position(app: Application[UUID]) -> int:
    return app.recorder.max_notification_id() or 0


# ---------------------------------------------------------------- the cbcm workload


def set_up_network(app: ComplaintMechanism) -> None:
    """Network, agencies with investigating entities and focal points, one provider."""
    at = T0 - timedelta(days=30)
    app.establish_network(actor=COORDINATOR, name="Bench PSEA network", at=at)
    for code, (name, agency_type, entity) in AGENCIES.items():
        app.register_agency(actor=COORDINATOR, code=code, name=name, agency_type=agency_type, at=at)
        app.designate_investigating_entity(actor=COORDINATOR, agency=code, entity=entity, at=at)
        for n in (1, 2):
            app.appoint_focal_point(actor=COORDINATOR, agency=code, user=f"fp-{code}-{n}", at=at)
    app.register_service_provider(
        actor=COORDINATOR,
        code="clinic-1",
        name="Clinic",
        service_types=(ServiceType.MEDICAL, ServiceType.PSYCHOSOCIAL),
        areas=("SO1101", "SO1102"),
        at=at,
    )


@dataclass(frozen=True)
class CaseScript:
    """Everything a case's commands say, prepared before timing."""

    agency: str
    implicated: str
    channel: Channel
    narrative: str
    survivor: PersonDetails | None
    outcome: InvestigationOutcome
    feedback: str

    @property
    def intake(self) -> Actor:
        return Actor(f"intake-{self.agency}", self.agency, Role.INTAKE_OPERATOR)

    @property
    def focal_point(self) -> Actor:
        return Actor(f"fp-{self.agency}-1", self.agency, Role.FOCAL_POINT)

    @property
    def investigator(self) -> Actor:
        return Actor(f"inv-{self.implicated}", self.implicated, Role.INVESTIGATING_ENTITY)

    @property
    def allegation(self) -> Allegation:
        return Allegation(
            allegation_type=AllegationType.SEXUAL_EXPLOITATION,
            subtype=AllegationSubtype.TRANSACTIONAL_SEX,
            child_involved=False,
            implicated_agency=self.implicated,
            personnel_category=PersonnelCategory.UN_STAFF,
            incident_date=date(2026, 2, 14),
            incident_area="SO1101",
            victim_sex=Sex.FEMALE,
            victim_age_band=AgeBand.ADULT,
        )


def _words(rnd: random.Random, low: int, high: int) -> str:
    n = rnd.randint(low, high)
    return " ".join(
        "".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(n)
    )


def scripts(count: int, seed: int) -> list[CaseScript]:
    rnd = random.Random(seed)
    codes = list(AGENCIES)
    out = []
    for i in range(count):
        agency = codes[i % len(codes)]
        out.append(
            CaseScript(
                agency=agency,
                implicated=rnd.choice(codes),
                channel=rnd.choice(list(Channel)),
                narrative=_words(rnd, 15, 120),
                survivor=(
                    PersonDetails(name=_words(rnd, 2, 3), phone=f"+25261{rnd.randrange(10**7):07d}")
                    if rnd.random() < 0.6
                    else None
                ),
                outcome=rnd.choice(list(InvestigationOutcome)),
                feedback=_words(rnd, 8, 40),
            )
        )
    return out


Stage = Callable[[ComplaintMechanism, CaseScript, UUID, datetime], Written]

STAGES: tuple[Stage, ...] = (
    lambda app, s, cid, at: app.assess_case(
        cid,
        actor=s.focal_point,
        category=ComplaintCategory.SEA_ALLEGATION,
        allegation=s.allegation,
        at=at,
    ),
    lambda app, s, cid, at: app.give_consent(
        cid,
        actor=s.focal_point,
        kind=ConsentKind.IDENTITY_DISCLOSURE,
        given_by=ConsentGiver.SURVIVOR,
        at=at,
    ),
    lambda app, s, cid, at: app.refer_for_investigation(
        cid,
        actor=s.focal_point,
        entity=AGENCIES[s.implicated][2],
        shared=(SharedItem.ALLEGATION_SUMMARY, SharedItem.SURVIVOR_IDENTITY),
        at=at,
    ),
    lambda app, s, cid, at: app.acknowledge_investigation(cid, actor=s.investigator, at=at),
    lambda app, s, cid, at: app.record_investigation_outcome(
        cid, actor=s.investigator, outcome=s.outcome, at=at
    ),
    lambda app, s, cid, at: app.give_feedback(
        cid, actor=s.focal_point, message=s.feedback, channel=FeedbackChannel.PHONE, at=at
    ),
    lambda app, s, cid, at: app.close_case(
        cid, actor=s.focal_point, reason=ClosureReason.INVESTIGATION_CONCLUDED, at=at
    ),
)


def run_cbcm(
    app: ComplaintMechanism, cases: list[CaseScript], start: datetime
) -> tuple[list[Save], list[UUID], float]:
    """All cases through every stage, stage by stage. Returns the saves, the case ids and
    the seconds spent in the application's commands."""
    saves: list[Save] = []
    ids: list[UUID] = []
    versions: list[int] = []
    t = time.perf_counter()
    for i, s in enumerate(cases):
        at = start + timedelta(seconds=i)
        w = app.receive_complaint(
            actor=s.intake,
            at=at,
            received_at=at - timedelta(hours=1),
            channel=s.channel,
            complainant_role=ComplainantRole.SURVIVOR,
            immediate_safety_risk=False,
            narrative=s.narrative,
            survivor=s.survivor,
        )
        ids.append(w.id)
        versions.append(w.version)
        saves.append(Save(i, created=True, events=w.version))
    for n, stage in enumerate(STAGES, start=1):
        for i, s in enumerate(cases):
            w = stage(app, s, ids[i], start + timedelta(hours=n, seconds=i))
            saves.append(Save(i, created=False, events=w.version - versions[i]))
            versions[i] = w.version
    return saves, ids, time.perf_counter() - t


# ---------------------------------------------------------------- the raw baseline


class Item(Aggregate):
    """A trivial declarative aggregate whose events carry a padding payload."""

    @event("Created")
    def __init__(self, payload: str) -> None:
        self.payload = payload

    @event("Updated")
    def update(self, payload: str) -> None:
        self.payload = payload


class RawApplication(Application[UUID]):
    """Library defaults: JSON transcoder, no aggregate cache."""

    name = "RawBaseline"


@dataclass(frozen=True)
class Padding:
    created: str
    later: str


def padding_for(app: RawApplication, target: StoredSizes) -> Padding:
    """Payloads that make the raw events' stored state as long as the targets."""
    probe = Item(payload="")
    created_overhead = len(app.mapper.to_stored_event(probe.collect_events()[0]).state)
    probe.update(payload="")
    later_overhead = len(app.mapper.to_stored_event(probe.collect_events()[0]).state)
    return Padding(
        created="x" * max(round(target.created) - created_overhead, 0),
        later="y" * max(round(target.later) - later_overhead, 0),
    )


def run_raw(app: RawApplication, saves: list[Save], padding: Padding) -> float:
    """The same saves, in the same order, with the same events per save."""
    ids: dict[int, UUID] = {}
    t = time.perf_counter()
    for save in saves:
        if save.created:
            item = Item(payload=padding.created)
            for _ in range(save.events - 1):
                item.update(payload=padding.later)
            ids[save.case] = item.id
        else:
            item = app.repository.get(ids[save.case])
            for _ in range(save.events):
                item.update(payload=padding.later)
        app.save(item)
    return time.perf_counter() - t


# ---------------------------------------------------------------- reporting


def configuration(app: Application[UUID]) -> str:
    """How the application encodes events and caches aggregates."""
    repository = app.repository
    cache = repository.cache
    if cache is None:
        caching = "no aggregate cache"
    else:
        caching = (
            f"aggregate cache (max {getattr(cache, 'maxsize', 'unbounded')}, "
            f"fast-forward {'on' if repository.fastforward else 'off'}, "
            f"deep copy on load {'on' if repository.deepcopy_from_cache else 'off'})"
        )
    return f"{type(app.mapper.transcoder).__name__}, {caching}"


def report(
    kind: str,
    where: str,
    cases: int,
    cbcm_app: ComplaintMechanism,
    raw_app: RawApplication,
    cbcm: Timing,
    raw: Timing,
    cbcm_sizes: StoredSizes,
    raw_sizes: StoredSizes,
) -> None:
    line = "-" * 78
    print()
    print(line)
    print(f"write path on {kind} ({where}), {cases} cases x {1 + len(STAGES)} commands")
    print(
        f"avg stored event size: cbcm {cbcm_sizes.overall:.0f} B "
        f"(created {cbcm_sizes.created:.0f} B, later {cbcm_sizes.later:.0f} B); "
        f"raw {raw_sizes.overall:.0f} B "
        f"(created {raw_sizes.created:.0f} B, later {raw_sizes.later:.0f} B)"
    )
    print(f"{'':24}{'commands':>9}{'events':>8}{'seconds':>9}{'commands/s':>12}{'events/s':>10}")
    for label, t in (("cbcm application", cbcm), ("raw eventsourcing", raw)):
        print(
            f"{label:24}{t.commands:>9}{t.events:>8}{t.seconds:>9.2f}"
            f"{t.commands_per_s:>12.1f}{t.events_per_s:>10.1f}"
        )
    print(
        f"{'ratio cbcm/raw':24}{'':>26}{cbcm.commands_per_s / raw.commands_per_s:>12.2f}"
        f"{cbcm.events_per_s / raw.events_per_s:>10.2f}"
    )
    print(f"cbcm: {configuration(cbcm_app)}")
    print(f"raw:  {configuration(raw_app)}")
    print(line)


def profile_cbcm(app: ComplaintMechanism, start: datetime) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_cbcm(app, scripts(PROFILE_CASES, seed=3), start)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


# ---------------------------------------------------------------- the benchmark


@pytest.fixture
def cbcm_app(store_url: str, tmp_path: Path) -> Iterator[ComplaintMechanism]:
    app = ComplaintMechanism(
        env=persistence_env(Settings(data_dir=tmp_path / "data", event_store=store_url))
    )
    yield app
    app.close()


@pytest.fixture
def raw_app(baseline_store_url: str, tmp_path: Path) -> Iterator[RawApplication]:
    # The baseline appends raw events: no field sealing, no whole-event cipher.
    env = persistence_env(Settings(data_dir=tmp_path / "data", event_store=baseline_store_url))
    env = {k: v for k, v in env.items() if not k.startswith("CIPHER_")}
    # its own table, made by the library at start (a PostgreSQL store's tables are made by
    # `cbcm db migrate`, which knows no such application: without this the side failed)
    env["CREATE_TABLE"] = "y"
    app = RawApplication(env=env)
    yield app
    app.close()


def test_write_path(store_url: str, cbcm_app: ComplaintMechanism, raw_app: RawApplication) -> None:
    kind = "sqlite" if store_url.startswith("sqlite") else "postgres"
    count = _cases(kind)
    chunk = -(-count // ROUNDS)
    set_up_network(cbcm_app)
    run_cbcm(cbcm_app, scripts(WARMUP_CASES, seed=1), T0)
    cbcm_before = last_position(cbcm_app)
    raw_before = 0
    padding: Padding | None = None
    ids: list[UUID] = []
    commands = events = 0
    cbcm_seconds = raw_seconds = 0.0

    # Rounds alternate between the two, so drift on a shared machine hits both alike.
    for r, first in enumerate(range(0, count, chunk)):
        cases = scripts(min(chunk, count - first), seed=100 + r)
        start = T0 + timedelta(days=1 + r)
        saves, round_ids, seconds = run_cbcm(cbcm_app, cases, start)
        cbcm_seconds += seconds
        ids += round_ids
        commands += len(saves)
        events += sum(s.events for s in saves)
        if padding is None:
            # Raw events padded to the size of the first round's; warm the raw side up.
            padding = padding_for(raw_app, stored_sizes(cbcm_app, after=cbcm_before))
            run_raw(raw_app, [s for s in saves if s.case < WARMUP_CASES], padding)
            raw_before = last_position(raw_app)
        raw_seconds += run_raw(raw_app, saves, padding)

    cbcm_sizes = stored_sizes(cbcm_app, after=cbcm_before)
    raw_sizes = stored_sizes(raw_app, after=raw_before)
    assert len(ids) == count
    assert commands == count * (1 + len(STAGES))
    assert cbcm_sizes.count == events == last_position(cbcm_app) - cbcm_before
    assert raw_sizes.count == events == last_position(raw_app) - raw_before
    assert abs(raw_sizes.overall - cbcm_sizes.overall) <= 0.02 * cbcm_sizes.overall
    assert all(cbcm_app.get_case(cid).is_closed for cid in ids)

    report(
        kind,
        describe(persistence_env(Settings(event_store=store_url))),
        count,
        cbcm_app,
        raw_app,
        Timing(commands, events, cbcm_seconds),
        Timing(commands, events, raw_seconds),
        cbcm_sizes,
        raw_sizes,
    )

    sealing = ["sealing"] if cbcm_app.data_keys is not None else []
    cipher = ["cipher"] if cbcm_app.mapper.cipher is not None else []
    record(
        Figure(
            bench="write path (#2, #5, #6)",
            figure=f"commands/s (domain, chain, {' + '.join(sealing + cipher) or 'plain'})",
            store=kind,
            value=commands / cbcm_seconds,
            unit="commands/s",
            baseline=commands / raw_seconds,
            baseline_name="raw eventsourcing appends, same store, same sizes",
            target=Target("ratio", ">=", 0.7) if kind == "postgres" else None,
        )
    )
    if os.environ.get("CBCM_BENCH_PROFILE"):
        profile_cbcm(cbcm_app, T0 + timedelta(days=2 + ROUNDS))
