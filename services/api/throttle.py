"""Throttles for the public endpoints: receipt look-ups and the web intake.

Windows are ``limits``' sliding-window counters (issue #16): per key, the hits of the current
fixed window plus the previous window's, weighted by how much of it still overlaps the sliding
window. Two counters a key, each written with an expiry of two windows, so a store forgets an
idle client or locator by itself: ``MemoryStorage`` drops expired counters on its next write
(any key's), Redis expires them (``EXPIRE``). Memory follows the keys used in the last two
windows, not every key since start-up.

Failures on a receipt's locator slow its look-ups down (``Slowdown``), they never refuse them
(issue #20): the owner of a code is never locked out by someone who saw its visible part.

The store is ``CBCM_THROTTLE_STORE``: ``memory://`` (the embedded default: this process only,
a restart forgets), or ``redis://...`` shared by every API instance, keys under
``CBCM_THROTTLE_KEY_PREFIX``. Keys are only ever a locator or a client, never anything derived
from a receipt's secret. A store that cannot be reached refuses the receipt look-ups
(``ThrottleUnavailable``): a throttle that cannot count must not let guesses through. The web
intake's limit counts in this process's memory meanwhile (``RateLimit``): a complaint is
never refused for want of a counter.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Final

import structlog
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter

from services.application.receipts import ALPHABET, LOCATOR_LENGTH

REDIS_TIMEOUT_SECONDS = 2.0
"""The longest a throttle waits for Redis before refusing the request it counts."""

LOCAL_NOTICE_SECONDS = 60.0
"""While the intake counts locally (Redis down), it says so at most this often."""

log = structlog.get_logger()


class ThrottleUnavailable(RuntimeError):
    """The shared throttle store cannot be reached: the request is refused, not let through."""


def throttle_storage(uri: str, key_prefix: str) -> Storage:
    """The store ``CBCM_THROTTLE_STORE`` names: ``memory://`` or ``redis://`` (``rediss://``)."""
    if uri in ("memory://", "memory:", "memory"):
        return MemoryStorage()
    if uri.startswith(("redis://", "rediss://")):
        return RedisStorage(
            uri,
            key_prefix=key_prefix,
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    scheme = uri.partition("://")[0] if "://" in uri else uri[:16]
    raise ValueError(f"CBCM_THROTTLE_STORE: expected memory:// or redis://..., not {scheme}://")


@dataclass(frozen=True)
class Refusal:
    retry_after: int  # whole seconds until a new attempt may succeed (>= 1)


def client_key(address: str) -> str:
    """The key one client is counted under: an IPv4 address, or the /64 network of an IPv6 one.

    One IPv6 host is usually given a whole /64, and could otherwise rotate addresses to get a fresh
    allowance each time. An IPv4-mapped IPv6 address counts as its IPv4 address. Anything that is
    not an IP address (a test client's name, a socket path) is its own key.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


class _Windows:
    """Sliding-window counters of one length over a store."""

    def __init__(self, window_seconds: int, storage: Storage | None) -> None:
        self.window_seconds = _positive("window_seconds", window_seconds)
        self.storage = storage if storage is not None else MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)

    def item(self, name: str, amount: int) -> RateLimitItem:
        return RateLimitItemPerSecond(amount, self.window_seconds, namespace=name)

    def hit(self, item: RateLimitItem, key: str) -> bool:
        try:
            return self.limiter.hit(item, key)
        except StorageError as e:
            raise ThrottleUnavailable(type(e.storage_error).__name__) from None

    def refusal(self, item: RateLimitItem, key: str) -> Refusal | None:
        """A refusal if ``key`` has no hit left in its window now, else None; consumes nothing."""
        try:
            reset, remaining = self.limiter.get_window_stats(item, key)
        except StorageError as e:
            raise ThrottleUnavailable(type(e.storage_error).__name__) from None
        if remaining >= 1:
            return None
        # Strictly past the first moment the weighted count drops below the limit; at least
        # one second.
        return Refusal(retry_after=max(1, math.floor(reset - time.time()) + 1))


def _check_locator(locator: str) -> str:
    # Refuse anything but a canonical locator, so that a whole code (or any text carrying its
    # secret) can never become a key.
    if len(locator) != LOCATOR_LENGTH or not all(symbol in ALPHABET for symbol in locator):
        raise ValueError("expected a canonical receipt locator (ReceiptCode.locator)")
    return locator


LOCATOR_COUNT_CEILING = 1 << 20
"""The per-locator failure counter counts, never refuses: its limit is only a ceiling."""


@dataclass(frozen=True)
class Slowdown:
    """How long a look-up of a locator is held, given the failures on that locator (issue #20).

    Up to ``free_failures`` failures nothing is held (typing mistakes); from then on each
    failure doubles the hold, starting at ``base_seconds``, up to ``max_seconds``. A look-up
    is held, never refused, whoever made the failures: the owner of the code waits at most
    ``max_seconds`` and is then let in, however many guesses are made at the same locator.
    """

    free_failures: int
    base_seconds: float
    max_seconds: float

    def __post_init__(self) -> None:
        _positive("free_failures", self.free_failures)
        if not 0 < self.base_seconds <= self.max_seconds:
            raise ValueError("the slow-down needs 0 < base_seconds <= max_seconds")

    def delay(self, failures: int) -> float:
        """Seconds to hold a look-up of a locator that has had ``failures`` recent failures."""
        if failures < self.free_failures:
            return 0.0
        steps = min(failures - self.free_failures, 64)  # 2**64 * base is past any cap
        return min(self.max_seconds, self.base_seconds * 2.0**steps)


class FailureThrottle:
    """Failed receipt look-ups (issue #20: slow down, never lock out).

    Per client: at most ``per_client`` failures within ``window_seconds``; once exhausted,
    that client's look-ups are refused (``check``) until its window frees up. Per locator:
    failures are counted over the same window, whoever made them, and a look-up of a locator
    is *held* for ``delay(locator)`` before it is verified (``Slowdown``), never refused: a
    guesser who knows the visible locator can slow its owner by at most ``max_seconds``, and
    cannot lock them out as the 15-minute refusal of issue #4 let anyone do.

    ``check`` before verifying, ``failed`` after a wrong code; a right code records nothing.
    Look-ups verified concurrently each pass ``check`` before any records its failure, so
    concurrency can overshoot the client limit by the number of verifications in flight:
    bound that number where the look-up is served.
    """

    def __init__(
        self,
        *,
        per_locator: int,
        per_client: int,
        window_seconds: int,
        storage: Storage | None = None,
        slowdown_base_seconds: float = 0.25,
        slowdown_max_seconds: float = 2.0,
    ) -> None:
        self._windows = _Windows(window_seconds, storage)
        self.slowdown = Slowdown(
            free_failures=_positive("per_locator", per_locator),
            base_seconds=slowdown_base_seconds,
            max_seconds=slowdown_max_seconds,
        )
        self._per_locator = self._windows.item(
            "receipt-failures-per-locator", LOCATOR_COUNT_CEILING
        )
        self._per_client = self._windows.item(
            "receipt-failures-per-client", _positive("per_client", per_client)
        )
        self.per_client = per_client
        self.window_seconds = window_seconds

    def check(self, client: str, locator: str) -> Refusal | None:
        """Before verifying: a refusal if this client has no failure left (the locator is
        checked to be canonical; its failures never refuse, they hold: ``delay``)."""
        _check_locator(locator)
        return self._windows.refusal(self._per_client, client)

    def failures(self, locator: str) -> int:
        """The failures on this locator in the sliding window (weighted, rounded down)."""
        try:
            _, remaining = self._windows.limiter.get_window_stats(
                self._per_locator, _check_locator(locator)
            )
        except StorageError as e:
            raise ThrottleUnavailable(type(e.storage_error).__name__) from None
        return LOCATOR_COUNT_CEILING - remaining

    def delay(self, locator: str) -> float:
        """How long to hold a look-up of this locator before verifying it."""
        return self.slowdown.delay(self.failures(locator))

    def failed(self, client: str, locator: str) -> None:
        """Record one failed look-up against both the locator and the client."""
        self._windows.hit(self._per_locator, _check_locator(locator))
        self._windows.hit(self._per_client, client)

    @property
    def storage(self) -> Storage:
        return self._windows.storage


class RateLimit:
    """Plain rate limit: at most `per_client` hits per `window_seconds` per client (the public web
    intake).

    While a shared store (Redis) cannot be reached, this process counts alone, in memory, with
    the same limit (ADR 27): a complaint must never be lost to an outage of a counter, and
    a flood is still bounded, by the limit times the number of API instances. The receipt
    throttles keep refusing instead (``ThrottleUnavailable``): a look-up refused loses nothing
    and can be made again, while guesses let through would weaken the guessing bound."""

    def __init__(
        self, *, per_client: int, window_seconds: int, storage: Storage | None = None
    ) -> None:
        self._windows = _Windows(window_seconds, storage)
        self._per_client = self._windows.item(
            "hits-per-client", _positive("per_client", per_client)
        )
        self._local: _Windows | None = (
            None
            if isinstance(self._windows.storage, MemoryStorage)
            else _Windows(window_seconds, MemoryStorage())
        )
        self._down_told = 0.0

    def hit(self, client: str) -> Refusal | None:
        """Consume one hit for ``client`` if one is left, else a refusal (nothing consumed)."""
        try:
            return self._hit(self._windows, client)
        except ThrottleUnavailable as e:
            if self._local is None:
                raise
            now = time.monotonic()
            if now - self._down_told >= LOCAL_NOTICE_SECONDS:
                self._down_told = now
                log.warning("throttle.counting_locally", limit="intake", error=str(e))
            return self._hit(self._local, client)

    def _hit(self, windows: _Windows, client: str) -> Refusal | None:
        if windows.hit(self._per_client, client):
            return None
        refusal = windows.refusal(self._per_client, client)
        # The window can free up between the refused hit and the look-up: retry in a second.
        return refusal or Refusal(retry_after=1)

    @property
    def storage(self) -> Storage:
        return self._windows.storage


SECONDS_PER_YEAR: Final = 365.25 * 24 * 3600


@dataclass(frozen=True)
class GuessingBound:
    """The most an online guesser gets out of the receipt look-up (ADR 20), from the
    throttle's real parameters.

    Every guess is one verification, and each client key gets at most ``per_client`` failed
    verifications into each fixed window of the sliding-window counter, plus the look-ups it
    had in flight when it reached the limit (``in_flight``): an interval of length T meets at
    most ``floor(T / window) + 2`` fixed windows. That holds whatever the schedule and
    whichever locators are tried; the slow-down only adds to the guesser's time.
    """

    per_client: int
    window_seconds: int
    in_flight: int
    secret_bits: int

    def most_guesses(self, *, clients: int, seconds: float) -> int:
        """The most wrong guesses ``clients`` client keys can have verified in ``seconds``."""
        windows = math.floor(seconds / self.window_seconds) + 2
        return clients * (self.per_client + self.in_flight) * windows

    def guesses_per_year(self, clients: int) -> int:
        return self.most_guesses(clients=clients, seconds=SECONDS_PER_YEAR)

    def years_to_search_half(self, clients: int) -> float:
        """Years before ``clients`` keys have tried half the secrets (the expected time to
        find one)."""
        return float(1 << (self.secret_bits - 1)) / self.guesses_per_year(clients)

    def chance_within(self, *, clients: int, years: float) -> float:
        """The chance of finding one given secret within ``years`` (a guess rules out one
        secret; guessed without repeats, the best a guesser can do)."""
        guesses = self.most_guesses(clients=clients, seconds=years * SECONDS_PER_YEAR)
        return guesses / float(1 << self.secret_bits)
