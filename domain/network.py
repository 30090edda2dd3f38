"""The PSEA network: its policy, its agencies and the referral pathway of service providers.

One ``Network`` aggregate per event store. The other aggregates consult it (it is passed to
their methods) to check that a referral goes where the registry says it must.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.actors import Actor, Role, validate_code, validate_user
from domain.errors import (
    ActionNotPermitted,
    AgencyAlreadyRegistered,
    InvalidCommand,
    MalformedShareKey,
    NoInvestigatingEntity,
    NotAFocalPoint,
    ServiceNotOffered,
    ServiceProviderAlreadyRegistered,
    UnknownAgency,
    UnknownServiceProvider,
)
from domain.policy import NetworkPolicy
from domain.recording import RecordedAggregate
from domain.vocabulary import AgencyType, ServiceType

AREA_CODE = re.compile(r"^[A-Za-z0-9._-]{1,24}$")
"""Administrative-area codes (OCHA P-codes and the like): coarse places, not personal data."""

MOST_AREAS = 200
"""A provider covers at most this many areas: each is a row of the assistance read model."""

NETWORK_ID = uuid5(UUID("6f1b3f0e-2b1c-4c55-9a7e-7f3c0c1d2e11"), "cbcm:network")
"""The one network of an event store."""

SHARE_KEY_BYTES = 32
"""An X25519 public key is 32 bytes."""

_P = 2**255 - 19
_SMALL_ORDER = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P - 1,
        _P,
        _P + 1,
    }
)
"""The u-coordinates (and their non-canonical encodings) of Curve25519's points of small
order, the ones libsodium refuses: a shared secret with any of them is predictable."""


def share_key_bytes(public_key: str) -> bytes:
    """The raw X25519 public key that ``public_key`` (standard base64 of 32 bytes) encodes,
    or ``MalformedShareKey``."""
    try:
        raw = base64.b64decode(public_key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MalformedShareKey(
            "a share key is the standard base64 of a 32-byte X25519 public key"
        ) from None
    if len(raw) != SHARE_KEY_BYTES or base64.b64encode(raw).decode("ascii") != public_key:
        raise MalformedShareKey("a share key is the standard base64 of a 32-byte X25519 public key")
    # RFC 7748: the top bit of the last byte is ignored.
    if int.from_bytes(raw, "little") & ((1 << 255) - 1) in _SMALL_ORDER:
        raise MalformedShareKey("a share key must not be a point of small order")
    return raw


def share_key_id(raw: bytes) -> str:
    """The fingerprint of a share key: 16 hex characters of SHA-256 over its 32 raw bytes.

    >>> share_key_id(bytes(range(32)))
    '630dcd2966c43366'
    """
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class ShareKey:
    """The X25519 public key personal data shared with an agency is sealed to (not personal
    data): standard base64 of its 32 bytes, and its fingerprint."""

    public_key: str
    key_id: str


@dataclass(frozen=True)
class AgencyRecord:
    code: str
    name: str
    agency_type: AgencyType
    investigating_entity: str | None = None
    focal_points: frozenset[str] = field(default_factory=frozenset)
    share_key: ShareKey | None = None


@dataclass(frozen=True)
class ServiceProviderRecord:
    code: str
    name: str
    service_types: frozenset[ServiceType]
    areas: frozenset[str]


def _require_coordinator(actor: Actor) -> None:
    if actor.role is not Role.COORDINATOR:
        raise ActionNotPermitted("only the network coordinator maintains the network registry")


class Network(RecordedAggregate):
    """Policy and registry of one PSEA network."""

    class Established(Aggregate.Created):
        actor: Actor
        name: str
        policy: NetworkPolicy

    class PolicySet(Aggregate.Event):
        actor: Actor
        policy: NetworkPolicy

    class AgencyRegistered(Aggregate.Event):
        actor: Actor
        code: str
        name: str
        agency_type: AgencyType

    class InvestigatingEntityDesignated(Aggregate.Event):
        actor: Actor
        agency: str
        entity: str

    class FocalPointAppointed(Aggregate.Event):
        actor: Actor
        agency: str
        user: str

    class FocalPointWithdrawn(Aggregate.Event):
        actor: Actor
        agency: str
        user: str

    class ServiceProviderRegistered(Aggregate.Event):
        actor: Actor
        code: str
        name: str
        service_types: tuple[ServiceType, ...]
        areas: tuple[str, ...]

    class AgencyShareKeyRegistered(Aggregate.Event):
        actor: Actor
        agency: str
        public_key: str
        key_id: str

    @staticmethod
    def create_id() -> UUID:
        return NETWORK_ID

    @classmethod
    def establish(cls, *, actor: Actor, name: str, policy: NetworkPolicy, at: datetime) -> Network:
        """Start the network's registry with its policy."""
        _require_coordinator(actor)
        if not name.strip():
            raise InvalidCommand("the network needs a name")
        return cls(actor=actor, name=name, policy=policy, timestamp=at)

    @event(Established)
    def __init__(
        self, *, actor: Actor, name: str, policy: NetworkPolicy, timestamp: datetime
    ) -> None:
        self.name = name
        self.policy = policy
        self.agencies: dict[str, AgencyRecord] = {}
        self.providers: dict[str, ServiceProviderRecord] = {}

    # --- commands ---

    def set_policy(self, *, actor: Actor, policy: NetworkPolicy, at: datetime) -> None:
        """Replace the network's deadlines and thresholds."""
        _require_coordinator(actor)
        self._policy_set(actor=actor, policy=policy, timestamp=at)

    def register_agency(
        self, *, actor: Actor, code: str, name: str, agency_type: AgencyType, at: datetime
    ) -> None:
        """Add a member agency under a code used in subjects and references."""
        _require_coordinator(actor)
        validate_code("agency", code)
        if code in self.agencies:
            raise AgencyAlreadyRegistered(f"agency {code!r} is already registered")
        if not name.strip():
            raise InvalidCommand("an agency needs a name")
        self._agency_registered(
            actor=actor, code=code, name=name, agency_type=agency_type, timestamp=at
        )

    def designate_investigating_entity(
        self, *, actor: Actor, agency: str, entity: str, at: datetime
    ) -> None:
        """Name the unit of ``agency`` that investigates its personnel's misconduct."""
        _require_coordinator(actor)
        self.agency(agency)
        validate_code("investigating entity", entity)
        self._investigating_entity_designated(
            actor=actor, agency=agency, entity=entity, timestamp=at
        )

    def appoint_focal_point(self, *, actor: Actor, agency: str, user: str, at: datetime) -> None:
        """Record that ``user`` is a PSEA focal point of ``agency``."""
        _require_coordinator(actor)
        validate_user(user)
        if user in self.agency(agency).focal_points:
            return
        self._focal_point_appointed(actor=actor, agency=agency, user=user, timestamp=at)

    def withdraw_focal_point(self, *, actor: Actor, agency: str, user: str, at: datetime) -> None:
        """Record that ``user`` is no longer a focal point of ``agency``."""
        _require_coordinator(actor)
        if user not in self.agency(agency).focal_points:
            raise NotAFocalPoint(f"{user!r} is not a focal point of {agency!r}")
        self._focal_point_withdrawn(actor=actor, agency=agency, user=user, timestamp=at)

    def register_service_provider(
        self,
        *,
        actor: Actor,
        code: str,
        name: str,
        service_types: tuple[ServiceType, ...],
        areas: tuple[str, ...],
        at: datetime,
    ) -> None:
        """Add a provider to the referral pathway for these services in these areas."""
        _require_coordinator(actor)
        validate_code("service provider", code)
        if code in self.providers:
            raise ServiceProviderAlreadyRegistered(f"provider {code!r} is already registered")
        if not service_types:
            raise InvalidCommand("a service provider offers at least one service type")
        if not areas:
            raise InvalidCommand("a service provider covers at least one area")
        if len(set(areas)) > MOST_AREAS:
            raise InvalidCommand(f"a service provider covers at most {MOST_AREAS} areas")
        if not all(AREA_CODE.fullmatch(area) for area in areas):
            raise InvalidCommand("an area is an area code: 1-24 letters, digits, '.', '_', '-'")
        self._service_provider_registered(
            actor=actor,
            code=code,
            name=name,
            service_types=tuple(sorted(set(service_types))),
            areas=tuple(sorted(set(areas))),
            timestamp=at,
        )

    def register_agency_share_key(
        self, *, actor: Actor, agency: str, public_key: str, at: datetime
    ) -> None:
        """Register (or replace) the X25519 public key that personal data shared with
        ``agency`` is sealed to. The same key again changes nothing."""
        _require_coordinator(actor)
        record = self.agency(agency)
        raw = share_key_bytes(public_key)
        if record.share_key is not None and record.share_key.public_key == public_key:
            return
        self._agency_share_key_registered(
            actor=actor,
            agency=agency,
            public_key=public_key,
            key_id=share_key_id(raw),
            timestamp=at,
        )

    # --- queries used by other aggregates' rules ---

    def agency(self, code: str) -> AgencyRecord:
        """The registered agency, or ``UnknownAgency``."""
        try:
            return self.agencies[code]
        except KeyError:
            raise UnknownAgency(code) from None

    def investigating_entity_of(self, agency: str) -> str:
        """The entity that investigates ``agency``'s personnel."""
        entity = self.agency(agency).investigating_entity
        if entity is None:
            raise NoInvestigatingEntity(f"agency {agency!r} has no investigating entity yet")
        return entity

    def provider_offering(self, provider: str, service_type: ServiceType) -> ServiceProviderRecord:
        """The provider, if it offers ``service_type``; otherwise a named error."""
        try:
            record = self.providers[provider]
        except KeyError:
            raise UnknownServiceProvider(f"provider {provider!r} is not on the pathway") from None
        if service_type not in record.service_types:
            raise ServiceNotOffered(f"provider {provider!r} does not offer {service_type}")
        return record

    def providers_of(self, service_type: ServiceType, area: str | None = None) -> list[str]:
        """Codes of providers on the pathway for ``service_type`` (in ``area`` if given)."""
        return sorted(
            p.code
            for p in self.providers.values()
            if service_type in p.service_types and (area is None or area in p.areas)
        )

    # --- recorded facts ---

    @event(PolicySet)
    def _policy_set(self, *, actor: Actor, policy: NetworkPolicy, timestamp: datetime) -> None:
        self.policy = policy

    @event(AgencyRegistered)
    def _agency_registered(
        self, *, actor: Actor, code: str, name: str, agency_type: AgencyType, timestamp: datetime
    ) -> None:
        self.agencies[code] = AgencyRecord(code=code, name=name, agency_type=agency_type)

    @event(InvestigatingEntityDesignated)
    def _investigating_entity_designated(
        self, *, actor: Actor, agency: str, entity: str, timestamp: datetime
    ) -> None:
        self.agencies[agency] = replace(self.agencies[agency], investigating_entity=entity)

    @event(FocalPointAppointed)
    def _focal_point_appointed(
        self, *, actor: Actor, agency: str, user: str, timestamp: datetime
    ) -> None:
        record = self.agencies[agency]
        self.agencies[agency] = replace(record, focal_points=record.focal_points | {user})

    @event(FocalPointWithdrawn)
    def _focal_point_withdrawn(
        self, *, actor: Actor, agency: str, user: str, timestamp: datetime
    ) -> None:
        record = self.agencies[agency]
        self.agencies[agency] = replace(record, focal_points=record.focal_points - {user})

    @event(ServiceProviderRegistered)
    def _service_provider_registered(
        self,
        *,
        actor: Actor,
        code: str,
        name: str,
        service_types: tuple[ServiceType, ...],
        areas: tuple[str, ...],
        timestamp: datetime,
    ) -> None:
        self.providers[code] = ServiceProviderRecord(
            code=code, name=name, service_types=frozenset(service_types), areas=frozenset(areas)
        )

    @event(AgencyShareKeyRegistered)
    def _agency_share_key_registered(
        self, *, actor: Actor, agency: str, public_key: str, key_id: str, timestamp: datetime
    ) -> None:
        self.agencies[agency] = replace(
            self.agencies[agency], share_key=ShareKey(public_key=public_key, key_id=key_id)
        )
