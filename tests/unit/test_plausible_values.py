"""The domain refuses values that a read model would turn into unbounded structure (issue #12):
times beyond the policy's bounds, policy durations beyond a century, provider areas that are
not area codes. Each refusal is a named error naming the field; nothing is recorded."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import ImplausibleTime, InvalidCommand
from domain.network import MOST_AREAS, Network
from domain.policy import LATEST_RECORDING, LONGEST_POLICY_DURATION, NetworkPolicy
from domain.vocabulary import ServiceType
from tests.unit.conftest import COORDINATOR, T0


@given(received_at=st.datetimes(timezones=st.timezones()))
def test_a_complaint_is_received_within_the_policys_year_before_it_is_recorded_or_refused(
    received_at: object,
) -> None:
    policy = NetworkPolicy()
    assert isinstance(received_at, type(T0))
    plausible = timedelta(0) <= T0 - received_at <= policy.complaints_recorded_within
    if plausible:
        policy.check_received_at(received_at, T0)
    else:
        with pytest.raises(ImplausibleTime) as refused:
            policy.check_received_at(received_at, T0)
        assert refused.value.field == "received_at"


@given(incident=st.dates())
def test_an_incident_lies_before_its_report_and_within_the_policys_years(incident: date) -> None:
    policy = NetworkPolicy()
    received_on = T0.date()
    plausible = timedelta(0) <= received_on - incident <= policy.incidents_reported_within
    if plausible:
        policy.check_incident_date(incident, T0)
    else:
        with pytest.raises(ImplausibleTime) as refused:
            policy.check_incident_date(incident, T0)
        assert refused.value.field == "incident_date"


@given(
    name=st.sampled_from(
        [
            "assess_within",
            "acknowledge_within",
            "personal_data_retention",
            "incidents_reported_within",
        ]
    ),
    days=st.integers(min_value=-999_999_999, max_value=999_999_999),
)
def test_a_policy_duration_is_positive_and_at_most_a_century(name: str, days: int) -> None:
    duration = timedelta(days=days)
    if timedelta(0) < duration <= LONGEST_POLICY_DURATION:
        assert getattr(NetworkPolicy(**{name: duration}), name) == duration
    else:
        with pytest.raises(ImplausibleTime) as refused:
            NetworkPolicy(**{name: duration})
        assert refused.value.field == name


def _provider(network: Network, areas: tuple[str, ...]) -> None:
    network.register_service_provider(
        actor=COORDINATOR,
        code="clinic-z",
        name="Clinic Z",
        service_types=(ServiceType.MEDICAL,),
        areas=areas,
        at=T0,
    )


@pytest.mark.parametrize(
    "areas",
    [("SO22", "not an area"), ("x" * 25,), tuple(f"A{n}" for n in range(MOST_AREAS + 1))],
)
def test_a_provider_covers_area_codes_only_and_a_bounded_number(
    network: Network, areas: tuple[str, ...]
) -> None:
    version = network.version
    with pytest.raises(InvalidCommand):
        _provider(network, areas)
    assert network.version == version


def test_a_provider_with_area_codes_is_registered(network: Network) -> None:
    _provider(network, ("SO22", "SO2201", "ET.04_1"))
    assert "clinic-z" in network.providers


@given(days=st.integers(min_value=1, max_value=100 * 366))
def test_a_complaint_may_be_recorded_at_most_five_years_after_it_was_received(days: int) -> None:
    duration = timedelta(days=days)
    if duration <= LATEST_RECORDING:
        assert NetworkPolicy(complaints_recorded_within=duration)
    else:
        with pytest.raises(ImplausibleTime) as refused:
            NetworkPolicy(complaints_recorded_within=duration)
        assert refused.value.field == "complaints_recorded_within"
