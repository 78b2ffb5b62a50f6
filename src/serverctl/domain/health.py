"""The health rule of a member (ARCHITECTURE.md, Failover rules). Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

HealthState = Literal["pending", "healthy", "unhealthy"]


@dataclass(frozen=True)
class Health:
    state: HealthState
    heartbeat_age_s: float | None
    reason: str | None


def evaluate(
    *,
    last_seen: datetime | None,
    now: datetime,
    delay_s: int,
    haproxy_monitored: bool,
    haproxy: dict[str, Any] | None,
) -> Health:
    """Unhealthy when the last heartbeat is older than the failover delay, or when HAProxy is
    monitored and the agent reports it inactive (or cannot see it at all)."""
    if last_seen is None:
        return Health("pending", None, "waiting for the first heartbeat")
    age = max(0.0, (now - last_seen).total_seconds())
    if age > delay_s:
        return Health(
            "unhealthy", age, f"no heartbeat for {age:.0f} s (failover delay {delay_s} s)"
        )
    if haproxy_monitored:
        block = haproxy or {}
        if not block.get("monitored"):
            return Health(
                "unhealthy",
                age,
                "HAProxy is monitored but the agent cannot see it on the host "
                "(no systemd unit and no pidfile)",
            )
        if block.get("active") is not True:
            source = block.get("source") or "the agent"
            return Health("unhealthy", age, f"HAProxy is not running ({source} reports inactive)")
    return Health("healthy", age, None)
