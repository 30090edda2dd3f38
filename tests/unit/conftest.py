"""The test network and its people (``tests.world``), in memory: domain tests need no store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.case import Allegation, Case
from domain.network import Network
from domain.personal_data import PersonDetails
from domain.vocabulary import (
    AgeBand,
    AllegationSubtype,
    AllegationType,
    Channel,
    ComplainantRole,
    PersonnelCategory,
    Sex,
)
from tests.conftest import T0
from tests.world import (
    CLINIC,
    COORDINATOR,
    FOCAL_POINT,
    NGO_FOCAL_POINT,
    NGO_INVESTIGATOR,
    OPERATOR,
    OTHER_FOCAL_POINT,
    WFP_INVESTIGATOR,
    network_aggregate,
)

__all__ = [
    "CLINIC",
    "COORDINATOR",
    "FOCAL_POINT",
    "NGO_FOCAL_POINT",
    "NGO_INVESTIGATOR",
    "OPERATOR",
    "OTHER_FOCAL_POINT",
    "WFP_INVESTIGATOR",
]


def at(hours: float) -> object:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def network() -> Network:
    """The test network (``tests.world``), as a domain aggregate."""
    return network_aggregate(T0)


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
