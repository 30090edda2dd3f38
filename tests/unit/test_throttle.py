"""Throttles on the public endpoints: guessing receipt codes, flooding the web intake.

The windows are ``limits``' sliding-window counters (issue #16); these tests run them over
the in-memory store on a fake clock. The same throttles over Redis, shared by two API
instances: tests/integration/test_throttle_store.py."""

from __future__ import annotations

import time
from collections.abc import Callable

import limits.storage.memory
import limits.strategies
import pytest
from limits.storage import MemoryStorage

import services.api.throttle
from services.api.throttle import FailureThrottle, RateLimit, Refusal, client_key
from services.application.receipts import ReceiptCode, ReceiptHasher, new_receipt_code
from tests.api_world import cheap_hasher

WINDOW = 60


class FakeClock:
    """Stands in for the ``time`` module where limits' MemoryStorage and the throttle read it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    # MemoryStorage and the strategy take no clock; they call time.time() through their
    # modules' `time`.
    fake = FakeClock()
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    monkeypatch.setattr(limits.strategies, "time", fake)
    monkeypatch.setattr(services.api.throttle, "time", fake)
    return fake


def poll(condition: Callable[[], bool], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def keys_held(throttle: FailureThrottle | RateLimit) -> int:
    """How many counters the throttle's in-memory store holds (for tests: read, never
    changed; the throttle itself never reaches into its store)."""
    storage = throttle.storage
    assert isinstance(storage, MemoryStorage)
    return len(storage.storage)


@pytest.fixture(scope="module")
def hasher() -> ReceiptHasher:
    return cheap_hasher()


class Receipts:
    """A receipt look-up as the endpoint does it: check the client, hold the look-up as long
    as its locator's failures say (the fake clock moves on by that much), verify, record a
    failure."""

    def __init__(self, hasher: ReceiptHasher, throttle: FailureThrottle) -> None:
        self.hasher = hasher
        self.throttle = throttle
        self.verifiers: dict[str, str] = {}
        self.held: list[float] = []
        self.clock: FakeClock | None = None

    def issue(self) -> ReceiptCode:
        code = new_receipt_code()
        self.verifiers[code.locator] = self.hasher.verifier(code)
        return code

    def look_up(self, client: str, code: ReceiptCode) -> str | Refusal:
        refusal = self.throttle.check(client, code.locator)
        if refusal is not None:
            return refusal
        hold = self.throttle.delay(code.locator)
        self.held.append(hold)
        if self.clock is not None:
            self.clock.advance(hold)
        if self.hasher.verify(self.verifiers.get(code.locator), code):
            return "found"
        self.throttle.failed(client, code.locator)
        return "wrong"


def wrong(code: ReceiptCode) -> ReceiptCode:
    return ReceiptCode(code.locator, new_receipt_code().secret)


def receipts(hasher: ReceiptHasher, *, per_locator: int = 3, per_client: int = 5) -> Receipts:
    throttle = FailureThrottle(
        per_locator=per_locator, per_client=per_client, window_seconds=WINDOW
    )
    return Receipts(hasher, throttle)


# --- failed receipt look-ups --------------------------------------------------------------------


def test_failures_under_the_limits_are_allowed(clock: FakeClock, hasher: ReceiptHasher) -> None:
    # given a receipt and a limit of 3 failures per locator
    desk = receipts(hasher, per_locator=3)
    code = desk.issue()
    # when someone gets it wrong twice
    assert [desk.look_up("10.0.0.1", wrong(code)) for _ in range(2)] == ["wrong"] * 2
    # then the right code is still found, and a third wrong code is still verified
    assert desk.look_up("10.0.0.1", code) == "found"
    assert desk.look_up("10.0.0.1", wrong(code)) == "wrong"


def test_failures_on_a_locator_slow_its_look_ups_and_the_right_code_still_gets_in(
    clock: FakeClock, hasher: ReceiptHasher
) -> None:
    # given a receipt whose locator has had its 3 free failures, from three different clients
    desk = receipts(hasher, per_locator=3, per_client=5)
    code = desk.issue()
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert desk.look_up(client, wrong(code)) == "wrong"
    assert desk.held == [0.0, 0.0, 0.0]
    # when the complainant, from a fresh client, types the right code
    answer = desk.look_up("10.0.0.4", code)
    # then it is found, after a short hold (issue #20: slowed down, never locked out)
    assert answer == "found"
    assert desk.held[-1] == 0.25
    # and each further failure doubles the hold, up to its ceiling, never a refusal
    for client in ("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9"):
        assert desk.look_up(client, wrong(code)) == "wrong"
    assert desk.held[-5:] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert desk.look_up("10.0.0.4", code) == "found"
    assert desk.held[-1] == 2.0
    # while another receipt is untouched
    other = desk.issue()
    assert desk.look_up("10.0.0.4", other) == "found"
    assert desk.held[-1] == 0.0


def test_a_client_may_try_other_locators_until_its_own_limit(
    clock: FakeClock, hasher: ReceiptHasher
) -> None:
    # given a client that has failed 3 times on one locator (of its own 5)
    desk = receipts(hasher, per_locator=3, per_client=5)
    first, second, third = desk.issue(), desk.issue(), desk.issue()
    for _ in range(3):
        desk.look_up("10.0.0.1", wrong(first))
    # when it turns to another locator, it is let through until its 5th failure overall
    assert desk.look_up("10.0.0.1", wrong(second)) == "wrong"
    assert desk.look_up("10.0.0.1", wrong(second)) == "wrong"
    # then it is refused everywhere, even with a right code
    assert isinstance(desk.look_up("10.0.0.1", third), Refusal)
    # and another client is not held to its limit
    assert desk.look_up("10.0.0.2", third) == "found"


def test_a_refusal_says_when_to_retry_and_look_ups_resume_then(
    clock: FakeClock, hasher: ReceiptHasher
) -> None:
    # given a client's 3 failures at t=0, 10 and 20 s, in a 60 s window
    desk = receipts(hasher, per_locator=5, per_client=3)
    code = desk.issue()
    for _ in range(3):
        desk.look_up("10.0.0.1", wrong(code))
        clock.advance(10)
    # when refused at t=30 s
    refusal = desk.throttle.check("10.0.0.1", code.locator)
    assert refusal is not None
    # then retry_after is whole seconds, at least 1, within two windows (a sliding-window
    # counter weighs the previous window's failures as it slides out)
    assert isinstance(refusal.retry_after, int)
    assert 1 <= refusal.retry_after <= 2 * WINDOW
    # and a retry a moment before it is refused, one at it is let through
    clock.advance(refusal.retry_after - 1.5)
    assert isinstance(desk.look_up("10.0.0.1", code), Refusal)
    clock.advance(1.5)
    assert desk.look_up("10.0.0.1", code) == "found"
    # and a failure then takes the client out again, with a new time to retry
    assert desk.look_up("10.0.0.1", wrong(code)) == "wrong"
    again = desk.throttle.check("10.0.0.1", code.locator)
    assert again is not None
    assert 1 <= again.retry_after <= 2 * WINDOW


def test_a_client_out_of_failures_waits_for_its_own_window(
    clock: FakeClock, hasher: ReceiptHasher
) -> None:
    # given a client that has failed 5 times on 5 receipts
    desk = receipts(hasher, per_locator=3, per_client=5)
    codes = [desk.issue() for _ in range(6)]
    for code in codes[:5]:
        desk.look_up("10.0.0.1", wrong(code))
    refusal = desk.look_up("10.0.0.1", codes[5])
    assert isinstance(refusal, Refusal)
    assert refusal.retry_after >= 1
    # when the window has passed; then it is let through again
    clock.advance(refusal.retry_after)
    assert desk.look_up("10.0.0.1", codes[5]) == "found"


def test_the_hold_shrinks_as_failures_slide_out_of_the_window(
    clock: FakeClock, hasher: ReceiptHasher
) -> None:
    # given a locator with 6 failures (3 free) in a 60 s window, from 6 clients
    desk = receipts(hasher, per_locator=3, per_client=5)
    code = desk.issue()
    for n in range(6):
        desk.look_up(f"10.0.0.{n}", wrong(code))
    assert desk.throttle.delay(code.locator) == 2.0
    # when two windows have passed, then its look-ups are not held at all
    clock.advance(2 * WINDOW + 1)
    assert desk.throttle.delay(code.locator) == 0.0
    assert desk.look_up("10.0.1.1", code) == "found"
    assert desk.held[-1] == 0.0


def test_only_a_canonical_locator_becomes_a_key(clock: FakeClock) -> None:
    # given a whole code passed where a locator belongs
    throttle = FailureThrottle(per_locator=3, per_client=5, window_seconds=WINDOW)
    code = new_receipt_code()
    # then the throttle refuses to hold it, so its secret is never kept in memory
    for not_a_locator in (str(code), code.locator + code.secret, code.secret, code.locator.lower()):
        with pytest.raises(ValueError) as raised:
            throttle.failed("10.0.0.1", not_a_locator)
        assert code.secret not in str(raised.value)
        with pytest.raises(ValueError):
            throttle.check("10.0.0.1", not_a_locator)
    assert keys_held(throttle) == 0
    throttle.failed("10.0.0.1", code.locator)
    assert keys_held(throttle) == 2


def test_memory_holds_only_recent_locators_and_clients(clock: FakeClock) -> None:
    # given 200 clients each failing once on a different locator
    throttle = FailureThrottle(per_locator=3, per_client=5, window_seconds=WINDOW)
    for n in range(200):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", new_receipt_code().locator)
    assert keys_held(throttle) == 400
    # when two windows have passed and the throttle is used again
    clock.advance(2 * WINDOW + 1)
    survivor = new_receipt_code().locator
    throttle.failed("10.1.0.1", survivor)
    # then only what is still within a window is held (the store drops expired counters in
    # a timer thread it starts on each write: waited for, not slept on)
    assert poll(lambda: keys_held(throttle) == 2, timeout=5), keys_held(throttle)
    # and checking a client or locator never seen adds nothing
    assert throttle.check("10.9.9.9", new_receipt_code().locator) is None
    assert keys_held(throttle) == 2


def test_failures_expire_on_the_real_clock(hasher: ReceiptHasher) -> None:
    # given a client out of failures in a 1 s window, without a fake clock
    desk = Receipts(hasher, FailureThrottle(per_locator=5, per_client=1, window_seconds=1))
    code = desk.issue()
    assert desk.look_up("10.0.0.1", wrong(code)) == "wrong"
    refusal = desk.look_up("10.0.0.1", code)
    assert isinstance(refusal, Refusal)
    assert refusal.retry_after == 1
    # then the right code is found again once the window has slid on (a sliding-window
    # counter frees it from the next window boundary on, as its weight slides out)
    assert poll(lambda: desk.look_up("10.0.0.1", code) == "found", timeout=refusal.retry_after + 2)


# --- plain rate limit ---------------------------------------------------------------------------


def test_the_rate_limit_refuses_a_client_past_its_limit_but_not_another(clock: FakeClock) -> None:
    # given a limit of 3 hits per client per minute
    limit = RateLimit(per_client=3, window_seconds=WINDOW)
    # when one client hits 3 times, it is let through each time
    assert [limit.hit("10.0.0.1") for _ in range(3)] == [None, None, None]
    # then its 4th hit is refused, with a time to retry
    refusal = limit.hit("10.0.0.1")
    assert refusal is not None
    assert 1 <= refusal.retry_after <= 2 * WINDOW
    # and another client is not affected
    assert limit.hit("10.0.0.2") is None


def test_the_rate_limit_lets_a_client_through_again_after_retry_after(clock: FakeClock) -> None:
    limit = RateLimit(per_client=2, window_seconds=WINDOW)
    limit.hit("10.0.0.1")
    clock.advance(15)
    limit.hit("10.0.0.1")
    refusal = limit.hit("10.0.0.1")
    assert refusal is not None
    # refused hits consume nothing: hitting again and again does not push the wait back
    for _ in range(5):
        again = limit.hit("10.0.0.1")
        assert again is not None
        assert again.retry_after <= refusal.retry_after
    clock.advance(refusal.retry_after - 1.5)
    assert limit.hit("10.0.0.1") is not None
    clock.advance(1.5)
    assert limit.hit("10.0.0.1") is None
    # and straight after, the client is at its limit again
    assert limit.hit("10.0.0.1") is not None


def test_the_rate_limit_expires_on_the_real_clock() -> None:
    limit = RateLimit(per_client=1, window_seconds=1)
    assert limit.hit("10.0.0.1") is None
    refusal = limit.hit("10.0.0.1")
    assert refusal == Refusal(retry_after=1)
    assert poll(lambda: limit.hit("10.0.0.1") is None, timeout=refusal.retry_after + 2)


def test_the_rate_limit_forgets_idle_clients(clock: FakeClock) -> None:
    limit = RateLimit(per_client=3, window_seconds=WINDOW)
    for n in range(100):
        limit.hit(f"10.0.0.{n}")
    assert keys_held(limit) == 100
    clock.advance(2 * WINDOW + 1)
    limit.hit("10.0.1.1")
    assert poll(lambda: keys_held(limit) == 1, timeout=5), keys_held(limit)


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: FailureThrottle(per_locator=0, per_client=5, window_seconds=60), "per_locator"),
        (lambda: FailureThrottle(per_locator=3, per_client=0, window_seconds=60), "per_client"),
        (lambda: FailureThrottle(per_locator=3, per_client=5, window_seconds=0), "window"),
        (lambda: RateLimit(per_client=0, window_seconds=60), "per_client"),
        (lambda: RateLimit(per_client=3, window_seconds=-1), "window"),
    ],
)
def test_limits_must_be_positive(make: Callable[[], object], bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        make()


# --- client keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::FFFF", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
    ],
)
def test_a_client_is_keyed_by_its_ipv4_address_or_ipv6_slash_64(address: str, key: str) -> None:
    assert client_key(address) == key


def test_a_host_rotating_ipv6_addresses_in_its_64_stays_one_client(clock: FakeClock) -> None:
    limit = RateLimit(per_client=3, window_seconds=WINDOW)
    answers = [limit.hit(client_key(f"2001:db8:1:2::{n:x}")) for n in range(1, 5)]
    assert answers[:3] == [None, None, None]
    assert answers[3] is not None
    assert limit.hit(client_key("2001:db8:1:3::1")) is None
