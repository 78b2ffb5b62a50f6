"""The health rule of a member (ARCHITECTURE.md, Failover rules). Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from serverctl.db.models import Member, Pool
    from serverctl.domain.live import MemberLive

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


def of_member(
    pool: Pool,
    member: Member,
    live: MemberLive | None,
    now: datetime,
    *,
    heard_since: datetime | None = None,
) -> Health:
    """A member's health from its live state, or from its stored heartbeat when it has none.

    `heard_since`: silence counts from then at the earliest (the failover rule for the active
    member after the control plane's own start)."""
    last_seen = live.last_seen if live else member.last_seen_at
    if heard_since is not None and last_seen is not None:
        last_seen = max(last_seen, heard_since)
    return evaluate(
        last_seen=last_seen,
        now=now,
        delay_s=pool.failover_delay_s,
        haproxy_monitored=pool.haproxy_monitored,
        haproxy=live.haproxy if live else member.haproxy,
    )
