"""Messages about non-sensitive community feedback for an agency's feedback mechanism (CFM).

What the person said and what the agency answered are never sent: only how the feedback is
coded, so programmes can be adjusted from the trends.
"""

from __future__ import annotations

from uuid import UUID

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import Channel, ErasureReason, FeedbackCategory, Sector


class FeedbackEventData(EventData, frozen=True, kw_only=True):
    """Fields of every feedback message: the feedback, its version after the event, who
    acted."""

    feedback_id: UUID
    version: Version
    actor: ActorRef


class FeedbackReceivedV1(FeedbackEventData, frozen=True, kw_only=True):
    """Feedback for ``concerned_agency`` was recorded; ``source_case_id`` is the complaint it
    came from when a complaint was assessed as non-sensitive feedback."""

    channel: Channel
    category: FeedbackCategory
    sector: Sector
    concerned_agency: str
    source_case_id: UUID | None


class FeedbackRespondedV1(FeedbackEventData, frozen=True, kw_only=True):
    """The concerned agency answered the person who gave the feedback."""


class FeedbackLoopClosedV1(FeedbackEventData, frozen=True, kw_only=True):
    """The person was answered: the feedback loop is closed."""


class FeedbackPersonalDataErasedV1(FeedbackEventData, frozen=True, kw_only=True):
    """What was said and answered was erased for good (its data key was destroyed)."""

    reason: ErasureReason
