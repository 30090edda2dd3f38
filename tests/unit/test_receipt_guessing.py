"""Guessing at a receipt whose locator is known (issue #20): an attacker who saw the visible
part of a survivor's code can slow its owner down by at most the slow-down's ceiling, never
lock them out, and gets no more guesses than the bound of ADR 20 (docs/public-pages.md).

The throttle is the real one with the settings' real defaults, on a fake clock (limits'
in-memory store reads time through its module); each attack is a schedule Hypothesis draws:
which client key guesses when, and when the owner arrives. Look-ups are played as the
endpoint plays them (``ReceiptDesk.look_up``): the client is checked when the look-up
arrives, held as long as the locator's failures say, then checked again and verified.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import limits.storage.memory
import limits.strategies
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import services.api.throttle
from services.api.routes.public import PER_CLIENT_IN_FLIGHT
from services.api.throttle import FailureThrottle, GuessingBound, Refusal
from services.application.receipts import SECRET_BITS, new_receipt_code
from services.settings import Settings
from tests.unit.test_throttle import FakeClock

DEFAULTS = Settings()
DOCS = Path(__file__).parents[2] / "docs" / "public-pages.md"
LIFETIME_YEARS = 100
"""No policy duration may exceed a century (domain.policy.LONGEST_POLICY_DURATION): a
receipt outlives no case, and no case's personal data is kept longer than that."""


def real_throttle() -> FailureThrottle:
    return FailureThrottle(
        per_locator=DEFAULTS.receipt_failures_per_locator,
        per_client=DEFAULTS.receipt_failures_per_client,
        window_seconds=DEFAULTS.receipt_failure_window_seconds,
        slowdown_base_seconds=DEFAULTS.receipt_slowdown_base_seconds,
        slowdown_max_seconds=DEFAULTS.receipt_slowdown_max_seconds,
    )


def real_bound() -> GuessingBound:
    return GuessingBound(
        per_client=DEFAULTS.receipt_failures_per_client,
        window_seconds=DEFAULTS.receipt_failure_window_seconds,
        in_flight=PER_CLIENT_IN_FLIGHT,
        secret_bits=SECRET_BITS,
    )


@dataclass(order=True)
class Arrival:
    at: float
    seq: int
    client: str = field(compare=False)
    owner: bool = field(compare=False, default=False)


@dataclass
class Outcome:
    verified_wrong: int = 0
    refused: int = 0
    owner_found_after: float | None = None
    owner_refused: bool = False
    first: float = 0.0
    last: float = 0.0


def play(clock: FakeClock, throttle: FailureThrottle, arrivals: list[Arrival]) -> Outcome:
    """Plays the arrivals in time order: arrival -> check -> hold -> check -> verify."""
    locator = new_receipt_code().locator
    outcome = Outcome(first=min(a.at for a in arrivals))
    events: list[tuple[float, int, str, Arrival]] = [(a.at, a.seq, "arrive", a) for a in arrivals]
    heapq.heapify(events)
    while events:
        at, seq, kind, arrival = heapq.heappop(events)
        clock.now = max(clock.now, at)
        if kind == "arrive":
            if throttle.check(arrival.client, locator) is not None:
                outcome.refused += 1
                outcome.owner_refused |= arrival.owner
                continue
            hold = throttle.delay(locator)
            assert 0 <= hold <= throttle.slowdown.max_seconds
            heapq.heappush(events, (at + hold, seq, "verify", arrival))
            continue
        if isinstance(throttle.check(arrival.client, locator), Refusal):
            outcome.refused += 1
            outcome.owner_refused |= arrival.owner
            continue
        if arrival.owner:
            outcome.owner_found_after = at - arrival.at
        else:
            throttle.failed(arrival.client, locator)
            outcome.verified_wrong += 1
        outcome.last = at
    return outcome


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(limits.strategies, "time", fake)
    monkeypatch.setattr(services.api.throttle, "time", fake)
    return fake


schedules = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=600, allow_nan=False),  # seconds since the last one
        st.integers(min_value=0, max_value=11),  # which of the attacker's client keys
    ),
    min_size=1,
    max_size=300,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    attack=schedules,
    owner_after=st.integers(min_value=0, max_value=300),
    burst=st.booleans(),
)
def test_an_attacker_who_knows_the_locator_cannot_lock_the_owner_out(
    clock: FakeClock, attack: list[tuple[float, int]], owner_after: int, burst: bool
) -> None:
    # given an attack on one locator from up to 12 client keys, on any schedule (a burst:
    # every guess at once), and the owner arriving in the middle of it from their own phone
    clock.now = 1_700_000_000.0
    throttle = real_throttle()
    arrivals: list[Arrival] = []
    at = clock.now
    for seq, (gap, client) in enumerate(attack):
        at += 0 if burst else gap
        arrivals.append(Arrival(at, seq, f"198.51.100.{client}"))
    owner_at = arrivals[min(owner_after, len(arrivals) - 1)].at
    arrivals.append(Arrival(owner_at, len(arrivals), "203.0.113.9", owner=True))
    # when it is played
    outcome = play(clock, throttle, arrivals)
    # then the owner is let in, after at most the slow-down's longest hold
    assert not outcome.owner_refused
    assert outcome.owner_found_after is not None
    assert outcome.owner_found_after <= DEFAULTS.receipt_slowdown_max_seconds
    # and the attacker had no more guesses verified than the bound allows
    clients = len({client for _, client in attack})
    bound = real_bound().most_guesses(clients=clients, seconds=outcome.last - outcome.first)
    assert outcome.verified_wrong <= bound


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=40, max_size=200)
)
def test_one_client_guessing_fast_gets_no_more_than_its_failures_per_window(
    clock: FakeClock, gaps: list[float]
) -> None:
    # given one client guessing as fast as it likes
    clock.now = 1_700_000_000.0
    throttle = real_throttle()
    at = clock.now
    arrivals = []
    for seq, gap in enumerate(gaps):
        at += gap
        arrivals.append(Arrival(at, seq, "198.51.100.1"))
    outcome = play(clock, throttle, arrivals)
    # then no more guesses than its failures in the windows its attack spans were verified
    windows = math.floor((outcome.last - outcome.first) / throttle.window_seconds) + 2
    assert outcome.verified_wrong <= DEFAULTS.receipt_failures_per_client * windows
    assert outcome.refused == len(gaps) - outcome.verified_wrong


def test_the_slow_down_doubles_from_the_free_failures_to_its_ceiling() -> None:
    slowdown = real_throttle().slowdown
    free = DEFAULTS.receipt_failures_per_locator
    assert [slowdown.delay(n) for n in range(free)] == [0.0] * free
    holds = [slowdown.delay(free + n) for n in range(8)]
    assert holds[0] == DEFAULTS.receipt_slowdown_base_seconds
    assert all(b == min(2 * a, slowdown.max_seconds) for a, b in itertools.pairwise(holds))
    assert slowdown.delay(10**9) == DEFAULTS.receipt_slowdown_max_seconds


def figures() -> dict[str, str]:
    """The figures docs/public-pages.md gives, computed from the settings' defaults."""
    bound = real_bound()
    out: dict[str, str] = {}
    for name, clients in (("one", 1), ("an IPv6 /48", 2**16), ("all IPv4", 2**32)):
        out[f"{name}: guesses a year"] = f"{bound.guesses_per_year(clients):.3g}"
        out[f"{name}: years to half"] = f"{bound.years_to_search_half(clients):.3g}"
        out[f"{name}: chance in {LIFETIME_YEARS} years"] = (
            f"{bound.chance_within(clients=clients, years=LIFETIME_YEARS):.2g}"
        )
    return out


def test_an_online_guesser_needs_longer_than_a_receipts_lifetime() -> None:
    # given the real limits, and guessers with one client key, 65,536 or every IPv4 address
    bound = real_bound()
    for clients in (1, 2**16, 2**32):
        # then half the 80-bit secrets take far longer to try than a receipt can live
        assert bound.years_to_search_half(clients) > 10**6 * LIFETIME_YEARS
        # and the chance of finding a given one within that life is below one in a million
        assert bound.chance_within(clients=clients, years=LIFETIME_YEARS) < 1e-6
    # and the owner waits at most the longest hold
    assert DEFAULTS.receipt_slowdown_max_seconds <= 2.0


def test_the_operators_guide_gives_the_figures_the_limits_give() -> None:
    text = DOCS.read_text(encoding="utf-8")
    table = dict(re.findall(r"<!-- figure: (.+?) -->\s*`([^`]+)`", text))
    assert table == figures(), "docs/public-pages.md: rerun and copy the figures of this test"
