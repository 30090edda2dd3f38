"""The network's prevention work (issue #22): trainings, awareness-raising and community
consultations, the readiness of the focal-point network, SEA risk assessments with their
mitigation, and the collective work plan.

Everything here is counts and codes. No participant, trainer or community member is named,
and no free text is recorded: a mitigation measure or a work-plan activity is a code from
the vocabulary, so nothing typed into these records can carry a name onto the bus.

Who records what: an agency's PSEA focal points record their agency's work; the network
coordinator records the network's (the work plan, the prevention policy) and may record or
correct any agency's returns, as networks often collate them centrally.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import ClassVar
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role, validate_code, validate_user
from domain.errors import (
    ActionNotPermitted,
    AlreadyOpen,
    ImplausibleTime,
    InvalidCommand,
    NotAFocalPoint,
)
from domain.network import AREA_CODE, Network
from domain.recording import RecordedAggregate
from domain.vocabulary import (
    ActionStatus,
    AudienceCategory,
    AwarenessKind,
    Channel,
    CommunityAudience,
    MitigationMeasure,
    ReadinessRole,
    Sector,
    TrainingTopic,
    WorkPlanActivityKind,
)

PREVENTION_NAMESPACE = UUID("0b6f3b0e-7f39-4a55-9a52-8d1f7e2c4a61")

EARLIEST_RECORD = timedelta(days=5 * 366)
"""Prevention work is recorded at most five years after it happened (a year column of every
compliance table lies between the earliest record and now)."""

MOST_PEOPLE = 1_000_000
"""No session trains, and no activity reaches, more people than this (a typing error
otherwise becomes a coverage figure for good)."""

MOST_REACH = 50_000_000
"""A radio campaign may reach a country; not more than this."""

RATING_SCALE = range(1, 6)
"""Each risk factor is rated 1 (low) to 5 (very high)."""

DEFAULT_RISK_FACTORS: tuple[str, ...] = (
    "aid_distribution_power_imbalance",
    "remote_or_insecure_location",
    "staff_gender_imbalance",
    "partner_pseas_capacity",
    "community_awareness_low",
    "reporting_channels_inaccessible",
)
"""The risk-assessment template until the coordinator sets one (codes, rated 1-5)."""

FACTOR_CODE_LIMIT = 16
"""A template has at most this many factors."""

_ALLOWED_TRANSITIONS: Mapping[ActionStatus, frozenset[ActionStatus]] = {
    ActionStatus.PLANNED: frozenset(
        {ActionStatus.IN_PROGRESS, ActionStatus.DONE, ActionStatus.CANCELLED}
    ),
    ActionStatus.IN_PROGRESS: frozenset({ActionStatus.DONE, ActionStatus.CANCELLED}),
    ActionStatus.DONE: frozenset(),
    ActionStatus.CANCELLED: frozenset(),
}


# ------------------------------------------------------------------------------ rules


def require_recorder_for(actor: Actor, agency: str, network: Network) -> None:
    """An agency's own focal points record its work; the coordinator records anyone's."""
    network.agency(agency)
    if actor.role is Role.COORDINATOR:
        return
    if actor.role is Role.FOCAL_POINT and actor.agency == agency:
        return
    raise ActionNotPermitted(
        f"only {agency!r}'s focal points or the network coordinator record {agency!r}'s "
        "prevention work"
    )


def require_coordinator(actor: Actor, what: str) -> None:
    if actor.role is not Role.COORDINATOR:
        raise ActionNotPermitted(f"only the network coordinator {what}")


def check_day(name: str, day: date, at: datetime) -> None:
    """A day something happened: not after it is recorded, not more than five years before."""
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidCommand(f"{name} must be a calendar date")
    today = at.date()
    if day > today:
        raise ImplausibleTime(name, "is after it was recorded")
    if today - day > EARLIEST_RECORD:
        raise ImplausibleTime(name, "is more than five years before it was recorded")


def check_due_day(name: str, day: date, at: datetime) -> None:
    """A due date: within five years either side of when it is set."""
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidCommand(f"{name} must be a calendar date")
    if abs(day - at.date()) > EARLIEST_RECORD:
        raise ImplausibleTime(name, "is more than five years from when it was set")


RESERVED_AREAS = frozenset({"unknown", "other_area", "total"})
"""Labels of the statistics' area table (``other_area``, ``unknown``, ``TOTAL``): never an
area's code, whatever the case (a training "in" ``unknown`` would list the label twice)."""


def check_area(area: str) -> str:
    if not isinstance(area, str) or not AREA_CODE.fullmatch(area):
        raise InvalidCommand("area is not an area code (1-24 letters, digits, '.', '_', '-')")
    if area.lower() in RESERVED_AREAS or area[0] in "-.":
        raise InvalidCommand(
            "area is not an area code: unknown, other_area and total are reserved, and a code "
            "starts with a letter, a digit or '_'"
        )
    return area


def check_count(name: str, value: int, *, most: int, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCommand(f"{name} must be a whole number")
    if value < least or value > most:
        raise InvalidCommand(f"{name} must be between {least} and {most}")
    return value


@dataclass(frozen=True)
class TrainedCounts:
    """How many people a session trained, by sex. Counts only: no one is named."""

    female: int = 0
    male: int = 0
    other_or_not_recorded: int = 0

    def __post_init__(self) -> None:
        for name in ("female", "male", "other_or_not_recorded"):
            check_count(f"trained.{name}", getattr(self, name), most=MOST_PEOPLE)
        if self.total == 0:
            raise InvalidCommand("a training session trained at least one person")
        if self.total > MOST_PEOPLE:
            raise InvalidCommand(f"a training session trains at most {MOST_PEOPLE} people")

    @property
    def total(self) -> int:
        return self.female + self.male + self.other_or_not_recorded


@dataclass(frozen=True)
class TrainingTarget:
    """How many personnel ``agency`` commits to train in ``year`` (its compliance target)."""

    agency: str
    year: int
    personnel: int

    def __post_init__(self) -> None:
        validate_code("agency", self.agency)
        check_count("target year", self.year, least=2000, most=2100)
        check_count("target personnel", self.personnel, least=1, most=MOST_PEOPLE)


# --------------------------------------------------------------------- prevention policy

PREVENTION_POLICY_ID = uuid5(PREVENTION_NAMESPACE, "prevention-policy")


class PreventionPolicy(RecordedAggregate):
    """The network's prevention settings: training targets per agency and year, how often
    focal points take a refresher, and the risk-assessment template. One per network."""

    class Set(Aggregate.Created):
        actor: Actor
        refresher_every_days: int
        risk_factors: tuple[str, ...]
        training_targets: tuple[TrainingTarget, ...]

    class Changed(Aggregate.Event):
        actor: Actor
        refresher_every_days: int
        risk_factors: tuple[str, ...]
        training_targets: tuple[TrainingTarget, ...]

    @staticmethod
    def create_id(**_: object) -> UUID:
        return PREVENTION_POLICY_ID

    @staticmethod
    def check(
        network: Network,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
    ) -> None:
        check_count("refresher_every_days", refresher_every_days, least=30, most=5 * 366)
        if not 1 <= len(risk_factors) <= FACTOR_CODE_LIMIT:
            raise InvalidCommand(f"a risk template has 1 to {FACTOR_CODE_LIMIT} factors")
        if len(set(risk_factors)) != len(risk_factors):
            raise InvalidCommand("a risk template names each factor once")
        for factor in risk_factors:
            validate_code("risk factor", factor)
        seen: set[tuple[str, int]] = set()
        for target in training_targets:
            network.agency(target.agency)
            if (target.agency, target.year) in seen:
                raise InvalidCommand(f"two targets for {target.agency!r} in {target.year}")
            seen.add((target.agency, target.year))
        if len(training_targets) > 1000:
            raise InvalidCommand("at most 1000 training targets")

    @classmethod
    def set(
        cls,
        network: Network,
        /,
        *,
        actor: Actor,
        refresher_every_days: int = 365,
        risk_factors: tuple[str, ...] = DEFAULT_RISK_FACTORS,
        training_targets: tuple[TrainingTarget, ...] = (),
        at: datetime,
    ) -> PreventionPolicy:
        """Set the network's prevention policy for the first time."""
        require_coordinator(actor, "sets the prevention policy")
        cls.check(network, refresher_every_days, tuple(risk_factors), tuple(training_targets))
        return cls(
            actor=actor,
            refresher_every_days=refresher_every_days,
            risk_factors=tuple(risk_factors),
            training_targets=tuple(training_targets),
            timestamp=at,
        )

    @event(Set)
    def __init__(
        self,
        *,
        actor: Actor,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
        timestamp: datetime,
    ) -> None:
        self._apply(refresher_every_days, risk_factors, training_targets)

    def _apply(
        self,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
    ) -> None:
        self.refresher_every = timedelta(days=refresher_every_days)
        self.risk_factors = tuple(risk_factors)
        self.training_targets = tuple(training_targets)

    def change(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
        at: datetime,
    ) -> None:
        """Replace the prevention policy (assessments made under the old template keep the
        factors they were rated on)."""
        require_coordinator(actor, "sets the prevention policy")
        self.check(network, refresher_every_days, tuple(risk_factors), tuple(training_targets))
        self._changed(
            actor=actor,
            refresher_every_days=refresher_every_days,
            risk_factors=tuple(risk_factors),
            training_targets=tuple(training_targets),
            timestamp=at,
        )

    @event(Changed)
    def _changed(
        self,
        *,
        actor: Actor,
        refresher_every_days: int,
        risk_factors: tuple[str, ...],
        training_targets: tuple[TrainingTarget, ...],
        timestamp: datetime,
    ) -> None:
        self._apply(refresher_every_days, risk_factors, training_targets)


@dataclass(frozen=True)
class PreventionSettings:
    """What the rules consult: the policy as set, or the defaults until it is."""

    refresher_every: timedelta = timedelta(days=365)
    risk_factors: tuple[str, ...] = DEFAULT_RISK_FACTORS

    @classmethod
    def of(cls, policy: PreventionPolicy | None) -> PreventionSettings:
        if policy is None:
            return cls()
        return cls(refresher_every=policy.refresher_every, risk_factors=policy.risk_factors)


# ------------------------------------------------------------------ withdrawn records


class Withdrawal(Aggregate.Event):
    """A record was made in error: it counts no longer (the record stays). Each aggregate
    below declares its own ``Withdrawn`` as a subclass of this one, so that its stored
    topic names the aggregate (``TrainingSession.Withdrawn``)."""

    actor: Actor

    def apply(self, aggregate: Aggregate) -> None:
        assert isinstance(aggregate, WithdrawableRecord)
        aggregate.withdrawn = True


class WithdrawableRecord(RecordedAggregate):
    """A piece of an agency's prevention work, which its recorder may withdraw once."""

    Withdrawn: ClassVar[type[Withdrawal]]
    WHAT: ClassVar[str]
    """What the record is, in an error message: ``training session``."""

    agency: str
    withdrawn: bool

    def withdraw(self, network: Network, /, *, actor: Actor, at: datetime) -> None:
        """Withdraw a record made in error."""
        require_recorder_for(actor, self.agency, network)
        if self.withdrawn:
            raise InvalidCommand(f"{self.WHAT} {self.id} is already withdrawn")
        self.trigger_event(self.Withdrawn, actor=actor, timestamp=at)


# ---------------------------------------------------------------------- trainings


class TrainingSession(WithdrawableRecord):
    """One PSEA training session: who (by category, counted by sex), on what, where, when."""

    WHAT = "training session"

    class Recorded(Aggregate.Created):
        actor: Actor
        agency: str
        held_on: date
        area: str
        audience: AudienceCategory
        topic: TrainingTopic
        trained: TrainedCounts

    class Withdrawn(Withdrawal):
        """The session was recorded in error: it counts no longer (the record stays)."""

    @staticmethod
    def create_id(**_: object) -> UUID:
        return uuid4()

    @classmethod
    def record(
        cls,
        network: Network,
        /,
        *,
        actor: Actor,
        agency: str,
        held_on: date,
        area: str,
        audience: AudienceCategory,
        topic: TrainingTopic,
        trained: TrainedCounts,
        at: datetime,
    ) -> TrainingSession:
        """Record a training session held by ``agency``."""
        require_recorder_for(actor, agency, network)
        check_day("held_on", held_on, at)
        check_area(area)
        if not isinstance(trained, TrainedCounts):
            raise InvalidCommand("trained must be counts by sex")
        return cls(
            actor=actor,
            agency=agency,
            held_on=held_on,
            area=area,
            audience=AudienceCategory(audience),
            topic=TrainingTopic(topic),
            trained=trained,
            timestamp=at,
        )

    @event(Recorded)
    def __init__(
        self,
        *,
        actor: Actor,
        agency: str,
        held_on: date,
        area: str,
        audience: AudienceCategory,
        topic: TrainingTopic,
        trained: TrainedCounts,
        timestamp: datetime,
    ) -> None:
        self.agency = agency
        self.held_on = held_on
        self.area = area
        self.audience = audience
        self.topic = topic
        self.trained = trained
        self.withdrawn = False


# ---------------------------------------------------------------------- awareness


class AwarenessActivity(WithdrawableRecord):
    """An awareness-raising activity or community consultation in an area, with how many it
    reached and the reporting channels the community said it would use."""

    WHAT = "awareness activity"

    class Recorded(Aggregate.Created):
        actor: Actor
        agency: str
        held_on: date
        area: str
        kind: AwarenessKind
        audience: CommunityAudience
        reach: int
        preferred_channels: tuple[Channel, ...]

    class Withdrawn(Withdrawal):
        """The activity was recorded in error: it counts no longer (the record stays)."""

    @staticmethod
    def create_id(**_: object) -> UUID:
        return uuid4()

    @classmethod
    def record(
        cls,
        network: Network,
        /,
        *,
        actor: Actor,
        agency: str,
        held_on: date,
        area: str,
        kind: AwarenessKind,
        audience: CommunityAudience,
        reach: int,
        preferred_channels: tuple[Channel, ...] = (),
        at: datetime,
    ) -> AwarenessActivity:
        """Record an awareness activity or consultation held by ``agency``."""
        require_recorder_for(actor, agency, network)
        check_day("held_on", held_on, at)
        check_area(area)
        check_count("reach", reach, least=1, most=MOST_REACH)
        channels = tuple(Channel(c) for c in preferred_channels)
        if len(set(channels)) != len(channels):
            raise InvalidCommand("preferred_channels names each channel once")
        return cls(
            actor=actor,
            agency=agency,
            held_on=held_on,
            area=area,
            kind=AwarenessKind(kind),
            audience=CommunityAudience(audience),
            reach=reach,
            preferred_channels=channels,
            timestamp=at,
        )

    @event(Recorded)
    def __init__(
        self,
        *,
        actor: Actor,
        agency: str,
        held_on: date,
        area: str,
        kind: AwarenessKind,
        audience: CommunityAudience,
        reach: int,
        preferred_channels: tuple[Channel, ...],
        timestamp: datetime,
    ) -> None:
        self.agency = agency
        self.held_on = held_on
        self.area = area
        self.kind = kind
        self.audience = audience
        self.reach = reach
        self.preferred_channels = preferred_channels
        self.withdrawn = False


# --------------------------------------------------------------- focal-point readiness


def readiness_id(agency: str) -> UUID:
    """The one readiness record of ``agency``'s focal-point network."""
    return uuid5(PREVENTION_NAMESPACE, f"readiness:{validate_code('agency', agency)}")


class FocalPointReadiness(RecordedAggregate):
    """An agency's focal-point network beyond the appointments in the registry: its
    alternates, and when each focal point and alternate last completed PSEA training."""

    class Opened(Aggregate.Created):
        actor: Actor
        agency: str

    class AlternateAppointed(Aggregate.Event):
        actor: Actor
        user: str

    class AlternateWithdrawn(Aggregate.Event):
        actor: Actor
        user: str

    class TrainingCompleted(Aggregate.Event):
        actor: Actor
        user: str
        role: ReadinessRole
        completed_on: date

    @staticmethod
    def create_id(agency: str, **_: object) -> UUID:
        return readiness_id(agency)

    @classmethod
    def open(
        cls, network: Network, /, *, actor: Actor, agency: str, at: datetime
    ) -> FocalPointReadiness:
        """Start ``agency``'s readiness record (the application opens it on first use)."""
        require_recorder_for(actor, agency, network)
        return cls(actor=actor, agency=agency, timestamp=at)

    @event(Opened)
    def __init__(self, *, actor: Actor, agency: str, timestamp: datetime) -> None:
        self.agency = agency
        self.alternates: frozenset[str] = frozenset()
        self.trained_on: dict[str, date] = {}

    def role_of(self, network: Network, user: str) -> ReadinessRole | None:
        if user in network.agency(self.agency).focal_points:
            return ReadinessRole.FOCAL_POINT
        if user in self.alternates:
            return ReadinessRole.ALTERNATE
        return None

    def appoint_alternate(
        self, network: Network, /, *, actor: Actor, user: str, at: datetime
    ) -> None:
        """Name ``user`` (an account identifier) an alternate focal point of the agency."""
        require_recorder_for(actor, self.agency, network)
        validate_user(user)
        if self.role_of(network, user) is not None:
            raise InvalidCommand(f"{user!r} is already in {self.agency!r}'s focal-point network")
        self._alternate_appointed(actor=actor, user=user, timestamp=at)

    @event(AlternateAppointed)
    def _alternate_appointed(self, *, actor: Actor, user: str, timestamp: datetime) -> None:
        self.alternates = self.alternates | {user}

    def withdraw_alternate(
        self, network: Network, /, *, actor: Actor, user: str, at: datetime
    ) -> None:
        require_recorder_for(actor, self.agency, network)
        if user not in self.alternates:
            raise NotAFocalPoint(f"{user!r} is not an alternate of {self.agency!r}")
        self._alternate_withdrawn(actor=actor, user=user, timestamp=at)

    @event(AlternateWithdrawn)
    def _alternate_withdrawn(self, *, actor: Actor, user: str, timestamp: datetime) -> None:
        self.alternates = self.alternates - {user}

    def record_training(
        self, network: Network, /, *, actor: Actor, user: str, completed_on: date, at: datetime
    ) -> None:
        """Record that a focal point or alternate of the agency completed PSEA training."""
        require_recorder_for(actor, self.agency, network)
        check_day("completed_on", completed_on, at)
        role = self.role_of(network, user)
        if role is None:
            raise NotAFocalPoint(
                f"{user!r} is neither a focal point nor an alternate of {self.agency!r}"
            )
        last = self.trained_on.get(user)
        if last is not None and completed_on <= last:
            raise InvalidCommand(
                f"{user!r} already completed training on {last.isoformat()} or later"
            )
        self._training_completed(
            actor=actor, user=user, role=role, completed_on=completed_on, timestamp=at
        )

    @event(TrainingCompleted)
    def _training_completed(
        self,
        *,
        actor: Actor,
        user: str,
        role: ReadinessRole,
        completed_on: date,
        timestamp: datetime,
    ) -> None:
        self.trained_on[user] = completed_on


# ------------------------------------------------------------------ risk assessments


@dataclass(frozen=True)
class MitigationAction:
    measure: MitigationMeasure
    owner_agency: str
    due_on: date
    status: ActionStatus = ActionStatus.PLANNED


class RiskAssessment(RecordedAggregate):
    """An SEA risk assessment of one area and one sector (programme): each factor of the
    policy's template rated 1-5, and the mitigation agreed, with owners and due dates."""

    class Assessed(Aggregate.Created):
        actor: Actor
        agency: str
        area: str
        sector: Sector
        assessed_on: date
        ratings: dict[str, int]

    class Reassessed(Aggregate.Event):
        actor: Actor
        assessed_on: date
        ratings: dict[str, int]

    class MitigationAgreed(Aggregate.Event):
        actor: Actor
        action: int
        measure: MitigationMeasure
        owner_agency: str
        due_on: date

    class MitigationStatusChanged(Aggregate.Event):
        actor: Actor
        action: int
        status: ActionStatus

    @staticmethod
    def create_id(**_: object) -> UUID:
        return uuid4()

    @staticmethod
    def check_ratings(settings: PreventionSettings, ratings: Mapping[str, int]) -> dict[str, int]:
        if not isinstance(ratings, Mapping):
            raise InvalidCommand("ratings must map each risk factor to a rating")
        missing = [f for f in settings.risk_factors if f not in ratings]
        unknown = [f for f in ratings if f not in settings.risk_factors]
        if missing or unknown:
            raise InvalidCommand(
                "ratings must rate exactly the template's factors "
                f"(missing: {', '.join(missing) or 'none'}; "
                f"not in the template: {len(unknown)})"
            )
        for factor, rating in ratings.items():
            if (
                isinstance(rating, bool)
                or not isinstance(rating, int)
                or rating not in RATING_SCALE
            ):
                raise InvalidCommand(f"rating of {factor} must be 1 to 5")
        return {f: int(ratings[f]) for f in settings.risk_factors}

    @classmethod
    def assess(
        cls,
        network: Network,
        settings: PreventionSettings,
        /,
        *,
        actor: Actor,
        agency: str,
        area: str,
        sector: Sector,
        assessed_on: date,
        ratings: Mapping[str, int],
        at: datetime,
    ) -> RiskAssessment:
        """Record a risk assessment by ``agency`` of ``area`` and ``sector``."""
        require_recorder_for(actor, agency, network)
        check_area(area)
        check_day("assessed_on", assessed_on, at)
        rated = cls.check_ratings(settings, ratings)
        return cls(
            actor=actor,
            agency=agency,
            area=area,
            sector=Sector(sector),
            assessed_on=assessed_on,
            ratings=rated,
            timestamp=at,
        )

    @event(Assessed)
    def __init__(
        self,
        *,
        actor: Actor,
        agency: str,
        area: str,
        sector: Sector,
        assessed_on: date,
        ratings: dict[str, int],
        timestamp: datetime,
    ) -> None:
        self.agency = agency
        self.area = area
        self.sector = sector
        self.assessed_on = assessed_on
        self.ratings = dict(ratings)
        self.actions: list[MitigationAction] = []

    def _require_assessor(self, actor: Actor, network: Network) -> None:
        require_recorder_for(actor, self.agency, network)

    def reassess(
        self,
        network: Network,
        settings: PreventionSettings,
        /,
        *,
        actor: Actor,
        assessed_on: date,
        ratings: Mapping[str, int],
        at: datetime,
    ) -> None:
        """Rate the area and sector again (on the current template)."""
        self._require_assessor(actor, network)
        check_day("assessed_on", assessed_on, at)
        if assessed_on < self.assessed_on:
            raise ImplausibleTime("assessed_on", "is before the last assessment")
        rated = self.check_ratings(settings, ratings)
        self._reassessed(actor=actor, assessed_on=assessed_on, ratings=rated, timestamp=at)

    @event(Reassessed)
    def _reassessed(
        self, *, actor: Actor, assessed_on: date, ratings: dict[str, int], timestamp: datetime
    ) -> None:
        self.assessed_on = assessed_on
        self.ratings = dict(ratings)

    def agree_mitigation(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        measure: MitigationMeasure,
        owner_agency: str,
        due_on: date,
        at: datetime,
    ) -> None:
        """Agree a mitigation action, owned by ``owner_agency``, due on ``due_on``."""
        self._require_assessor(actor, network)
        network.agency(owner_agency)
        check_due_day("due_on", due_on, at)
        if len(self.actions) >= 100:
            raise InvalidCommand("an assessment has at most 100 mitigation actions")
        self._mitigation_agreed(
            actor=actor,
            action=len(self.actions) + 1,
            measure=MitigationMeasure(measure),
            owner_agency=owner_agency,
            due_on=due_on,
            timestamp=at,
        )

    @event(MitigationAgreed)
    def _mitigation_agreed(
        self,
        *,
        actor: Actor,
        action: int,
        measure: MitigationMeasure,
        owner_agency: str,
        due_on: date,
        timestamp: datetime,
    ) -> None:
        self.actions.append(MitigationAction(measure, owner_agency, due_on))

    def report_mitigation(
        self, network: Network, /, *, actor: Actor, action: int, status: ActionStatus, at: datetime
    ) -> None:
        """Report the status of mitigation action ``action`` (1-based). The owner agency's
        focal points, the assessing agency's and the coordinator may."""
        if isinstance(action, bool) or not isinstance(action, int):
            raise InvalidCommand("action must be a whole number")
        if not 1 <= action <= len(self.actions):
            raise InvalidCommand(f"assessment {self.id} has no mitigation action {action}")
        current = self.actions[action - 1]
        if not (
            actor.role is Role.COORDINATOR
            or (
                actor.role is Role.FOCAL_POINT
                and actor.agency in (self.agency, current.owner_agency)
            )
        ):
            raise ActionNotPermitted(
                "only the owner agency, the assessing agency or the coordinator report on it"
            )
        status = ActionStatus(status)
        if status not in _ALLOWED_TRANSITIONS[current.status]:
            raise InvalidCommand(
                f"mitigation action {action} cannot go from {current.status} to {status}"
            )
        self._mitigation_status_changed(actor=actor, action=action, status=status, timestamp=at)

    @event(MitigationStatusChanged)
    def _mitigation_status_changed(
        self, *, actor: Actor, action: int, status: ActionStatus, timestamp: datetime
    ) -> None:
        current = self.actions[action - 1]
        self.actions[action - 1] = MitigationAction(
            current.measure, current.owner_agency, current.due_on, status
        )


# --------------------------------------------------------------------------- work plan


def work_plan_id(year: int) -> UUID:
    """The network's one collective work plan of ``year``."""
    return uuid5(PREVENTION_NAMESPACE, f"work-plan:{year}")


@dataclass(frozen=True)
class PlannedActivity:
    kind: WorkPlanActivityKind
    owner_agency: str
    area: str | None
    target: int
    due_on: date
    status: ActionStatus = ActionStatus.PLANNED
    achieved: int = 0


class WorkPlan(RecordedAggregate):
    """The network's collective PSEA work plan of one year: activities with an owner agency,
    a target, a due date, and their progress."""

    class Opened(Aggregate.Created):
        actor: Actor
        year: int

    class ActivityPlanned(Aggregate.Event):
        actor: Actor
        activity: int
        kind: WorkPlanActivityKind
        owner_agency: str
        area: str | None
        target: int
        due_on: date

    class ProgressReported(Aggregate.Event):
        actor: Actor
        activity: int
        status: ActionStatus
        achieved: int

    @staticmethod
    def create_id(year: int, **_: object) -> UUID:
        return work_plan_id(year)

    @classmethod
    def open(cls, *, actor: Actor, year: int, at: datetime, exists: bool = False) -> WorkPlan:
        """Open the network's work plan of ``year`` (the coordinator's); ``exists``: the
        application found it already open."""
        require_coordinator(actor, "keeps the network's work plan")
        if exists:
            raise AlreadyOpen(f"the work plan of {year} is already open")
        check_count("year", year, least=2000, most=2100)
        if abs(year - at.year) > 5:
            raise ImplausibleTime("year", "is more than five years from now")
        return cls(actor=actor, year=year, timestamp=at)

    @event(Opened)
    def __init__(self, *, actor: Actor, year: int, timestamp: datetime) -> None:
        self.year = year
        self.activities: list[PlannedActivity] = []

    def plan_activity(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        kind: WorkPlanActivityKind,
        owner_agency: str,
        target: int,
        due_on: date,
        area: str | None = None,
        at: datetime,
    ) -> None:
        """Add an activity to the plan."""
        require_coordinator(actor, "keeps the network's work plan")
        network.agency(owner_agency)
        if area is not None:
            check_area(area)
        check_count("target", target, least=1, most=MOST_REACH)
        if not isinstance(due_on, date) or due_on.year != self.year:
            raise ImplausibleTime("due_on", f"must fall in the plan's year {self.year}")
        if len(self.activities) >= 500:
            raise InvalidCommand("a work plan has at most 500 activities")
        self._activity_planned(
            actor=actor,
            activity=len(self.activities) + 1,
            kind=WorkPlanActivityKind(kind),
            owner_agency=owner_agency,
            area=area,
            target=target,
            due_on=due_on,
            timestamp=at,
        )

    @event(ActivityPlanned)
    def _activity_planned(
        self,
        *,
        actor: Actor,
        activity: int,
        kind: WorkPlanActivityKind,
        owner_agency: str,
        area: str | None,
        target: int,
        due_on: date,
        timestamp: datetime,
    ) -> None:
        self.activities.append(PlannedActivity(kind, owner_agency, area, target, due_on))

    def report_progress(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        activity: int,
        status: ActionStatus,
        achieved: int,
        at: datetime,
    ) -> None:
        """Report an activity's status and what it achieved so far (its owner agency's focal
        points or the coordinator)."""
        if isinstance(activity, bool) or not isinstance(activity, int):
            raise InvalidCommand("activity must be a whole number")
        if not 1 <= activity <= len(self.activities):
            raise InvalidCommand(f"the {self.year} work plan has no activity {activity}")
        current = self.activities[activity - 1]
        require_recorder_for(actor, current.owner_agency, network)
        check_count("achieved", achieved, most=MOST_REACH)
        if achieved < current.achieved:
            raise InvalidCommand("achieved cannot go down: progress is cumulative")
        status = ActionStatus(status)
        if status is not current.status and status not in _ALLOWED_TRANSITIONS[current.status]:
            raise InvalidCommand(f"activity {activity} cannot go from {current.status} to {status}")
        if current.status in (ActionStatus.DONE, ActionStatus.CANCELLED):
            raise InvalidCommand(f"activity {activity} is {current.status}: it is finished")
        self._progress_reported(
            actor=actor, activity=activity, status=status, achieved=achieved, timestamp=at
        )

    @event(ProgressReported)
    def _progress_reported(
        self,
        *,
        actor: Actor,
        activity: int,
        status: ActionStatus,
        achieved: int,
        timestamp: datetime,
    ) -> None:
        current = self.activities[activity - 1]
        self.activities[activity - 1] = PlannedActivity(
            current.kind,
            current.owner_agency,
            current.area,
            current.target,
            current.due_on,
            status,
            achieved,
        )
