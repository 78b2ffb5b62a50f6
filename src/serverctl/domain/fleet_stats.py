"""What `/metrics` reads at scrape time from the live state and the database.

A handful of queries in one session, whatever the fleet's size (no query per pool or member):
pools, members, failover events and jobs grouped in SQL, the newest completed backup of each
member and kind, and the DNS provider kinds in use. Member health is the same rule the API and
the UI apply (`domain.health`), over the live state; only a member missing from it (not loaded
yet) falls back to its stored heartbeat, as `PoolService._member_view` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serverctl.db.models import BackupSnapshot, DnsProviderAccount, FailoverEvent, Job, Member, Pool
from serverctl.db.session import Database
from serverctl.domain import health
from serverctl.domain.live import LiveState

# Failover event triggers (domain.failover): each pool reports all of them, zero included, so
# that `increase()` sees a pool's first failover.
FAILOVER_TRIGGERS = ("automatic", "manual", "cutover")
HEALTH_STATES: tuple[health.HealthState, ...] = ("pending", "healthy", "unhealthy")
ROLES = ("active", "standby")


@dataclass(frozen=True)
class FleetStats:
    # (pool, role, health) -> members; every combination of each pool is present.
    members: dict[tuple[str, str, str], int]
    # (pool, trigger) -> failover events recorded for the pool.
    failovers: dict[tuple[str, str], int]
    # (job type, state) -> jobs.
    jobs: dict[tuple[str, str], int]
    # (pool, member hostname, kind) -> seconds since its newest completed backup.
    backup_ages: dict[tuple[str, str, str], float]
    # Kinds of the configured DNS provider accounts ("powerdns", "cloudflare", ...).
    dns_provider_kinds: tuple[str, ...]


@dataclass(frozen=True)
class _PoolRow:
    name: str
    delay_s: int
    haproxy_monitored: bool
    active_member_id: int | None


@dataclass(frozen=True)
class _MemberRow:
    id: int
    pool_id: int
    hostname: str


@dataclass(frozen=True)
class _Heartbeat:
    last_seen: datetime | None
    haproxy: dict[str, Any] | None


def read(db: Database, live: LiveState, now: datetime) -> FleetStats:
    """The figures of the whole fleet at `now` (UTC); runs off the event loop."""
    with db.session() as s:
        pools = {
            row.id: _PoolRow(
                row.name, row.failover_delay_s, row.haproxy_monitored, row.active_member_id
            )
            for row in s.execute(
                select(
                    Pool.id,
                    Pool.name,
                    Pool.failover_delay_s,
                    Pool.haproxy_monitored,
                    Pool.active_member_id,
                )
            )
        }
        members = [
            _MemberRow(row.id, row.pool_id, row.hostname)
            for row in s.execute(select(Member.id, Member.pool_id, Member.hostname))
            if row.pool_id in pools  # a pool deleted between the two reads
        ]
        heartbeats = _heartbeats(s, live, [m.id for m in members])
        return FleetStats(
            members=_health_counts(pools, members, heartbeats, now),
            failovers=_failovers(s, {pool_id: pool.name for pool_id, pool in pools.items()}),
            jobs={
                (job_type, state): count
                for job_type, state, count in s.execute(
                    select(Job.type, Job.state, func.count()).group_by(Job.type, Job.state)
                )
            },
            backup_ages=_backup_ages(
                s, {m.id: (pools[m.pool_id].name, m.hostname) for m in members}, now
            ),
            dns_provider_kinds=tuple(sorted(s.scalars(select(DnsProviderAccount.kind).distinct()))),
        )


def _health_counts(
    pools: dict[int, _PoolRow],
    members: list[_MemberRow],
    heartbeats: dict[int, _Heartbeat],
    now: datetime,
) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {
        (pool.name, role, state): 0
        for pool in pools.values()
        for role in ROLES
        for state in HEALTH_STATES
    }
    for member in members:
        pool, beat = pools[member.pool_id], heartbeats[member.id]
        state = health.evaluate(
            last_seen=beat.last_seen,
            now=now,
            delay_s=pool.delay_s,
            haproxy_monitored=pool.haproxy_monitored,
            haproxy=beat.haproxy,
        ).state
        role = "active" if pool.active_member_id == member.id else "standby"
        counts[(pool.name, role, state)] += 1
    return counts


def _heartbeats(s: Session, live: LiveState, member_ids: list[int]) -> dict[int, _Heartbeat]:
    """Each member's last heartbeat and HAProxy block: live, else as last stored."""
    with live.lock:
        current = {m.member_id: m for m in live.members.values()}
    found = {
        member_id: _Heartbeat(current[member_id].last_seen, current[member_id].haproxy)
        for member_id in member_ids
        if member_id in current
    }
    missing = [member_id for member_id in member_ids if member_id not in found]
    if missing:
        for row in s.execute(
            select(Member.id, Member.last_seen_at, Member.haproxy).where(Member.id.in_(missing))
        ):
            found[row.id] = _Heartbeat(row.last_seen_at, row.haproxy)
    for member_id in missing:
        found.setdefault(member_id, _Heartbeat(None, None))
    return found


def _failovers(s: Session, pool_names: dict[int, str]) -> dict[tuple[str, str], int]:
    counts = {(name, trigger): 0 for name in pool_names.values() for trigger in FAILOVER_TRIGGERS}
    for pool_id, trigger, count in s.execute(
        select(FailoverEvent.pool_id, FailoverEvent.trigger, func.count()).group_by(
            FailoverEvent.pool_id, FailoverEvent.trigger
        )
    ):
        if pool_id in pool_names:
            counts[(pool_names[pool_id], trigger)] = count
    return counts


def _backup_ages(
    s: Session, members: dict[int, tuple[str, str]], now: datetime
) -> dict[tuple[str, str, str], float]:
    """Age of each current member's newest completed backup, per kind. Snapshots of deleted
    members are kept for rebuilds but have no member left to alert about."""
    ages: dict[tuple[str, str, str], float] = {}
    for member_id, kind, newest in s.execute(
        select(BackupSnapshot.member_id, BackupSnapshot.kind, func.max(BackupSnapshot.completed_at))
        .where(BackupSnapshot.state == "completed", BackupSnapshot.member_id.is_not(None))
        .group_by(BackupSnapshot.member_id, BackupSnapshot.kind)
    ):
        if member_id in members and newest is not None:
            pool, hostname = members[member_id]
            ages[(pool, hostname, kind)] = max(0.0, (now - newest).total_seconds())
    return ages
