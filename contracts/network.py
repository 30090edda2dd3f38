"""Messages about the PSEA network: its policy, member agencies and referral pathway."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Final
from uuid import UUID

import msgspec

from contracts.actors import ActorRef
from contracts.envelope import EventData, Version
from contracts.vocabulary import AgencyType, ServiceType

PUBLIC_KEY_PATTERN: Final = "^[A-Za-z0-9+/]{43}=$"
"""Standard base64 of a 32-byte X25519 public key."""

KEY_ID_PATTERN: Final = "^[0-9a-f]{16}$"
"""A share key's fingerprint: 16 hex characters of SHA-256 over its 32 raw bytes."""


class NetworkPolicyV1(msgspec.Struct, frozen=True, kw_only=True):
    """The network's deadlines (ISO 8601 durations) and reporting thresholds.

    ``suppression_threshold``: statistics suppress counts below it.
    ``personal_data_retention``: how long personal data is kept.
    ``coordinator_sees_personal_data``: whether the coordinator may read personal data
    (added within v1 with a default, so older messages still decode).
    """

    assess_within: timedelta
    offer_assistance_within: timedelta
    refer_for_investigation_within: timedelta
    acknowledge_within: timedelta
    feedback_every: timedelta
    assistance_acceptance_within: timedelta
    suppression_threshold: Annotated[int, msgspec.Meta(ge=2, le=1000)]
    personal_data_retention: timedelta
    coordinator_sees_personal_data: bool = False


class NetworkEventData(EventData, frozen=True, kw_only=True):
    """Fields of every network message: the network, its version after the event, who
    acted."""

    network_id: UUID
    version: Version
    actor: ActorRef


class NetworkEstablishedV1(NetworkEventData, frozen=True, kw_only=True):
    """The network's registry was started with its policy."""

    name: str
    policy: NetworkPolicyV1


class NetworkPolicySetV1(NetworkEventData, frozen=True, kw_only=True):
    """The network's policy was replaced."""

    policy: NetworkPolicyV1


class NetworkAgencyRegisteredV1(NetworkEventData, frozen=True, kw_only=True):
    """A member agency joined under ``code`` (the code used in subjects and references)."""

    code: str
    name: str
    agency_type: AgencyType


class NetworkInvestigatingEntityDesignatedV1(NetworkEventData, frozen=True, kw_only=True):
    """``entity`` investigates misconduct by ``agency``'s personnel."""

    agency: str
    entity: str


class NetworkFocalPointAppointedV1(NetworkEventData, frozen=True, kw_only=True):
    """``user`` (an account identifier) became a PSEA focal point of ``agency``."""

    agency: str
    user: str


class NetworkFocalPointWithdrawnV1(NetworkEventData, frozen=True, kw_only=True):
    """``user`` is no longer a PSEA focal point of ``agency``."""

    agency: str
    user: str


class NetworkServiceProviderRegisteredV1(NetworkEventData, frozen=True, kw_only=True):
    """A survivor-assistance provider joined the referral pathway for these services in
    these areas (administrative-area codes)."""

    code: str
    name: str
    service_types: tuple[ServiceType, ...]
    areas: tuple[str, ...]


class NetworkAgencyShareKeyRegisteredV1(NetworkEventData, frozen=True, kw_only=True):
    """``agency`` registered (or replaced) the X25519 public key that personal data shared
    with it travels sealed to, on its share subjects (``cbcm.v1.share.<agency>.>``).

    ``public_key``: standard base64 of the 32-byte key. ``key_id``: 16 hex characters of
    SHA-256 over those 32 bytes; every share names the key it was sealed to by this id.
    """

    agency: str
    public_key: Annotated[str, msgspec.Meta(pattern=PUBLIC_KEY_PATTERN)]
    key_id: Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]
