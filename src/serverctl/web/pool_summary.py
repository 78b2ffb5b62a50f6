"""What the pool pages say about a pool at a glance: the DNS state in words, the worst-case
failover time, and the Overview's KPI tiles. Plain functions over the services' views."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from serverctl.state import AppState
from serverctl.web.auth import WebUser


@dataclass(frozen=True)
class DnsSummary:
    """One line for the DNS state: `tone` is ok / wait / bad / off (the CSS class)."""

    tone: str
    text: str
    detail: str | None = None


def dns_summary(dns: dict[str, Any]) -> DnsSummary:
    """The state of the pool's A record, from `PoolDnsService.view`."""
    if not dns.get("linked"):
        return DnsSummary(
            "off", "DNS not linked", "Link a DNS provider on the Managed DNS tab to move traffic."
        )
    update = dns.get("update")
    if update is None:
        return DnsSummary(
            "wait",
            "DNS linked, nothing published yet",
            "The active member has not reported a public IPv4 address yet.",
        )
    if update["state"] == "pending":
        attempts = update["attempts"]
        detail = f"A {update['address']}: {attempts} attempt{'s' if attempts != 1 else ''}"
        if update["last_error"]:
            detail += f"; last error: {update['last_error']}"
        return DnsSummary("bad" if update["last_error"] else "wait", "DNS update pending", detail)
    if update["propagated_at"] is not None:
        took = update["propagation_s"]
        text = f"propagated in {took:.1f} s" if took is not None else "propagated"
        return DnsSummary("ok", text, f"A {update['address']}; {update['propagation'] or ''}")
    return DnsSummary(
        "wait",
        "applied, checking propagation",
        f"A {update['address']}" + (f"; {update['propagation']}" if update["propagation"] else ""),
    )


@dataclass(frozen=True)
class WorstCase:
    """Failover delay + one evaluation + the record's TTL: how long clients may still go to a
    failed member. `ttl_s` is None while DNS is not linked."""

    delay_s: int
    evaluation_s: int
    ttl_s: int | None

    @property
    def total_s(self) -> int | None:
        return None if self.ttl_s is None else self.delay_s + self.evaluation_s + self.ttl_s


def worst_case(state: AppState, pool: dict[str, Any], dns: dict[str, Any]) -> WorstCase:
    return WorstCase(
        delay_s=pool["failover"]["delay_s"],
        evaluation_s=max(1, math.ceil(state.settings.failover_tick_s)),
        ttl_s=dns.get("ttl") if dns.get("linked") else None,
    )


def is_ready(member: dict[str, Any]) -> bool:
    """A failover-ready standby: healthy, with a public IPv4 to publish."""
    ip = str((member.get("heartbeat") or {}).get("ip") or "")
    return (
        member["role"] == "standby"
        and member["health"]["state"] == "healthy"
        and bool(ip)
        and ":" not in ip
    )


@dataclass(frozen=True)
class BackupsTile:
    """The Backups tile: how many snapshots the pool has, and the members whose last backup
    failed or is older than their schedule promises (`problems`: one phrase per member)."""

    snapshots: int
    problems: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.problems)

    @property
    def text(self) -> str:
        return "; ".join(self.problems)


def backups_tile(summary: dict[str, Any], members: list[dict[str, Any]]) -> BackupsTile:
    """From `BackupService.pool_summary`: its member keys may be ints or (through JSON) strings."""
    names = {str(m["id"]): m["hostname"] for m in members}
    per_member = {str(k): v for k, v in (summary.get("members") or {}).items()}
    problems = []
    for member_id in summary.get("flagged") or []:
        info = per_member.get(str(member_id), {})
        host = names.get(str(member_id), f"member {member_id}")
        if info.get("failed"):
            problems.append(f"{host}: last backup failed")
        elif info.get("stale"):
            last = info.get("last_backup_at")
            problems.append(f"{host}: no recent backup" + ("" if last else " (none yet)"))
        else:
            problems.append(f"{host}: needs attention")
    return BackupsTile(int(summary.get("snapshots") or 0), tuple(problems))


def kpis(
    state: AppState, user: WebUser, pool_id: int, members: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Overview's tiles."""
    schedules = state.schedules.list(user.principal, pool_id)
    events = state.failover.events(user.principal, pool_id, limit=1)
    return {
        "healthy": sum(m["health"]["state"] == "healthy" for m in members),
        "members": len(members),
        "ready": sum(is_ready(m) for m in members),
        "standbys": sum(m["role"] == "standby" for m in members),
        "backups": backups_tile(state.backups.pool_summary(pool_id), members),
        "cron_jobs": sum(bool(x["enabled"]) for x in schedules),
        "last_failover": events[0] if events else None,
    }
