"""The one test network and its people, for every level of the suite.

The same registry is built on the domain's ``Network`` aggregate (unit tests, no store) and
through the application (everything with a store): ``populate`` takes either, since the
application's network commands take the domain methods' own arguments.

- The coordinator and the network's secretariat: ``ocha``.
- Member agencies ``unhcr``, ``wfp`` (UN) and ``ngo-a`` (an international NGO), each with an
  investigating entity ``<code>-oig`` and focal points (``fp-unhcr-1``, ``fp-unhcr-2``,
  ``fp-unhcr``; ``fp-wfp-1``, ``fp-wfp``; ``fp-ngo-1``).
- Service providers ``clinic-1`` (medical and psychosocial, area ``SS0101``), ``med-a``
  (medical) and ``psy-b`` (psychosocial), both in area ``SO22``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from domain.actors import Actor, Role
from domain.network import Network
from domain.policy import NetworkPolicy
from domain.vocabulary import AgencyType, ServiceType

SECRETARIAT = "ocha"
AGENCIES: dict[str, AgencyType] = {
    SECRETARIAT: AgencyType.UN_AGENCY,
    "unhcr": AgencyType.UN_AGENCY,
    "wfp": AgencyType.UN_AGENCY,
    "ngo-a": AgencyType.INTERNATIONAL_NGO,
}
FOCAL_POINTS: dict[str, tuple[str, ...]] = {
    "unhcr": ("fp-unhcr-1", "fp-unhcr-2", "fp-unhcr"),
    "wfp": ("fp-wfp-1", "fp-wfp"),
    "ngo-a": ("fp-ngo-1",),
}
INVESTIGATING_ENTITIES = {code: f"{code}-oig" for code in FOCAL_POINTS}
PROVIDERS: dict[str, tuple[str, tuple[ServiceType, ...], str]] = {
    "clinic-1": ("Clinic", (ServiceType.MEDICAL, ServiceType.PSYCHOSOCIAL), "SS0101"),
    "med-a": ("Clinic A", (ServiceType.MEDICAL,), "SO22"),
    "psy-b": ("Counselling B", (ServiceType.PSYCHOSOCIAL,), "SO22"),
}
AREA = "SO22"
"""The area of the API tests' providers."""

COORDINATOR = Actor("coord-1", SECRETARIAT, Role.COORDINATOR)
OPERATOR = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)
FOCAL_POINT = Actor("fp-unhcr-1", "unhcr", Role.FOCAL_POINT)
OTHER_FOCAL_POINT = Actor("fp-wfp-1", "wfp", Role.FOCAL_POINT)
NGO_FOCAL_POINT = Actor("fp-ngo-1", "ngo-a", Role.FOCAL_POINT)
NGO_INVESTIGATOR = Actor("inv-1", "ngo-a", Role.INVESTIGATING_ENTITY)
WFP_INVESTIGATOR = Actor("inv-wfp", "wfp", Role.INVESTIGATING_ENTITY)
CLINIC = Actor("nurse-1", "clinic-1", Role.SERVICE_PROVIDER)


class Registry(Protocol):
    """What builds the registry: the ``Network`` aggregate or the application (whose network
    commands take the aggregate's own arguments)."""

    def register_agency(
        self, *, actor: Actor, code: str, name: str, agency_type: AgencyType, at: datetime
    ) -> object: ...

    def designate_investigating_entity(
        self, *, actor: Actor, agency: str, entity: str, at: datetime
    ) -> object: ...

    def appoint_focal_point(
        self, *, actor: Actor, agency: str, user: str, at: datetime
    ) -> object: ...

    def register_service_provider(
        self,
        *,
        actor: Actor,
        code: str,
        name: str,
        service_types: tuple[ServiceType, ...],
        areas: tuple[str, ...],
        at: datetime,
    ) -> object: ...


def populate(registry: Registry, at: datetime) -> None:
    """Register the test network's agencies, investigating entities, focal points and
    providers."""
    for code, kind in AGENCIES.items():
        registry.register_agency(
            actor=COORDINATOR, code=code, name=code.upper(), agency_type=kind, at=at
        )
    for code, entity in INVESTIGATING_ENTITIES.items():
        registry.designate_investigating_entity(
            actor=COORDINATOR, agency=code, entity=entity, at=at
        )
    for code, users in FOCAL_POINTS.items():
        for user in users:
            registry.appoint_focal_point(actor=COORDINATOR, agency=code, user=user, at=at)
    for code, (name, services, area) in PROVIDERS.items():
        registry.register_service_provider(
            actor=COORDINATOR, code=code, name=name, service_types=services, areas=(area,), at=at
        )


def network_aggregate(at: datetime, policy: NetworkPolicy | None = None) -> Network:
    """The test network as a domain aggregate, in memory."""
    network = Network.establish(
        actor=COORDINATOR, name="Test network", policy=policy or NetworkPolicy(), at=at
    )
    populate(network, at)
    return network


class Application(Registry, Protocol):
    def establish_network(
        self, *, actor: Actor, name: str, at: datetime, policy: NetworkPolicy | None = None
    ) -> object: ...


def establish(app: Application, at: datetime, policy: NetworkPolicy | None = None) -> None:
    """The test network, recorded through the application."""
    app.establish_network(actor=COORDINATOR, name="Test network", at=at, policy=policy)
    populate(app, at)
