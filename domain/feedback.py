"""Non-sensitive community feedback for an agency's complaint and feedback mechanism (CFM)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.errors import (
    ActionNotPermitted,
    FeedbackLoopClosed,
    InvalidCommand,
    ResponseRequired,
    RetentionNotDue,
)
from domain.network import Network
from domain.personal_data import ERASED, ComplainantText
from domain.recording import RecordedAggregate
from domain.vocabulary import Channel, ErasureReason, FeedbackCategory, Sector

FORWARDED_NAMESPACE = UUID("6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44")


def forwarded_feedback_id(case_id: UUID) -> UUID:
    """The id of the feedback item a case was forwarded as (found from the case alone, so
    that erasing the case's personal data reaches its copy in the CFM too)."""
    return uuid5(FORWARDED_NAMESPACE, f"forwarded-feedback:{case_id}")


class Feedback(RecordedAggregate):
    """One piece of feedback, answered by the concerned agency until the loop is closed."""

    class Received(Aggregate.Created):
        actor: Actor
        channel: Channel
        category: FeedbackCategory
        sector: Sector
        concerned_agency: str
        text: ComplainantText
        source_case_id: UUID | None

    class Responded(Aggregate.Event):
        actor: Actor
        response: ComplainantText

    class LoopClosed(Aggregate.Event):
        actor: Actor

    class PersonalDataErased(Aggregate.Event):
        """The data key of what was said and answered was destroyed: no one can read it."""

        actor: Actor
        reason: ErasureReason

    @staticmethod
    def create_id(source_case_id: UUID | None = None, **_: object) -> UUID:
        return uuid4() if source_case_id is None else forwarded_feedback_id(source_case_id)

    @classmethod
    def receive(
        cls,
        *,
        actor: Actor,
        channel: Channel,
        category: FeedbackCategory,
        sector: Sector,
        concerned_agency: str,
        text: str,
        network: Network,
        source_case_id: UUID | None = None,
        at: datetime,
    ) -> Feedback:
        """Record feedback for the concerned agency's CFM."""
        network.agency(actor.agency)
        network.agency(concerned_agency)
        if not text.strip():
            raise InvalidCommand("feedback needs what was said")
        return cls(
            actor=actor,
            channel=channel,
            category=category,
            sector=sector,
            concerned_agency=concerned_agency,
            text=text,
            source_case_id=source_case_id,
            timestamp=at,
        )

    @event(Received)
    def __init__(
        self,
        *,
        actor: Actor,
        channel: Channel,
        category: FeedbackCategory,
        sector: Sector,
        concerned_agency: str,
        text: str,
        source_case_id: UUID | None,
        timestamp: datetime,
    ) -> None:
        self.channel = channel
        self.category = category
        self.sector = sector
        self.concerned_agency = concerned_agency
        self.text = text
        self.source_case_id = source_case_id
        self.received_at = timestamp
        self.responded_at: datetime | None = None
        self.loop_closed_at: datetime | None = None
        self.erased = False

    def _require_concerned(self, actor: Actor) -> None:
        if self.loop_closed_at is not None:
            raise FeedbackLoopClosed(f"feedback {self.id}'s loop is already closed")
        if actor.role is Role.COORDINATOR:
            return
        if actor.role is Role.FOCAL_POINT and actor.agency == self.concerned_agency:
            return
        raise ActionNotPermitted(f"only {self.concerned_agency!r} answers feedback {self.id}")

    def respond(self, *, actor: Actor, response: str, at: datetime) -> None:
        """The concerned agency's answer to the person who gave the feedback."""
        self._require_concerned(actor)
        if not response.strip():
            raise InvalidCommand("a response needs a message")
        self._responded(actor=actor, response=response, timestamp=at)

    def close_loop(self, *, actor: Actor, at: datetime) -> None:
        """The person was answered: the feedback loop is closed."""
        self._require_concerned(actor)
        if self.responded_at is None:
            raise ResponseRequired(f"feedback {self.id} has no response yet")
        self._loop_closed(actor=actor, timestamp=at)

    def erase_personal_data(
        self,
        network: Network,
        /,
        *,
        actor: Actor,
        reason: ErasureReason,
        at: datetime,
        with_case: UUID | None = None,
    ) -> None:
        """Erase what was said and answered, for good: on a decision of the concerned agency or
        the coordinator, with the case it was forwarded from (``with_case``: that case's
        erasure decides), or by retention once the loop has been closed for the policy's
        ``personal_data_retention``."""
        if with_case is not None and with_case == self.source_case_id:
            self._personal_data_erased(actor=actor, reason=reason, timestamp=at)
            return
        if actor.role is not Role.COORDINATOR and not (
            actor.role is Role.FOCAL_POINT and actor.agency == self.concerned_agency
        ):
            raise ActionNotPermitted(f"only {self.concerned_agency!r} or the coordinator may")
        if reason is ErasureReason.RETENTION_EXPIRED:
            if actor.role is not Role.COORDINATOR:
                raise ActionNotPermitted("retention is applied for the network by the coordinator")
            if self.loop_closed_at is None:
                raise RetentionNotDue(f"feedback {self.id} is open: what was said is kept")
            due = self.loop_closed_at + network.policy.personal_data_retention
            if at < due:
                raise RetentionNotDue(f"feedback {self.id} is kept until {due.isoformat()}")
        self._personal_data_erased(actor=actor, reason=reason, timestamp=at)

    @event(PersonalDataErased)
    def _personal_data_erased(
        self, *, actor: Actor, reason: ErasureReason, timestamp: datetime
    ) -> None:
        self.text = ERASED
        self.erased = True

    @event(Responded)
    def _responded(self, *, actor: Actor, response: str, timestamp: datetime) -> None:
        self.responded_at = timestamp

    @event(LoopClosed)
    def _loop_closed(self, *, actor: Actor, timestamp: datetime) -> None:
        self.loop_closed_at = timestamp
