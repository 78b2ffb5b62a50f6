"""Exponential backoff: 1, 2, 4, 8 ... seconds up to a cap, reset by a success."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double after each failure, capped.

    `jitter` (0..1) shortens each delay by up to that fraction, at random, so a fleet of agents
    that lost the control plane together does not come back in lock-step; it never lengthens
    a delay past the cap.
    """

    def __init__(
        self, initial: float = 1.0, factor: float = 2.0, cap: float = 30.0, jitter: float = 0.0
    ) -> None:
        if initial <= 0 or factor < 1 or cap < initial or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= cap, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        self._next = initial

    def next_delay(self) -> float:
        """Record one failure; the delay to wait before the next attempt."""
        delay = self._next
        self.failures += 1
        # Keep the running value rather than factor ** failures, which would overflow a float
        # after a long outage.
        self._next = min(self.cap, self._next * self.factor)
        if self.jitter:
            delay *= 1.0 - self.jitter * random.random()
        return delay

    def reset(self) -> None:
        self.failures = 0
        self._next = self.initial
