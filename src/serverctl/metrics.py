"""Counters the control plane keeps in memory for `/metrics`.

The heartbeat path only adds to plain integers here (it runs on the event loop, one thread):
no locks, no label lookups. Everything that can be read from the database or the live state at
scrape time (member health, jobs, failovers, backup age) is not counted here at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    # Accepted heartbeats; refused ones by AgentAuthError.reason.
    heartbeats_received: int = 0
    heartbeats_rejected: Counter[str] = field(default_factory=Counter)

    def heartbeat_rejected(self, reason: str) -> None:
        self.heartbeats_rejected[reason] += 1
