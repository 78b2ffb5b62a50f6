"""Cron schedules (UTC): each enqueues a catalogue job on one member or every member of a pool.

When a schedule is due its job is queued once, with an idempotency key naming the due time, and
the next run is computed from *now*: runs missed while the control plane was down are run once,
not once per missed time.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from croniter import croniter
from sqlalchemy import select

from serverctl.db.models import Member, PoolDns, Schedule
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, catalogue, lookup
from serverctl.domain.jobs import Enqueue, JobService
from serverctl.domain.pool_job_params import POOL_PARAMS, TLS_RENEW
from serverctl.domain.principal import Principal
from serverctl.errors import NotFound, ServerCTLError, ValidationError

log = logging.getLogger(__name__)

# Presets the Cron & Jobs tab offers first. A member's own backup schedule (Restore Backups
# tab, domain/backups.py) is separate: both can exist.
PRESETS: dict[str, str] = {
    "haproxy.backup": "HAProxy backup",
    "haproxy.reload": "Reload HAProxy",
    TLS_RENEW: "TLS force renew",
}
CRON_PRINCIPAL_ROLE = "operator"


def next_runs(expression: str, after: datetime, count: int = 3) -> list[datetime]:
    iterator = croniter(expression, after)
    return [iterator.get_next(datetime) for _ in range(count)]


def check_cron(expression: str) -> str:
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5:
        raise ValidationError(
            f"cron expression {expression!r} needs 5 fields: minute hour day-of-month month "
            "day-of-week (UTC), e.g. '0 3 * * *' for 03:00 every day"
        )
    try:
        croniter(expression, utcnow())
    except (ValueError, KeyError) as exc:
        raise ValidationError(f"cron expression {expression!r} is not valid: {exc}") from None
    return expression


def _view(schedule: Schedule, now: datetime) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "pool_id": schedule.pool_id,
        "member_id": schedule.member_id,
        "job_type": schedule.job_type,
        "params": schedule.params,
        "cron": schedule.cron,
        "enabled": schedule.enabled,
        "created_at": schedule.created_at,
        "created_by": schedule.created_by,
        "last_run_at": schedule.last_run_at,
        "next_run_at": schedule.next_run_at if schedule.enabled else None,
        "next_runs": next_runs(schedule.cron, now) if schedule.enabled else [],
    }


class ScheduleService:
    def __init__(self, db: Database, jobs: JobService) -> None:
        self.db = db
        self.jobs = jobs

    def create(
        self,
        principal: Principal,
        pool_id: int,
        job_type: str,
        cron: str,
        member_id: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        principal.require("operator")
        cron = check_cron(cron)
        catalogue.kind(job_type)
        if job_type in POOL_PARAMS:
            with self.db.session() as s:
                lookup.pool(s, pool_id)
                params = POOL_PARAMS[job_type](s.get(PoolDns, pool_id), params or {})
        checked = catalogue.validate_params(job_type, params or {})
        if job_type == "agent.update":
            raise ValidationError("agent.update cannot be scheduled: run it when you upgrade")
        now = utcnow()
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            if member_id is not None:
                lookup.member(s, pool, member_id)
            schedule = Schedule(
                pool_id=pool_id,
                member_id=member_id,
                job_type=job_type,
                params=checked,
                cron=cron,
                enabled=True,
                created_by=principal.actor,
                next_run_at=next_runs(cron, now, 1)[0],
            )
            s.add(schedule)
            s.flush()
            audit.record(
                s,
                principal,
                "schedule.create",
                f"schedule:{schedule.id}",
                {"job_type": job_type, "cron": cron, "member_id": member_id},
            )
            return _view(schedule, now)

    def list(
        self, principal: Principal, pool_id: int, member_id: int | None = None
    ) -> list[dict[str, Any]]:
        principal.require("viewer")
        now = utcnow()
        with self.db.session() as s:
            lookup.pool(s, pool_id)
            query = select(Schedule).where(Schedule.pool_id == pool_id)
            if member_id is not None:
                # A member's tab shows its own schedules and the pool-wide ones that reach it.
                query = query.where(
                    (Schedule.member_id == member_id) | (Schedule.member_id.is_(None))
                )
            return [_view(x, now) for x in s.scalars(query.order_by(Schedule.id))]

    def set_enabled(
        self, principal: Principal, pool_id: int, schedule_id: int, enabled: bool
    ) -> dict[str, Any]:
        principal.require("operator")
        now = utcnow()
        with self.db.session() as s:
            schedule = self._get(s, pool_id, schedule_id)
            if schedule.enabled != enabled:
                schedule.enabled = enabled
                if enabled:
                    schedule.next_run_at = next_runs(schedule.cron, now, 1)[0]
                audit.record(
                    s, principal, "schedule.update", f"schedule:{schedule.id}", {"enabled": enabled}
                )
            return _view(schedule, now)

    def delete(self, principal: Principal, pool_id: int, schedule_id: int) -> None:
        principal.require("operator")
        with self.db.session() as s:
            schedule = self._get(s, pool_id, schedule_id)
            audit.record(
                s,
                principal,
                "schedule.delete",
                f"schedule:{schedule.id}",
                {"job_type": schedule.job_type, "cron": schedule.cron},
            )
            s.delete(schedule)

    def run_due(self, now: datetime | None = None) -> int:
        """Queue the jobs of every due schedule; returns how many jobs were queued."""
        now = now or utcnow()
        queued = 0
        with self.db.session() as s:
            due = list(
                s.scalars(
                    select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                )
            )
            work = []
            for schedule in due:
                targets = (
                    [schedule.member_id]
                    if schedule.member_id is not None
                    else list(
                        s.scalars(select(Member.id).where(Member.pool_id == schedule.pool_id))
                    )
                )
                key = f"cron:{schedule.id}:{schedule.next_run_at.isoformat()}"
                params = dict(schedule.params)
                follow = POOL_PARAMS.get(schedule.job_type)
                if follow is not None:
                    try:
                        params = follow(s.get(PoolDns, schedule.pool_id), params)
                    except ServerCTLError as exc:
                        # Skipped this time (the DNS link was removed): the next run tries again.
                        log.warning(
                            "schedule %s skips %s: %s", schedule.id, schedule.job_type, exc.message
                        )
                        targets = []
                work.append(
                    (
                        schedule.id,
                        schedule.pool_id,
                        schedule.job_type,
                        params,
                        key,
                        targets,
                    )
                )
                schedule.last_run_at = now
                schedule.next_run_at = next_runs(schedule.cron, now, 1)[0]
        for schedule_id, pool_id, job_type, params, key, targets in work:
            who = Principal(kind="cron", name=str(schedule_id), role=CRON_PRINCIPAL_ROLE)
            for member_id in targets:
                try:
                    self.jobs.enqueue(
                        who,
                        Enqueue(
                            pool_id, member_id, job_type, params, source="cron", idempotency_key=key
                        ),
                    )
                    queued += 1
                except ServerCTLError as exc:
                    log.warning(
                        "schedule %s could not queue %s on member %s: %s",
                        schedule_id,
                        job_type,
                        member_id,
                        exc.message,
                    )
        return queued

    @staticmethod
    def _get(s: Any, pool_id: int, schedule_id: int) -> Schedule:
        schedule: Schedule | None = s.get(Schedule, schedule_id)
        if schedule is None or schedule.pool_id != pool_id:
            raise NotFound(f"no schedule {schedule_id} in pool {pool_id}")
        return schedule
