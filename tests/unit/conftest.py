"""A small network and its people, in memory: domain tests need no store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.actors import Actor, Role
from domain.case import Allegation, Case
from domain.network import Network
from domain.personal_data import PersonDetails
from domain.policy import NetworkPolicy
from domain.vocabulary import (
    AgeBand,
    AgencyType,
    AllegationSubtype,
    AllegationType,
    Channel,
    ComplainantRole,
    PersonnelCategory,
    ServiceType,
    Sex,
)
from tests.conftest import T0

COORDINATOR = Actor("coord-1", "unhcr", Role.COORDINATOR)
OPERATOR = Actor("op-1", "unhcr", Role.INTAKE_OPERATOR)
FOCAL_POINT = Actor("fp-unhcr-1", "unhcr", Role.FOCAL_POINT)
OTHER_FOCAL_POINT = Actor("fp-wfp-1", "wfp", Role.FOCAL_POINT)
NGO_FOCAL_POINT = Actor("fp-ngo-1", "ngo-a", Role.FOCAL_POINT)
NGO_INVESTIGATOR = Actor("inv-1", "ngo-a", Role.INVESTIGATING_ENTITY)
WFP_INVESTIGATOR = Actor("inv-2", "wfp", Role.INVESTIGATING_ENTITY)
CLINIC = Actor("nurse-1", "clinic-1", Role.SERVICE_PROVIDER)


def at(hours: float) -> object:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def network() -> Network:
    net = Network.establish(actor=COORDINATOR, name="Test network", policy=NetworkPolicy(), at=T0)
    for code, kind in (
        ("unhcr", AgencyType.UN_AGENCY),
        ("wfp", AgencyType.UN_AGENCY),
        ("ngo-a", AgencyType.INTERNATIONAL_NGO),
    ):
        net.register_agency(
            actor=COORDINATOR, code=code, name=code.upper(), agency_type=kind, at=T0
        )
        net.designate_investigating_entity(
            actor=COORDINATOR, agency=code, entity=f"{code}-investigations", at=T0
        )
    net.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-unhcr-1", at=T0)
    net.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-unhcr-2", at=T0)
    net.appoint_focal_point(actor=COORDINATOR, agency="ngo-a", user="fp-ngo-1", at=T0)
    net.register_service_provider(
        actor=COORDINATOR,
        code="clinic-1",
        name="Clinic",
        service_types=(ServiceType.MEDICAL, ServiceType.PSYCHOSOCIAL),
        areas=("SS0101",),
        at=T0,
    )
    return net


def allegation(**changes: object) -> Allegation:
    values: dict[str, object] = {
        "allegation_type": AllegationType.SEXUAL_EXPLOITATION,
        "subtype": AllegationSubtype.TRANSACTIONAL_SEX,
        "child_involved": False,
        "implicated_agency": "ngo-a",
        "personnel_category": PersonnelCategory.IMPLEMENTING_PARTNER,
        "incident_date": T0.date() - timedelta(days=3),
        "incident_area": "SS0101",
        "victim_sex": Sex.FEMALE,
        "victim_age_band": AgeBand.ADULT,
        "incident_place_detail": "behind the distribution point",
        "alleged_perpetrator": "driver called M.",
    }
    values.update(changes)
    return Allegation(**values)  # type: ignore[arg-type]


@pytest.fixture
def case(network: Network) -> Case:
    return Case.receive(
        actor=OPERATOR,
        received_at=T0,
        channel=Channel.HOTLINE,
        complainant_role=ComplainantRole.SURVIVOR,
        immediate_safety_risk=True,
        narrative="what the survivor said",
        complainant=PersonDetails(name="Amina", phone="+211 900 000 001"),
        survivor=PersonDetails(name="Amina", phone="+211 900 000 001"),
        network=network,
        at=T0,
    )
