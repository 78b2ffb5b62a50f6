"""Login brute-force throttling: failed password logins counted per source, in memory.

Two sliding windows of failures, both keyed by where the attempt came from:

- per (source, account name): a handful of wrong passwords for one account from one address;
- per source: many wrong passwords from one address, whatever the accounts tried.

A source over either limit is refused (429 with Retry-After) before the password is even
checked, so a flood costs no argon2 work, until its oldest counted failure leaves the window.
There is never a lock on the account itself: an attacker cannot lock the admin out from their
own address, only themselves. A successful login clears that source's counter for that account
and nothing else, so knowing one account's password does not buy more guesses at another.

IPv6 sources are counted per /64, as one host usually holds a whole /64. The counters live in
the memory of the process that serves the login page (one process with SQLite); they are
bounded, and a restart forgets them, which costs an attacker a restart of our process.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address, ip_network

# Keys kept at most (each a short deque); past this the oldest keys are dropped first.
MAX_TRACKED_KEYS = 50_000
# Account names longer than this are counted by their start (the form allows any text).
MAX_NAME_CHARS = 128


@dataclass(frozen=True)
class ThrottleLimits:
    max_failures: int = 5
    max_failures_per_source: int = 20
    window_s: float = 300.0


def source_key(address: str | None) -> str:
    """The unit a source is counted in: the address, or its /64 for IPv6."""
    try:
        ip = ip_address((address or "").strip())
    except ValueError:
        return address or "unknown"
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


def account_key(name: str) -> str:
    return name.strip().lower()[:MAX_NAME_CHARS]


class LoginThrottle:
    """Thread-safe failure counters; `clock` is injectable (monotonic seconds) for tests."""

    def __init__(
        self, limits: ThrottleLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or ThrottleLimits()
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()
        self._longest = max(self.limits.max_failures, self.limits.max_failures_per_source)

    def retry_after(self, source: str | None, name: str) -> int | None:
        """Whole seconds until this source may try this account again, or None: go ahead."""
        now = self._clock()
        by_source, by_pair = self._keys(source, name)
        with self._lock:
            waits = [
                self._wait(key, limit, now)
                for key, limit in (
                    (by_pair, self.limits.max_failures),
                    (by_source, self.limits.max_failures_per_source),
                )
            ]
        blocked = [w for w in waits if w is not None]
        return max(blocked) if blocked else None

    def failed(self, source: str | None, name: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(source, name):
                times = self._failures.pop(key, None) or deque()
                self._prune(times, now)
                times.append(now)
                while len(times) > self._longest:
                    times.popleft()  # more than any limit counts tells nothing more
                # Re-inserted last: dict order is then the order of last failure, for eviction.
                self._failures[key] = times
            while len(self._failures) > MAX_TRACKED_KEYS:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, source: str | None, name: str) -> None:
        """Forget this source's failures for this account; its per-source count stays."""
        with self._lock:
            self._failures.pop(self._keys(source, name)[1], None)

    def tracked(self) -> int:
        """How many counters are held (for tests and a look at memory use)."""
        with self._lock:
            return len(self._failures)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _keys(source: str | None, name: str) -> tuple[tuple[str, str], tuple[str, str]]:
        where = source_key(source)
        # "" can never be an account key of a pair: the per-source counter has it to itself.
        return (where, ""), (where, "=" + account_key(name))

    def _prune(self, times: deque[float], now: float) -> None:
        horizon = now - self.limits.window_s
        while times and times[0] <= horizon:
            times.popleft()

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int | None:
        times = self._failures.get(key)
        if not times:
            return None
        self._prune(times, now)
        if not times:
            del self._failures[key]
            return None
        if len(times) < limit:
            return None
        # Allowed again once enough failures have aged out to be under the limit.
        frees_at = times[len(times) - limit] + self.limits.window_s
        return max(1, math.ceil(frees_at - now))
