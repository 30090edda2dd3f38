"""The demo network: its agencies, focal points, investigating entities, providers and the
people who act for them (all synthetic), registered through the real application."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.actors import Actor, Role
from domain.network import Network
from domain.vocabulary import AgencyType, Sector, ServiceType
from services.application.mechanism import ComplaintMechanism

NETWORK_NAME = "Demo PSEA Network (synthetic data)"
COORDINATOR = Actor("psea-coordinator-1", "unhcr", Role.COORDINATOR)
"""The network coordinator, hosted (as often) by one of the UN agencies."""


@dataclass(frozen=True)
class DemoAgency:
    code: str
    name: str
    agency_type: AgencyType
    investigating_entity: str
    focal_points: tuple[str, ...]
    sectors: tuple[Sector, ...]
    """What the agency runs, so non-sensitive feedback goes to the right CFM."""


def _fps(code: str, count: int) -> tuple[str, ...]:
    return tuple(f"fp-{code}-{i}" for i in range(1, count + 1))


AGENCIES: tuple[DemoAgency, ...] = (
    DemoAgency(
        "unhcr",
        "UNHCR",
        AgencyType.UN_AGENCY,
        "unhcr-igo",
        _fps("unhcr", 3),
        (Sector.PROTECTION, Sector.SHELTER, Sector.CAMP_MANAGEMENT),
    ),
    DemoAgency(
        "unicef",
        "UNICEF",
        AgencyType.UN_AGENCY,
        "unicef-oiai",
        _fps("unicef", 3),
        (Sector.WASH, Sector.EDUCATION, Sector.NUTRITION),
    ),
    DemoAgency(
        "wfp",
        "WFP",
        AgencyType.UN_AGENCY,
        "wfp-oig",
        _fps("wfp", 2),
        (Sector.FOOD_SECURITY, Sector.CASH, Sector.LOGISTICS),
    ),
    DemoAgency(
        "nrc",
        "Norwegian Refugee Council",
        AgencyType.INTERNATIONAL_NGO,
        "nrc-investigations",
        _fps("nrc", 2),
        (Sector.SHELTER, Sector.EDUCATION, Sector.LIVELIHOODS),
    ),
    DemoAgency(
        "irc",
        "International Rescue Committee",
        AgencyType.INTERNATIONAL_NGO,
        "irc-ethics",
        _fps("irc", 2),
        (Sector.HEALTH, Sector.PROTECTION),
    ),
    DemoAgency(
        "local-ngo",
        "Hope Relief Association (national NGO, demo)",
        AgencyType.NATIONAL_NGO,
        "local-ngo-board",
        _fps("local-ngo", 2),
        (Sector.WASH, Sector.HEALTH, Sector.NUTRITION),
    ),
    DemoAgency(
        "women-cbo",
        "Riverside Women's Association (CBO, demo)",
        AgencyType.COMMUNITY_BASED_ORGANISATION,
        "women-cbo-committee",
        _fps("women-cbo", 2),
        (Sector.PROTECTION, Sector.LIVELIHOODS),
    ),
)
AGENCY = {a.code: a for a in AGENCIES}

AREAS = ("SS0101", "SS0102", "SS0201", "SS0302")
"""OCHA-style P-codes of the areas the demo network covers."""


@dataclass(frozen=True)
class DemoProvider:
    code: str
    name: str
    service_types: tuple[ServiceType, ...]
    areas: tuple[str, ...]


PROVIDERS: tuple[DemoProvider, ...] = (
    DemoProvider("sunrise-clinic", "Sunrise Health Clinic", (ServiceType.MEDICAL,), AREAS[:2]),
    DemoProvider("county-hospital", "County Referral Hospital", (ServiceType.MEDICAL,), AREAS[2:]),
    DemoProvider(
        "safe-space",
        "Women and Girls Safe Space (GBV case management)",
        (ServiceType.PSYCHOSOCIAL, ServiceType.SAFETY_PROTECTION, ServiceType.MATERIAL),
        AREAS,
    ),
    DemoProvider(
        "child-protection-unit",
        "Child Protection Case Management",
        (
            ServiceType.PSYCHOSOCIAL,
            ServiceType.EDUCATION,
            ServiceType.CHILD_BORN_OF_SEA,
            ServiceType.SAFETY_PROTECTION,
        ),
        AREAS,
    ),
    DemoProvider(
        "legal-aid-clinic", "Legal Aid Clinic", (ServiceType.LEGAL,), ("SS0101", "SS0201")
    ),
    DemoProvider(
        "mobile-legal-team",
        "Mobile Legal Assistance Team",
        (ServiceType.LEGAL,),
        ("SS0102", "SS0302"),
    ),
    DemoProvider(
        "safe-shelter",
        "Safe Shelter",
        (ServiceType.SAFETY_PROTECTION, ServiceType.MATERIAL),
        ("SS0102", "SS0302"),
    ),
    DemoProvider(
        "livelihoods-hub",
        "Livelihoods and Cash Hub",
        (ServiceType.LIVELIHOOD, ServiceType.MATERIAL),
        ("SS0101", "SS0201", "SS0302"),
    ),
    DemoProvider(
        "learning-centre",
        "Community Learning Centre",
        (ServiceType.EDUCATION,),
        ("SS0102", "SS0201"),
    ),
)


def focal_point_actor(agency: str, user: str) -> Actor:
    return Actor(user, agency, Role.FOCAL_POINT)


def investigator_actor(agency: str) -> Actor:
    return Actor(f"inv-{agency}-1", agency, Role.INVESTIGATING_ENTITY)


def caseworker_actor(provider: str) -> Actor:
    return Actor(f"{provider}-cw-1", provider, Role.SERVICE_PROVIDER)


def intake_operator_actor(agency: str) -> Actor:
    return Actor(f"intake-{agency}-1", agency, Role.INTAKE_OPERATOR)


# ---------------------------------------------------------------------------------- network


def build_demo_network(app: ComplaintMechanism, at: datetime) -> Network:
    """Establish the demo network, or complete it: only what is missing is recorded.

    So a second call on the same store records nothing and returns the same network.
    """
    clock = at
    step = timedelta(minutes=3)
    if not app.has_network():
        app.establish_network(actor=COORDINATOR, name=NETWORK_NAME, at=clock)
    network = app.network()
    for agency in AGENCIES:
        if agency.code not in network.agencies:
            clock += step
            app.register_agency(
                actor=COORDINATOR,
                code=agency.code,
                name=agency.name,
                agency_type=agency.agency_type,
                at=clock,
            )
        record = app.network().agency(agency.code)
        if record.investigating_entity is None:
            clock += step
            app.designate_investigating_entity(
                actor=COORDINATOR, agency=agency.code, entity=agency.investigating_entity, at=clock
            )
        for user in agency.focal_points:
            if user not in record.focal_points:
                clock += step
                app.appoint_focal_point(actor=COORDINATOR, agency=agency.code, user=user, at=clock)
    network = app.network()
    for provider in PROVIDERS:
        if provider.code not in network.providers:
            clock += step
            app.register_service_provider(
                actor=COORDINATOR,
                code=provider.code,
                name=provider.name,
                service_types=provider.service_types,
                areas=provider.areas,
                at=clock,
            )
    return app.network()
