"""Messages about an assistance referral: one service for one survivor, to delivery."""

from __future__ import annotations

from uuid import UUID

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import ServiceType


class AssistanceReferralEventData(EventData, frozen=True, kw_only=True):
    """Fields of every referral message: the referral, its version after the event, who
    acted."""

    referral_id: UUID
    version: Version
    actor: ActorRef


class AssistanceReferralMadeV1(AssistanceReferralEventData, frozen=True, kw_only=True):
    """A survivor of ``case_id`` was referred to ``provider`` for one service in ``area``.

    ``contact_shared`` says whether the provider may receive the survivor's contact details
    (with the survivor's consent); the details themselves are never sent.
    """

    case_id: UUID
    service_type: ServiceType
    provider: str
    area: str
    contact_shared: bool


class AssistanceReferralAcceptedV1(AssistanceReferralEventData, frozen=True, kw_only=True):
    """The provider took the referral on."""


class AssistanceReferralDeclinedByProviderV1(
    AssistanceReferralEventData, frozen=True, kw_only=True
):
    """The provider could not take the referral; ``reason_given`` says whether it said why."""

    reason_given: bool


class AssistanceReferralDeclinedBySurvivorV1(
    AssistanceReferralEventData, frozen=True, kw_only=True
):
    """The survivor no longer wants this service."""


class AssistanceReferralDeliveredV1(AssistanceReferralEventData, frozen=True, kw_only=True):
    """The provider delivered the service."""


class AssistanceReferralFollowedUpV1(AssistanceReferralEventData, frozen=True, kw_only=True):
    """Someone checked with the survivor after delivery; ``has_note`` says whether a note
    was written (the note is not sent)."""

    has_note: bool
