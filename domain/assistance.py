"""An AssistanceReferral: one service for one survivor of a case, followed to delivery.

Made only through ``Case.refer_for_assistance``, which checks the survivor's consent.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, InvalidReferralTransition
from domain.personal_data import SurvivorText
from domain.recording import RecordedAggregate
from domain.vocabulary import ReferralStatus, ServiceType

_NEXT: dict[ReferralStatus, frozenset[ReferralStatus]] = {
    ReferralStatus.REFERRED: frozenset(
        {
            ReferralStatus.ACCEPTED,
            ReferralStatus.DECLINED_BY_PROVIDER,
            ReferralStatus.DECLINED_BY_SURVIVOR,
        }
    ),
    ReferralStatus.ACCEPTED: frozenset(
        {ReferralStatus.DELIVERED, ReferralStatus.DECLINED_BY_SURVIVOR}
    ),
    ReferralStatus.DELIVERED: frozenset({ReferralStatus.FOLLOWED_UP}),
    ReferralStatus.FOLLOWED_UP: frozenset({ReferralStatus.FOLLOWED_UP}),
    ReferralStatus.DECLINED_BY_PROVIDER: frozenset(),
    ReferralStatus.DECLINED_BY_SURVIVOR: frozenset(),
}

OPEN_STATUSES = frozenset({ReferralStatus.REFERRED, ReferralStatus.ACCEPTED})
"""A referral in these states is still under way."""

_PROVIDER_ONLY = frozenset(
    {ReferralStatus.ACCEPTED, ReferralStatus.DECLINED_BY_PROVIDER, ReferralStatus.DELIVERED}
)


class AssistanceReferral(RecordedAggregate):
    """One service referral: referred, then accepted or declined, delivered, followed up."""

    class Made(Aggregate.Created):
        actor: Actor
        case_id: UUID
        service_type: ServiceType
        provider: str
        area: str
        contact_shared: bool

    class Accepted(Aggregate.Event):
        actor: Actor

    class DeclinedByProvider(Aggregate.Event):
        actor: Actor
        reason: SurvivorText | None

    class DeclinedBySurvivor(Aggregate.Event):
        actor: Actor

    class Delivered(Aggregate.Event):
        actor: Actor

    class FollowedUp(Aggregate.Event):
        actor: Actor
        note: SurvivorText | None

    @classmethod
    def make(
        cls,
        *,
        actor: Actor,
        case_id: UUID,
        service_type: ServiceType,
        provider: str,
        area: str,
        contact_shared: bool,
        at: datetime,
    ) -> AssistanceReferral:
        """Create the referral record (rules are checked by the case that makes it)."""
        return cls(
            actor=actor,
            case_id=case_id,
            service_type=service_type,
            provider=provider,
            area=area,
            contact_shared=contact_shared,
            timestamp=at,
        )

    @event(Made)
    def __init__(
        self,
        *,
        actor: Actor,
        case_id: UUID,
        service_type: ServiceType,
        provider: str,
        area: str,
        contact_shared: bool,
        timestamp: datetime,
    ) -> None:
        self.case_id = case_id
        self.service_type = service_type
        self.provider = provider
        self.area = area
        self.contact_shared = contact_shared
        self.referring_agency = actor.agency
        self.status = ReferralStatus.REFERRED
        self.status_times: dict[ReferralStatus, datetime] = {ReferralStatus.REFERRED: timestamp}

    def _move(self, actor: Actor, to: ReferralStatus, custodian: str | None = None) -> None:
        """Check the transition and who makes it: the provider, or (for the survivor's side)
        a focal point of ``custodian``, the agency now holding the case, or the coordinator."""
        if to not in _NEXT[self.status]:
            raise InvalidReferralTransition(
                f"referral {self.id} is {self.status}; it cannot become {to}"
            )
        is_provider = actor.role is Role.SERVICE_PROVIDER and actor.agency == self.provider
        is_handler = actor.role is Role.COORDINATOR or (
            actor.role is Role.FOCAL_POINT and actor.agency == custodian
        )
        allowed = is_provider if to in _PROVIDER_ONLY else is_provider or is_handler
        if not allowed:
            raise ActionNotPermitted(f"{actor.role} of {actor.agency!r} cannot mark referral {to}")

    def accept(self, *, actor: Actor, at: datetime) -> None:
        """The provider takes the referral on."""
        self._move(actor, ReferralStatus.ACCEPTED)
        self._accepted(actor=actor, timestamp=at)

    def decline_by_provider(self, *, actor: Actor, reason: str | None = None, at: datetime) -> None:
        """The provider cannot take it (capacity, eligibility...)."""
        self._move(actor, ReferralStatus.DECLINED_BY_PROVIDER)
        self._declined_by_provider(actor=actor, reason=reason, timestamp=at)

    def decline_by_survivor(self, custodian: str, /, *, actor: Actor, at: datetime) -> None:
        """The survivor no longer wants this service (``custodian``: the case's holder)."""
        self._move(actor, ReferralStatus.DECLINED_BY_SURVIVOR, custodian)
        self._declined_by_survivor(actor=actor, timestamp=at)

    def deliver(self, *, actor: Actor, at: datetime) -> None:
        """The provider delivered the service."""
        self._move(actor, ReferralStatus.DELIVERED)
        self._delivered(actor=actor, timestamp=at)

    def follow_up(
        self, custodian: str, /, *, actor: Actor, note: str | None = None, at: datetime
    ) -> None:
        """Someone checked with the survivor after delivery (``custodian``: the case's holder)."""
        self._move(actor, ReferralStatus.FOLLOWED_UP, custodian)
        self._followed_up(actor=actor, note=note, timestamp=at)

    def _set(self, status: ReferralStatus, at: datetime) -> None:
        self.status = status
        self.status_times = {**self.status_times, status: at}

    @event(Accepted)
    def _accepted(self, *, actor: Actor, timestamp: datetime) -> None:
        self._set(ReferralStatus.ACCEPTED, timestamp)

    @event(DeclinedByProvider)
    def _declined_by_provider(
        self, *, actor: Actor, reason: str | None, timestamp: datetime
    ) -> None:
        self._set(ReferralStatus.DECLINED_BY_PROVIDER, timestamp)

    @event(DeclinedBySurvivor)
    def _declined_by_survivor(self, *, actor: Actor, timestamp: datetime) -> None:
        self._set(ReferralStatus.DECLINED_BY_SURVIVOR, timestamp)

    @event(Delivered)
    def _delivered(self, *, actor: Actor, timestamp: datetime) -> None:
        self._set(ReferralStatus.DELIVERED, timestamp)

    @event(FollowedUp)
    def _followed_up(self, *, actor: Actor, note: str | None, timestamp: datetime) -> None:
        self._set(ReferralStatus.FOLLOWED_UP, timestamp)
