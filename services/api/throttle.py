"""Throttles for the public endpoints: receipt look-ups and the web intake.

Windows are ``limits``' moving windows over its in-process ``MemoryStorage`` (one process, one
set of counters; a restart forgets them). Keys are only ever a locator or a client, never anything
derived from a receipt's secret.

``MemoryStorage`` empties a moving window's list when its entries expire but keeps the key (limits
5.8), so every locator or client ever seen would stay in memory. Each throttle therefore forgets
the keys with no hit in their window itself, at most once per window: memory follows the keys
used in the last two windows, not every key since start-up.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from services.application.receipts import ALPHABET, LOCATOR_LENGTH


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
    """Moving windows over one MemoryStorage, with the sweep that keeps its memory bounded."""

    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = _positive("window_seconds", window_seconds)
        self.storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._sweep_lock = threading.Lock()
        self._last_sweep = time.time()

    def item(self, name: str, amount: int) -> RateLimitItem:
        return RateLimitItemPerSecond(amount, self.window_seconds, namespace=name)

    def hit(self, item: RateLimitItem, key: str) -> bool:
        self._sweep()
        return self.limiter.hit(item, key)

    def refusal(self, item: RateLimitItem, key: str) -> Refusal | None:
        """A refusal if ``key`` has no hit left in its window now, else None; consumes nothing."""
        self._sweep()
        reset, remaining = self.limiter.get_window_stats(item, key)
        if remaining >= 1:
            return None
        # Strictly past the moment the oldest hit leaves the window, and at least one second.
        return Refusal(retry_after=max(1, math.floor(reset - time.time()) + 1))

    def _sweep(self) -> None:
        """Forget every key with no hit in its window, at most once per window."""
        now = time.time()
        if now - self._last_sweep < self.window_seconds or not self._sweep_lock.acquire(False):
            return
        try:
            self._last_sweep = now
            for key in list(self.storage.events):
                if self._hits_in_window(key):
                    continue
                # Again under the key's lock, which MemoryStorage's acquire_entry and its own
                # expiry take too, so that a hit landing meanwhile is not lost.
                with self.storage.locks[key]:
                    if not self._hits_in_window(key):
                        self.storage.clear(key)
        finally:
            self._sweep_lock.release()

    def _hits_in_window(self, key: str) -> int:
        return self.storage.get_moving_window(key, 0, self.window_seconds)[1]

    def tracked_keys(self) -> int:
        return len(self.storage.events)


def _check_locator(locator: str) -> str:
    # Refuse anything but a canonical locator, so that a whole code (or any text carrying its
    # secret) can never become a key.
    if len(locator) != LOCATOR_LENGTH or not all(symbol in ALPHABET for symbol in locator):
        raise ValueError("expected a canonical receipt locator (ReceiptCode.locator)")
    return locator


class FailureThrottle:
    """Failed receipt look-ups: at most `per_locator` failures per locator and `per_client` failures
    per client within `window_seconds`. Once either is exhausted, every look-up (even with the
    right code) is refused until the window frees up.

    A locator's failures count whichever client made them. ``check`` before verifying, ``failed``
    after a wrong code; a right code records nothing. Look-ups verified concurrently each pass
    ``check`` before any records its failure, so concurrency can overshoot a limit by the number
    of verifications in flight: bound that number where the look-up is served.
    """

    def __init__(self, *, per_locator: int, per_client: int, window_seconds: int) -> None:
        self._windows = _Windows(window_seconds)
        self._per_locator = self._windows.item(
            "receipt-failures-per-locator", _positive("per_locator", per_locator)
        )
        self._per_client = self._windows.item(
            "receipt-failures-per-client", _positive("per_client", per_client)
        )

    def check(self, client: str, locator: str) -> Refusal | None:
        """Before verifying: a refusal if this locator or this client has no failure left."""
        refusals = [
            refusal
            for refusal in (
                self._windows.refusal(self._per_locator, _check_locator(locator)),
                self._windows.refusal(self._per_client, client),
            )
            if refusal is not None
        ]
        if not refusals:
            return None
        return Refusal(retry_after=max(refusal.retry_after for refusal in refusals))

    def failed(self, client: str, locator: str) -> None:
        """Record one failed look-up against both the locator and the client."""
        self._windows.hit(self._per_locator, _check_locator(locator))
        self._windows.hit(self._per_client, client)

    @property
    def tracked_keys(self) -> int:
        """How many locators and clients are held in memory (a gauge, and for tests)."""
        return self._windows.tracked_keys()


class RateLimit:
    """Plain rate limit: at most `per_client` hits per `window_seconds` per client (the public web
    intake)."""

    def __init__(self, *, per_client: int, window_seconds: int) -> None:
        self._windows = _Windows(window_seconds)
        self._per_client = self._windows.item(
            "hits-per-client", _positive("per_client", per_client)
        )

    def hit(self, client: str) -> Refusal | None:
        """Consume one hit for ``client`` if one is left, else a refusal (nothing consumed)."""
        if self._windows.hit(self._per_client, client):
            return None
        refusal = self._windows.refusal(self._per_client, client)
        # The window can free up between the refused hit and the look-up: retry in a second.
        return refusal or Refusal(retry_after=1)

    @property
    def tracked_keys(self) -> int:
        """How many clients are held in memory (a gauge, and for tests)."""
        return self._windows.tracked_keys()
