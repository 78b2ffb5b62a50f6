"""Support bundles: one archive with what support needs to troubleshoot a pool or a member.

The product's troubleshooting flow asks for the pool name, the member's hostname, a journalctl
excerpt and the member's health; a bundle gathers all of that and more in one download: the
pool's settings, its members, their latest heartbeats, rejections, health (alerts, the current
incident), job history with output, failover events, DNS updates, backup snapshots (metadata),
the agents' recent log lines and the versions of every part. docs/support-bundle.md lists the
files.

The agents' log lines are asked for fresh: the bundle queues an `agent.logs` job on every member
whose agent is online and waits up to `wait_s` for the results; a member that does not answer
in time is listed with the reason, and its newest earlier `agent.logs` result is used instead.
Every file is redacted (serverctl.domain.redaction) and checked before it is packed.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import or_, select

from serverctl import __version__
from serverctl.config import Settings
from serverctl.crypto import SecretBox
from serverctl.db.models import AuditEntry, DnsUpdate
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, support_archive
from serverctl.domain.alerts import AlertService
from serverctl.domain.backups import BackupService
from serverctl.domain.catalogue import TERMINAL, JobState
from serverctl.domain.dns_updates import update_view
from serverctl.domain.failover import FailoverService
from serverctl.domain.jobs import Enqueue, JobService
from serverctl.domain.pool_dns import PoolDnsService
from serverctl.domain.pools import PoolService
from serverctl.domain.principal import Principal
from serverctl.domain.redaction import Redactor, known_secrets
from serverctl.domain.support_readme import readme
from serverctl.errors import NotFound, ServerCTLError, ValidationError

DEFAULT_WAIT_S = 10
MAX_WAIT_S = 30
LOG_LINES = 500
LOG_JOB_TIMEOUT_S = 60
JOBS_PER_MEMBER = 50
HISTORY_LIMIT = 200
POLL_S = 0.25
PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "pydantic", "cryptography", "httpx", "psycopg")


@dataclass(frozen=True)
class Bundle:
    filename: str
    data: bytes
    files: list[str]
    redactions: int


@dataclass
class LogRequest:
    """One member's `agent.logs`: the fresh job asked for, and why there is none or no result."""

    member_id: int
    hostname: str
    job_id: int | None = None
    state: str | None = None
    reason: str | None = None
    # The agent.logs job whose lines the bundle holds: the fresh one, or an earlier one.
    lines_from_job: int | None = None


class SupportBundles:
    def __init__(
        self,
        *,
        db: Database,
        box: SecretBox,
        settings: Settings,
        pools: PoolService,
        jobs: JobService,
        failover: FailoverService,
        alerts: AlertService,
        backups: BackupService,
        pool_dns: PoolDnsService,
    ) -> None:
        self.db = db
        self.box = box
        self.settings = settings
        self.pools = pools
        self.jobs = jobs
        self.failover = failover
        self.alerts = alerts
        self.backups = backups
        self.pool_dns = pool_dns

    def build(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int | None = None,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> Bundle:
        """The bundle of a pool, or of one of its members. Needs the operator role: it queues
        `agent.logs` jobs on the hosts."""
        principal.require("operator")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValidationError(f"wait_s must be 0-{MAX_WAIT_S} seconds, not {wait_s:g}")
        pool = self.pools.get_pool(principal, pool_id)
        members = self.pools.list_members(principal, pool_id)
        if member_id is not None:
            members = [m for m in members if m["id"] == member_id]
            if not members:
                raise NotFound(f"pool {pool['name']!r} has no member {member_id}")
        requests = self._request_logs(principal, pool, members, wait_s)
        scope = members[0]["hostname"] if member_id is not None else None
        contents = self._contents(principal, pool, members, requests)
        bundle = self._pack(principal, pool, scope, requests, contents)
        self._audit(principal, pool, members if scope else None, requests, len(bundle.data))
        return bundle

    def _pack(
        self,
        principal: Principal,
        pool: dict[str, Any],
        scope: str | None,
        requests: list[LogRequest],
        contents: dict[str, Any],
    ) -> Bundle:
        """Redact every file, write README.txt, check for leaks, make the tar.gz."""
        generated = utcnow()
        known, problems = known_secrets(self.db, self.box, self.settings)
        redactor = Redactor(known)
        files = {name: support_archive.render(data, redactor) for name, data in contents.items()}
        about = readme(
            pool,
            scope,
            principal.actor,
            generated,
            requests,
            sorted(contents),
            redactor.count,
            problems,
        )
        files = {"README.txt": support_archive.render(about, redactor), **files}
        support_archive.check_leaks(files, redactor)
        stamp = generated.strftime("%Y%m%dT%H%M%SZ")
        folder = f"serverctl-support-{pool['name']}" + (f"-{scope}" if scope else "") + f"-{stamp}"
        data = support_archive.write(folder, files, generated)
        return Bundle(f"{folder}.tar.gz", data, sorted(files), redactor.count)

    # -- the agents' logs -----------------------------------------------------------------------

    def _request_logs(
        self,
        principal: Principal,
        pool: dict[str, Any],
        members: list[dict[str, Any]],
        wait_s: float,
    ) -> list[LogRequest]:
        requests = [LogRequest(m["id"], m["hostname"]) for m in members]
        for request, member in zip(requests, members, strict=True):
            offline = _offline(pool, member)
            if offline:
                request.reason = f"not asked: {offline}"
                continue
            try:
                job = self.jobs.enqueue(
                    principal,
                    Enqueue(
                        pool["id"],
                        member["id"],
                        "agent.logs",
                        {"lines": LOG_LINES},
                        timeout_s=LOG_JOB_TIMEOUT_S,
                    ),
                )
            except ServerCTLError as exc:
                request.reason = f"not asked: {exc.message}"
                continue
            request.job_id, request.state = job["id"], job["state"]
        self._wait(principal, requests, wait_s)
        for request in requests:
            request.reason = request.reason or _unanswered(request, wait_s)
        return requests

    def _wait(self, principal: Principal, requests: list[LogRequest], wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        waiting = [r for r in requests if r.job_id is not None and r.state not in TERMINAL]
        while waiting and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            for request in waiting:
                job = self.jobs.get(principal, request.job_id or 0)
                request.state = job["state"]
                if request.state in (JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED):
                    request.reason = f"job {job['id']} {request.state}: {job['summary']}"
            waiting = [r for r in waiting if r.state not in TERMINAL]

    def _log_files(
        self, principal: Principal, pool_id: int, request: LogRequest
    ) -> tuple[dict[str, Any], str]:
        """(agent-log.json, agent-log.txt) of one member: the newest completed agent.logs."""
        found, _ = self.jobs.list_jobs(
            principal, pool_id, request.member_id, state="completed", job_type="agent.logs", limit=1
        )
        meta: dict[str, Any] = {
            "requested_job_id": request.job_id,
            "requested_job_state": request.state,
            "reason": request.reason,
        }
        if not found:
            return meta, f"No log lines from the agent of {request.hostname}: {request.reason}\n"
        job = found[0]
        request.lines_from_job = job["id"]
        result = dict(job.get("result") or {})
        text = str(result.pop("text", "") or job.get("output") or "")
        meta.update(result, job_id=job["id"], finished_at=job["finished_at"])
        return meta, text

    # -- what goes in ---------------------------------------------------------------------------

    def _contents(
        self,
        principal: Principal,
        pool: dict[str, Any],
        members: list[dict[str, Any]],
        requests: list[LogRequest],
    ) -> dict[str, Any]:
        pool_id = pool["id"]
        contents: dict[str, Any] = {
            "pool.json": {
                "pool": pool,
                "alerts": self.alerts.pool_alerts(principal, pool_id),
                "incident": self.failover.incident(pool_id),
                "dns": self.pool_dns.view(principal, pool_id, read_provider=False),
            },
            "members.json": members,
            "failover-events.json": self.failover.events(principal, pool_id, limit=HISTORY_LIMIT),
            "dns-updates.json": self._dns_updates(pool_id),
            "alerts.json": self._alerts(principal, pool_id, members),
            "audit.json": self._audit_entries(pool_id, members),
        }
        statuses: dict[int, dict[str, Any]] = {}
        for member, request in zip(members, requests, strict=True):
            base = f"members/{member['hostname']}"
            contents.update(self._member_files(principal, pool_id, member, request, base))
            statuses[member["id"]] = contents[f"{base}/heartbeat.json"]["status"]
        contents["agent-logs.json"] = [asdict(r) for r in requests]
        contents["versions.json"] = self._versions(members, statuses)
        return contents

    def _member_files(
        self,
        principal: Principal,
        pool_id: int,
        member: dict[str, Any],
        request: LogRequest,
        base: str,
    ) -> dict[str, Any]:
        member_id = member["id"]
        jobs, total = self.jobs.list_jobs(principal, pool_id, member_id, limit=JOBS_PER_MEMBER)
        meta, text = self._log_files(principal, pool_id, request)
        return {
            f"{base}/heartbeat.json": {
                "heartbeat": member["heartbeat"],
                "health": member["health"],
                "last_rejection": member["last_rejection"],
                "status": self.pools.member_status(principal, pool_id, member_id),
            },
            f"{base}/rejections.json": self.pools.rejections(
                principal, pool_id, member_id, limit=HISTORY_LIMIT
            ),
            f"{base}/alert-settings.json": self.alerts.member_alerts(principal, pool_id, member_id),
            f"{base}/jobs.json": {"total": total, "newest": [_job_entry(j) for j in jobs]},
            f"{base}/backups.json": [
                _snapshot_entry(s)
                for s in self.backups.list_snapshots(principal, pool_id, member_id)
            ],
            f"{base}/agent-log.json": meta,
            f"{base}/agent-log.txt": text,
        }

    def _alerts(
        self, principal: Principal, pool_id: int, members: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if len(members) == 1:
            return self.alerts.history(principal, pool_id, members[0]["id"], HISTORY_LIMIT)
        return self.alerts.history(principal, pool_id, limit=HISTORY_LIMIT)

    def _dns_updates(self, pool_id: int) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(
                select(DnsUpdate)
                .where(DnsUpdate.pool_id == pool_id)
                .order_by(DnsUpdate.id.desc())
                .limit(HISTORY_LIMIT)
            )
            return [update_view(row) for row in rows]

    def _audit_entries(self, pool_id: int, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        targets = [f"pool:{pool_id}"] + [f"member:{m['id']}" for m in members]
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditEntry)
                .where(or_(*(AuditEntry.target == t for t in targets)))
                .order_by(AuditEntry.id.desc())
                .limit(HISTORY_LIMIT)
            )
            return [
                {
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                    "source_ip": e.source_ip,
                }
                for e in rows
            ]

    def _versions(
        self, members: list[dict[str, Any]], statuses: dict[int, dict[str, Any]]
    ) -> dict[str, Any]:
        hosts = []
        for member in members:
            info = statuses.get(member["id"], {}).get("info") or {}
            heartbeat = member["heartbeat"] or {}
            hosts.append(
                {
                    "hostname": member["hostname"],
                    "agent": heartbeat.get("version"),
                    "haproxy": info.get("version"),
                }
            )
        return {
            "serverctl": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "database": self._database(),
            "packages": {name: _package_version(name) for name in PACKAGES},
            "members": hosts,
            "settings": {
                "public_url": self.settings.public_url,
                "tls": self.settings.uses_tls,
                "heartbeat_interval_s": self.settings.heartbeat_interval_s,
                "last_seen_flush_s": self.settings.last_seen_flush_s,
                "failover_tick_s": self.settings.failover_tick_s,
                "job_pending_ttl_s": self.settings.job_pending_ttl_s,
                "dns_timeout_s": self.settings.dns_timeout_s,
                "trusted_proxies": [str(n) for n in self.settings.trusted_proxies],
            },
        }

    def _database(self) -> dict[str, Any]:
        with self.db.engine.connect() as connection:
            dialect = connection.dialect
            version = dialect.server_version_info
        return {
            "dialect": dialect.name,
            "driver": dialect.driver,
            "version": ".".join(str(part) for part in version) if version else None,
        }

    def _audit(
        self,
        principal: Principal,
        pool: dict[str, Any],
        members: list[dict[str, Any]] | None,
        requests: list[LogRequest],
        size: int,
    ) -> None:
        target = f"member:{members[0]['id']}" if members else f"pool:{pool['id']}"
        detail = {
            "pool": pool["name"],
            "member": members[0]["hostname"] if members else None,
            "log_jobs": [r.job_id for r in requests if r.job_id is not None],
            "bytes": size,
        }
        with self.db.session() as s:
            audit.record(s, principal, "support_bundle.download", target, detail)


def _offline(pool: dict[str, Any], member: dict[str, Any]) -> str | None:
    """Why the member's agent cannot be asked for its log now; None when it is online."""
    if member["heartbeat"] is None:
        return "its agent has never sent a heartbeat"
    age = member["health"]["heartbeat_age_s"]
    delay = pool["failover"]["delay_s"]
    if age is not None and age > delay:
        return f"its agent is offline (no heartbeat for {age:.0f} s)"
    return None


def _unanswered(request: LogRequest, wait_s: float) -> str | None:
    if request.job_id is None or request.state == JobState.COMPLETED:
        return None
    if request.state == JobState.PENDING:
        return (
            f"job {request.job_id} was still pending after {wait_s:g} s: the agent had not taken "
            "it yet (it takes jobs with its heartbeats, one at a time, after any job before it)"
        )
    return f"job {request.job_id} was still {request.state} after {wait_s:g} s"


def _job_entry(job: dict[str, Any]) -> dict[str, Any]:
    if job["type"] != "agent.logs":
        return job
    # The lines are in agent-log.txt; a copy in every log job would only double the bundle.
    result = {k: v for k, v in (job.get("result") or {}).items() if k != "text"}
    return {**job, "output": "(log lines: see agent-log.txt)", "result": result or None}


def _snapshot_entry(snapshot: dict[str, Any]) -> dict[str, Any]:
    entry = dict(snapshot)
    entry["store_path"] = entry.pop("key", None)
    return entry


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
