"""Backups, restores and standby provisioning: what operators (REST, web UI) and the backup loop
call. See docs/backups.md for the contract.

`BackupService` is also the JobHooks of `haproxy.backup`, `backup.ufw` and `haproxy.restore`;
the hooks' work (snapshot rows, transfers, result checks, retention) is in `backup_jobs`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serverctl.db.models import BackupPolicy, BackupSnapshot, Job, Member, Pool
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, lookup
from serverctl.domain.alerts import AlertService
from serverctl.domain.backup_diff import reported_files, restore_diff, ufw_reported
from serverctl.domain.backup_jobs import (
    BACKUP_JOBS,
    BackupJobs,
    StoreSource,
    TransferGrant,
    restore_problem,
    store_errors,
)
from serverctl.domain.backup_policies import (
    KEEP_DAYS_RANGE,
    KEEP_LAST_RANGE,
    check_cron_or_none,
    check_keep,
    is_stale,
    policy_view,
)
from serverctl.domain.backup_views import archive_filename, snapshot_summary, snapshot_view
from serverctl.domain.jobs import Enqueue, JobHooks, JobService
from serverctl.domain.live import LiveState
from serverctl.domain.principal import Principal
from serverctl.domain.schedules import next_runs
from serverctl.errors import Conflict, NotFound, ServerCTLError, ValidationError

log = logging.getLogger(__name__)

JOB_OF_KIND = {kind: job_type for job_type, kind in BACKUP_JOBS.items()}
MAX_LIST = 500


def schedule_principal(member_id: int) -> Principal:
    """Who queues a policy's backups: `enqueued_by` reads `backup-schedule:<member id>`."""
    return Principal(kind="backup-schedule", name=str(member_id), role="operator")


class BackupService(JobHooks):
    def __init__(
        self,
        db: Database,
        live: LiveState,
        jobs: JobService,
        stores: StoreSource,
        alerts: AlertService | None = None,
    ) -> None:
        self.db = db
        self.live = live
        self.jobs = jobs
        self.stores = stores
        self.work = BackupJobs(db, stores, alerts)

    # -- backing up -----------------------------------------------------------------------------

    def enqueue_backup(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        kind: str = "haproxy",
        source: str = "operator",
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        job_type = JOB_OF_KIND.get(kind)
        if job_type is None:
            raise ValidationError(f"kind must be one of {', '.join(JOB_OF_KIND)}, not {kind!r}")
        if kind == "ufw":
            with self.db.session() as s:
                _, member = lookup.pool_member(s, pool_id, member_id)
                if ufw_reported(self._block(member)) is False:
                    raise Conflict(
                        f"{member.hostname}'s agent reports no ufw on the host: there are no "
                        "UFW rules to back up"
                    )
        request = Enqueue(pool_id, member_id, job_type, {}, source, idempotency_key)
        job = self.jobs.enqueue(principal, request)
        return {"job_id": job["id"]}

    # -- reading --------------------------------------------------------------------------------

    def list_snapshots(
        self, principal: Principal, pool_id: int, member_id: int, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The member's snapshots, newest first (no file lists: `file_count`)."""
        principal.require("viewer")
        with self.db.session() as s:
            lookup.pool_member(s, pool_id, member_id)
            rows = s.scalars(
                select(BackupSnapshot)
                .where(BackupSnapshot.member_id == member_id)
                .order_by(BackupSnapshot.id.desc())
                .limit(max(1, min(limit, MAX_LIST)))
            )
            return [snapshot_summary(x) for x in rows]

    def pool_snapshots(self, principal: Principal, pool_id: int) -> list[dict[str, Any]]:
        """Completed snapshots of the pool's members (deleted members' included: they rebuild a
        replacement host), newest first, each with its `hostname` and `kind`."""
        principal.require("viewer")
        with self.db.session() as s:
            lookup.pool(s, pool_id)
            rows = s.scalars(
                select(BackupSnapshot)
                .where(BackupSnapshot.pool_id == pool_id, BackupSnapshot.state == "completed")
                .order_by(BackupSnapshot.id.desc())
                .limit(MAX_LIST)
            )
            return [snapshot_summary(x) for x in rows]

    def get_snapshot(self, principal: Principal, snapshot_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            return snapshot_view(_snapshot(s, snapshot_id))

    def diff(
        self, principal: Principal, snapshot_id: int, target_member_id: int | None = None
    ) -> dict[str, Any]:
        """What restoring the snapshot onto the target (default: its own member) would change,
        against the files the target's agent last reported; `known` is false when it has not
        reported any (then the lists are empty)."""
        principal.require("viewer")
        with self.db.session() as s:
            snap = _snapshot(s, snapshot_id)
            target = self._target(s, snap, target_member_id)
            problem = restore_problem(snap, target.pool_id)
            if problem is not None:
                raise Conflict(problem)
            files = list((snap.manifest or {}).get("files") or [])
            reported = reported_files(self._block(target))
        if reported is None:
            empty = {"added": [], "changed": [], "removed": [], "unchanged": 0}
            return {"target_member_id": target.id, "known": False, **empty}
        return {"target_member_id": target.id, "known": True, **restore_diff(files, reported)}

    def open_archive(self, principal: Principal, snapshot_id: int) -> tuple[str, Iterator[bytes]]:
        """The archive's download name and bytes. The first chunk is read here, so a store that
        fails says so before any byte of the answer goes out."""
        principal.require("operator")
        with self.db.session() as s:
            snap = _snapshot(s, snapshot_id)
            if snap.state != "completed":
                raise Conflict(f"snapshot {snapshot_id} is {snap.state}: it has no archive")
            store, key, filename = self.work.store_of(snap), snap.key, archive_filename(snap)
            audit.record(s, principal, "backup.download", f"backup:{snapshot_id}", {"key": key})
        with store_errors("read an archive"):
            chunks = store.read(key)
            first = next(chunks, b"")
        return filename, itertools.chain([first], chunks)

    # -- restoring ------------------------------------------------------------------------------

    def restore(
        self, principal: Principal, snapshot_id: int, target_member_id: int | None = None
    ) -> dict[str, Any]:
        principal.require("operator")
        with self.db.session() as s:
            snap = _snapshot(s, snapshot_id)
            target = self._target(s, snap, target_member_id)
            problem = restore_problem(snap, target.pool_id)
            if problem is not None:
                raise Conflict(problem)
            pool_id, member_id = target.pool_id, target.id
        job = self.jobs.enqueue(
            principal,
            Enqueue(pool_id, member_id, "haproxy.restore", {"snapshot_id": snapshot_id}),
        )
        return {"job_id": job["id"]}

    def provision_standby(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        snapshot_id: int | None = None,
        install_haproxy: str | bool = "auto",
    ) -> dict[str, Any]:
        """Install HAProxy when needed, then restore a snapshot (default: the active member's
        latest completed HAProxy backup) onto a standby, as one job sequence."""
        principal.require("operator")
        if not (install_haproxy == "auto" or isinstance(install_haproxy, bool)):
            raise ValidationError(
                f'install_haproxy must be "auto", true or false, not {install_haproxy!r}'
            )
        with self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            if pool.active_member_id == member.id:
                raise Conflict(
                    f"{member.hostname} is the active member; provision a standby, or make "
                    "another member active first"
                )
            snap = (
                _snapshot(s, snapshot_id)
                if snapshot_id is not None
                else self._latest_of_active(s, pool)
            )
            problem = restore_problem(snap, pool.id)
            if problem is not None:
                raise Conflict(problem)
            install = install_haproxy is True or (
                install_haproxy == "auto" and not self._reports_haproxy(member)
            )
            chosen = snap.id
        steps: list[tuple[str, dict[str, Any]]] = [("haproxy.install", {})] if install else []
        steps.append(("haproxy.restore", {"snapshot_id": chosen}))
        job = self.jobs.start_sequence(principal, pool_id, member_id, "provision-standby", steps)
        return {"job_id": job["id"]}

    # -- deleting -------------------------------------------------------------------------------

    def delete_snapshot(self, principal: Principal, snapshot_id: int) -> None:
        """Remove the archive and its manifest from the store, then the snapshot."""
        principal.require("operator")
        with self.db.session() as s:
            snap = _snapshot(s, snapshot_id)
            if snap.state == "running":
                raise Conflict(
                    f"snapshot {snapshot_id} is still being made (job {snap.job_id}); cancel the "
                    "job or wait for it to end"
                )
            self.work.delete_objects(snap, strict=snap.state == "completed")
            audit.record(
                s,
                principal,
                "backup.delete",
                f"backup:{snap.id}",
                {"hostname": snap.hostname, "kind": snap.kind, "key": snap.key},
            )
            s.delete(snap)

    # -- policies -------------------------------------------------------------------------------

    def get_policy(self, principal: Principal, pool_id: int, member_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            lookup.pool_member(s, pool_id, member_id)
            return policy_view(member_id, s.get(BackupPolicy, member_id), utcnow())

    def set_policy(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        cron: str | None,
        keep_last: int | None,
        keep_days: int | None,
    ) -> dict[str, Any]:
        """Set the member's schedule (cron, UTC; null: on demand only) and retention."""
        principal.require("operator")
        cron = check_cron_or_none(cron)
        keep_last = check_keep("keep_last", keep_last, KEEP_LAST_RANGE)
        keep_days = check_keep("keep_days", keep_days, KEEP_DAYS_RANGE)
        now = utcnow()
        with self.db.session() as s:
            _, member = lookup.pool_member(s, pool_id, member_id)
            policy = s.get(BackupPolicy, member_id)
            if policy is None:
                policy = BackupPolicy(member_id=member_id, updated_by=principal.actor)
                s.add(policy)
            policy.cron, policy.keep_last, policy.keep_days = cron, keep_last, keep_days
            policy.next_run_at = next_runs(cron, now, 1)[0] if cron else None
            policy.updated_at, policy.updated_by = now, principal.actor
            s.flush()
            audit.record(
                s,
                principal,
                "backup.policy.update",
                f"member:{member_id}",
                {
                    "hostname": member.hostname,
                    "cron": cron,
                    "keep_last": keep_last,
                    "keep_days": keep_days,
                },
            )
            return policy_view(member_id, policy, now)

    # -- summaries and the loop -----------------------------------------------------------------

    def pool_summary(self, pool_id: int, now: datetime | None = None) -> dict[str, Any]:
        """For the Overview: completed snapshots of the pool, and per member its last HAProxy
        backup, whether that failed, and whether scheduled backups are stale."""
        now = now or utcnow()
        with self.db.session() as s:
            count = s.scalar(
                select(func.count())
                .select_from(BackupSnapshot)
                .where(BackupSnapshot.pool_id == pool_id, BackupSnapshot.state == "completed")
            )
            members: dict[int, dict[str, Any]] = {}
            for member_id in s.scalars(select(Member.id).where(Member.pool_id == pool_id)):
                members[member_id] = _member_summary(s, member_id, now)
        flagged = [m for m, v in members.items() if v["failed"] or v["stale"]]
        return {"snapshots": count or 0, "members": members, "flagged": flagged}

    def run_due(self, now: datetime | None = None) -> int:
        """Queue `haproxy.backup` for every policy that is due; returns how many were queued.
        Like cron schedules: one job per due time (idempotency key), and the next run counts
        from now, so runs missed while the control plane was down run once."""
        now = now or utcnow()
        work: list[tuple[int, int, str]] = []
        with self.db.session() as s:
            due = s.execute(
                select(BackupPolicy, Member.pool_id)
                .join(Member, Member.id == BackupPolicy.member_id)
                .where(BackupPolicy.cron.is_not(None), BackupPolicy.next_run_at <= now)
            ).all()
            for policy, pool_id in due:
                assert policy.cron is not None and policy.next_run_at is not None
                key = f"backup-policy:{policy.next_run_at.isoformat()}"
                work.append((pool_id, policy.member_id, key))
                policy.last_run_at = now
                policy.next_run_at = next_runs(policy.cron, now, 1)[0]
        queued = 0
        for pool_id, member_id, key in work:
            try:
                self.enqueue_backup(
                    schedule_principal(member_id),
                    pool_id,
                    member_id,
                    source="cron",
                    idempotency_key=key,
                )
                queued += 1
            except ServerCTLError as exc:
                log.warning("scheduled backup of member %s not queued: %s", member_id, exc.message)
        return queued

    def tidy(self, now: datetime | None = None) -> int:
        return self.work.tidy(now)

    # -- JobHooks -------------------------------------------------------------------------------

    def handout(self, s: Session, job: Job) -> dict[str, Any]:
        return self.work.handout(s, job)

    def review(
        self, job_id: int, state: str, summary: str, result: dict[str, Any] | None
    ) -> tuple[str, str]:
        return self.work.review(job_id, state, summary, result)

    def recorded(self, s: Session, job: Job) -> None:
        self.work.recorded(s, job)

    def committed(self, job_id: int) -> None:
        self.work.committed(job_id)

    # -- the agent's transfers (api/backups.py) -------------------------------------------------

    def open_transfer(self, member_id: int, token: str, direction: str) -> TransferGrant:
        return self.work.open_transfer(member_id, token, direction)

    def finish_transfer(self, grant: TransferGrant, succeeded: bool) -> None:
        self.work.finish_transfer(grant, succeeded)

    # -- internals ------------------------------------------------------------------------------

    def _block(self, member: Member) -> dict[str, Any]:
        """The member's last reported `haproxy` block: live, else as last flushed."""
        live = self.live.members.get(member.id)
        return (live.haproxy if live and live.haproxy is not None else member.haproxy) or {}

    def _reports_haproxy(self, member: Member) -> bool:
        """Does the member's agent see an installed HAProxy: monitored, and either running or
        with a known version (from the block, or `show info`)? Installing where HAProxy is
        already there does nothing, so a doubtful member gets the install step."""
        block = self._block(member)
        live = self.live.members.get(member.id)
        version = block.get("version") or ((live.info if live else None) or {}).get("version")
        return bool(block.get("monitored") and (block.get("active") or version))

    @staticmethod
    def _target(s: Session, snap: BackupSnapshot, target_member_id: int | None) -> Member:
        wanted = target_member_id if target_member_id is not None else snap.member_id
        if wanted is None:
            raise ValidationError(
                f"snapshot {snap.id}'s member ({snap.hostname}) was deleted: name the "
                "target_member_id to restore it onto"
            )
        member = s.get(Member, wanted)
        if member is None:
            raise NotFound(f"no member with id {wanted}")
        return member

    @staticmethod
    def _latest_of_active(s: Session, pool: Pool) -> BackupSnapshot:
        if pool.active_member_id is None:
            raise Conflict(f"pool {pool.name!r} has no active member to take a backup from")
        snap = s.scalar(
            select(BackupSnapshot)
            .where(
                BackupSnapshot.member_id == pool.active_member_id,
                BackupSnapshot.kind == "haproxy",
                BackupSnapshot.state == "completed",
            )
            .order_by(BackupSnapshot.id.desc())
            .limit(1)
        )
        if snap is None:
            active = s.get(Member, pool.active_member_id)
            name = active.hostname if active else f"member {pool.active_member_id}"
            raise Conflict(
                f"the active member {name} has no completed HAProxy backup yet: back it up "
                "first, or choose a snapshot"
            )
        return snap


def _snapshot(s: Session, snapshot_id: int) -> BackupSnapshot:
    snap = s.get(BackupSnapshot, snapshot_id)
    if snap is None:
        raise NotFound(f"no backup snapshot with id {snapshot_id}")
    return snap


def _member_summary(s: Session, member_id: int, now: datetime) -> dict[str, Any]:
    haproxy = (BackupSnapshot.member_id == member_id, BackupSnapshot.kind == "haproxy")
    newest = select(BackupSnapshot).order_by(BackupSnapshot.id.desc()).limit(1)
    last = s.scalar(newest.where(*haproxy))
    done = s.scalar(newest.where(*haproxy, BackupSnapshot.state == "completed"))
    completed_at = done.completed_at if done else None
    return {
        "last_backup_at": completed_at,
        "last_state": last.state if last else None,
        "failed": last is not None and last.state == "failed",
        "stale": is_stale(s.get(BackupPolicy, member_id), completed_at, now),
    }
