"""A member's backup policy: when `haproxy.backup` runs (cron, UTC) and how long snapshots stay.

Pure rules, no database: checking an operator's input, which snapshots retention deletes, and
when a member's backups count as stale.

Retention: `keep_last` and `keep_days` are both limits. A completed snapshot is deleted when it
is beyond the newest `keep_last` or older than `keep_days` days; the newest completed snapshot is
never deleted. Failed snapshots (history, no usable archive) follow the same limits, counted
among themselves. A member without a policy row keeps its last 30 completed snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from serverctl.db.models import BackupPolicy, BackupSnapshot
from serverctl.domain.schedules import check_cron, next_runs
from serverctl.errors import ValidationError

DEFAULT_KEEP_LAST = 30
KEEP_LAST_RANGE = (1, 1000)
KEEP_DAYS_RANGE = (1, 3650)
# Slack on top of twice the schedule's interval before a member's backups count as stale.
STALE_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class Retention:
    keep_last: int | None
    keep_days: int | None


DEFAULT_RETENTION = Retention(DEFAULT_KEEP_LAST, None)


def retention_of(policy: BackupPolicy | None) -> Retention:
    if policy is None:
        return DEFAULT_RETENTION
    return Retention(policy.keep_last, policy.keep_days)


def check_cron_or_none(cron: str | None) -> str | None:
    if cron is None or not cron.strip():
        return None
    return check_cron(cron)


def check_keep(name: str, value: Any, bounds: tuple[int, int]) -> int | None:
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be a whole number {low}-{high} or null, not {value!r}")
    return int(value)


def expired(snapshots: Sequence[BackupSnapshot], rule: Retention, now: datetime) -> list[int]:
    """Ids of the snapshots `rule` deletes. `snapshots` are one member's of one kind; running
    ones are never touched."""
    done = _newest_first([x for x in snapshots if x.state == "completed"])
    failed = _newest_first([x for x in snapshots if x.state == "failed"])
    doomed = _beyond(done[1:], rule, now, offset=1) + _beyond(failed, rule, now, offset=0)
    return [x.id for x in doomed]


def _newest_first(snapshots: list[BackupSnapshot]) -> list[BackupSnapshot]:
    return sorted(snapshots, key=lambda x: (x.created_at, x.id), reverse=True)


def _beyond(
    snapshots: list[BackupSnapshot], rule: Retention, now: datetime, offset: int
) -> list[BackupSnapshot]:
    cutoff = now - timedelta(days=rule.keep_days) if rule.keep_days else None
    return [
        x
        for index, x in enumerate(snapshots, start=offset)
        if (rule.keep_last is not None and index >= rule.keep_last)
        or (cutoff is not None and x.created_at < cutoff)
    ]


def interval(cron: str, now: datetime) -> timedelta:
    """The time between the schedule's two most recent runs before `now`."""
    runs = croniter(cron, now)
    last: datetime = runs.get_prev(datetime)
    before: datetime = runs.get_prev(datetime)
    return last - before


def is_stale(
    policy: BackupPolicy | None, last_completed_at: datetime | None, now: datetime
) -> bool:
    """A scheduled member's backups are stale when the last completed one is older than twice
    the schedule's interval plus 10 minutes, or when there is none although a run was due
    (10 minutes' grace after the first run since the policy was set)."""
    if policy is None or not policy.cron:
        return False
    if last_completed_at is None:
        first_due = next_runs(policy.cron, policy.updated_at, 1)[0]
        return first_due + STALE_GRACE <= now
    return now - last_completed_at > 2 * interval(policy.cron, now) + STALE_GRACE


def policy_view(member_id: int, policy: BackupPolicy | None, now: datetime) -> dict[str, Any]:
    rule = retention_of(policy)
    cron = policy.cron if policy else None
    return {
        "member_id": member_id,
        "cron": cron,
        "keep_last": rule.keep_last,
        "keep_days": rule.keep_days,
        "default": policy is None,
        "next_run_at": policy.next_run_at if policy else None,
        "last_run_at": policy.last_run_at if policy else None,
        "next_runs": next_runs(cron, now) if cron else [],
        "updated_at": policy.updated_at if policy else None,
        "updated_by": policy.updated_by if policy else None,
    }
