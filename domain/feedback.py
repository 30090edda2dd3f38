"""Non-sensitive community feedback for an agency's complaint and feedback mechanism (CFM)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role
from domain.errors import ActionNotPermitted, FeedbackLoopClosed, InvalidCommand, ResponseRequired
from domain.network import Network
from domain.personal_data import PersonalText
from domain.recording import RecordedAggregate
from domain.vocabulary import Channel, FeedbackCategory, Sector


class Feedback(RecordedAggregate):
    """One piece of feedback, answered by the concerned agency until the loop is closed."""

    class Received(Aggregate.Created):
        actor: Actor
        channel: Channel
        category: FeedbackCategory
        sector: Sector
        concerned_agency: str
        text: PersonalText
        source_case_id: UUID | None

    class Responded(Aggregate.Event):
        actor: Actor
        response: PersonalText

    class LoopClosed(Aggregate.Event):
        actor: Actor

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

    @event(Responded)
    def _responded(self, *, actor: Actor, response: str, timestamp: datetime) -> None:
        self.responded_at = timestamp

    @event(LoopClosed)
    def _loop_closed(self, *, actor: Actor, timestamp: datetime) -> None:
        self.loop_closed_at = timestamp
