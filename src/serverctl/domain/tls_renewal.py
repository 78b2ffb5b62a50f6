"""Automatic renewal of the pool's failover certificate, and the alert when an order fails.

Renewal (`renew_due`, every SERVERCTL_TLS_RENEW_CHECK_S): for each pool with a DNS link, a
failover label and ACME configured, a member whose reported failover certificate
(/etc/haproxy/certs/<fqdn>.pem) has under 30 days left (expiring, critical or expired) gets a
`tls.acme_issue` job (`force: false`) for the certificate's own names, the failover FQDN first
(names outside the pool's zone are dropped: the pool's provider cannot answer for them). A
member that never had the file is the recipe's business, not this loop's.

Never a loop on a failing order:
- the idempotency key `tls-renew:<member>:<serial>` renews one certificate once; a retry after a
  failure gets `:retry<N>`, and only after the back-off (6 h after the last failure, doubling per
  failure in a row, at most 48 h; a failure of an operator's job counts too);
- nothing is queued while a certificate job is pending or running for the member, nor while the
  CA's rate-limit back-off or Let's Encrypt's duplicate-certificate limit holds for the name set
  (the checks the order service makes, serverctl.domain.tls_orders);
- at most one renewal per pool per round: the members of a pool, whose certificates were most
  likely issued together, renew in turn, the most urgent first.

Alerts: a `tls.acme_issue` / `tls.acme_renew_force` job that ends failed or timed out raises the
pool alert `tls.certificate_failed` for its member, its message the job's summary (the CA's or
the DNS provider's own words) and what to do; one open alert per member, resolved when a later
certificate job of the member completes. Completions reach `committed` (a JobHooks); jobs that
end without a completion (timed out, lost by the agent) are found by `sweep_alerts`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from serverctl.db.models import Alert, AppSetting, Job, Member, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns import names as dns_names
from serverctl.domain import certificates
from serverctl.domain.alerts import AlertService
from serverctl.domain.catalogue import MAX_CERT_NAMES, JobState
from serverctl.domain.jobs import Enqueue, JobHooks, JobService
from serverctl.domain.live import LiveState
from serverctl.domain.principal import Principal
from serverctl.domain.tls_orders import ORDER_JOBS, TlsOrders
from serverctl.errors import ServerCTLError, ValidationError

log = logging.getLogger(__name__)

ALERT_KIND = "tls.certificate_failed"
DUE = frozenset({"expiring", "critical", "expired"})
FAILED = frozenset({JobState.FAILED, JobState.TIMED_OUT})
ACTIVE = frozenset({JobState.PENDING, JobState.RUNNING})
BACKOFF_FIRST = timedelta(hours=6)
BACKOFF_MAX = timedelta(hours=48)
KEY_PREFIX = "tls-renew"
# How far back the alert sweep looks for jobs that ended without a completion.
SWEEP_WINDOW = timedelta(days=2)
# What the loop queues as: audited as "system:tls-renewal".
RENEWAL = Principal(kind="system", name="tls-renewal", role="operator")
SOURCE = "renewal"
WHAT_TO_DO = (
    "What to do: check the ACME settings (Settings → TLS) and the pool's DNS provider "
    "(Managed DNS) against the error above, then run the recipe “Let's Encrypt (failover / "
    "HAProxy)” on the member's Recipes tab again. Automatic renewal tries again by itself after "
    "its back-off (6 hours, doubling with each failure in a row, at most 48 hours); a name set "
    "the CA rate-limited waits until the time the CA gave."
)


# -- the rules, as plain functions ----------------------------------------------------------------


class PastJob(NamedTuple):
    """A certificate job of one member, as the rules read it."""

    id: int
    state: str
    finished_at: datetime | None
    idempotency_key: str | None


class Candidate(NamedTuple):
    """A member whose failover certificate is due."""

    member_id: int
    hostname: str
    serial: str
    names: list[str]
    days_left: int


def renewal_names(sans: Iterable[str], fqdn: str, zone: str) -> list[str]:
    """The certificate's names to order again: the FQDN first, then its other SANs in the
    pool's zone (extra names the recipe added are kept), no wildcards, at most 10."""
    kept = [fqdn]
    for raw in sans:
        name = str(raw).strip().rstrip(".").lower()
        if not name or name in kept or name.startswith("*.") or not dns_names.in_zone(name, zone):
            continue
        kept.append(name)
    return kept[:MAX_CERT_NAMES]


def renewal_key(member_id: int, serial: str, attempt: int = 0) -> str:
    base = f"{KEY_PREFIX}:{member_id}:{serial}"
    return base if attempt == 0 else f"{base}:retry{attempt}"


def backoff(streak: int) -> timedelta:
    """The wait after `streak` failed certificate jobs in a row (0: none)."""
    if streak <= 0:
        return timedelta(0)
    doubled: timedelta = BACKOFF_FIRST * 2 ** min(streak - 1, 8)
    return min(doubled, BACKOFF_MAX)


def failure_streak(jobs: Sequence[PastJob]) -> tuple[int, datetime | None]:
    """Failed (or timed-out) jobs in a row, newest first, until one that completed; and when
    the newest of them ended. Cancelled jobs neither count nor break the streak."""
    streak, last = 0, None
    for job in sorted(jobs, key=lambda j: j.id, reverse=True):
        if job.state == JobState.COMPLETED:
            break
        if job.state in FAILED:
            streak += 1
            if last is None:
                last = job.finished_at
    return streak, last


def why_not(candidate: Candidate, jobs: Sequence[PastJob], now: datetime) -> str | None:
    """Why this member's certificate is not renewed this round (None: renew it). `jobs` are
    the member's certificate jobs."""
    if any(j.state in ACTIVE for j in jobs):
        return "a certificate job is already pending or running"
    prefix = renewal_key(candidate.member_id, candidate.serial)
    mine = [j for j in jobs if j.idempotency_key and _same_serial(j.idempotency_key, prefix)]
    if any(j.state == JobState.COMPLETED for j in mine):
        return "this certificate was renewed already (the agent has not reported the new one)"
    streak, last = failure_streak(jobs)
    if streak and last is not None and now - last < backoff(streak):
        again = last + backoff(streak)
        return f"backing off after {streak} failed order(s) until {again:%Y-%m-%d %H:%M} UTC"
    return None


def next_key(candidate: Candidate, jobs: Sequence[PastJob]) -> str:
    """The first renewal of a certificate has the plain key; each retry the next suffix."""
    prefix = renewal_key(candidate.member_id, candidate.serial)
    used = sum(1 for j in jobs if j.idempotency_key and _same_serial(j.idempotency_key, prefix))
    return renewal_key(candidate.member_id, candidate.serial, used)


def _same_serial(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ":retry")


def candidate_of(view: dict[str, Any] | None, fqdn: str, zone: str) -> Candidate | None:
    """A member's failover certificate (an inventory entry view) when it is due."""
    if view is None or view.get("status") not in DUE or view.get("days_left") is None:
        return None
    not_after = view.get("not_after")
    serial = str(view.get("serial") or "")
    if not serial:
        # An agent that could not read the serial: the expiry tells certificates apart too.
        serial = f"exp{int(not_after.timestamp())}" if isinstance(not_after, datetime) else "none"
    return Candidate(
        int(view["member_id"]),
        str(view.get("hostname") or ""),
        serial[:64],
        renewal_names(view.get("sans") or [], fqdn, zone),
        int(view["days_left"]),
    )


# -- the service ----------------------------------------------------------------------------------


class TlsRenewal(JobHooks):
    def __init__(
        self, db: Database, live: LiveState, jobs: JobService, alerts: AlertService
    ) -> None:
        self.db = db
        self.live = live
        self.jobs = jobs
        self.alerts = alerts

    # -- renewal --------------------------------------------------------------------------------

    def renew_due(self, now: datetime | None = None) -> list[int]:
        """One round: queue at most one renewal per pool; returns the jobs queued."""
        now = now or utcnow()
        plans: list[tuple[int, Candidate, str, str]] = []
        with self.db.session() as s:
            if s.get(AppSetting, "acme") is None:
                return []
            for link in list(s.scalars(select(PoolDns).order_by(PoolDns.pool_id))):
                planned = self._pool_plan(s, link, now)
                if planned is not None:
                    plans.append((link.pool_id, *planned))
        queued: list[int] = []
        for pool_id, candidate, fqdn, key in plans:
            try:
                job = self.jobs.enqueue(
                    RENEWAL,
                    Enqueue(
                        pool_id,
                        candidate.member_id,
                        "tls.acme_issue",
                        {"fqdn": fqdn, "names": candidate.names, "force": False},
                        source=SOURCE,
                        idempotency_key=key,
                    ),
                )
            except ServerCTLError as exc:
                log.warning(
                    "cannot queue the renewal of %s's certificate: %s",
                    candidate.hostname,
                    exc.message,
                )
                continue
            queued.append(int(job["id"]))
            log.info(
                "renewal queued for %s (job %s): %s, %d days left, serial %s",
                candidate.hostname,
                job["id"],
                ", ".join(candidate.names),
                candidate.days_left,
                candidate.serial,
            )
        return queued

    def _pool_plan(
        self, s: Session, link: PoolDns, now: datetime
    ) -> tuple[Candidate, str, str] | None:
        """The member of this pool to renew this round, its FQDN and idempotency key."""
        if not link.label:
            return None
        try:
            fqdn = dns_names.fqdn(link.label, link.zone)
        except ValidationError:
            return None
        due: list[Candidate] = []
        for row in s.execute(
            select(Member.id, Member.hostname, Member.haproxy).where(Member.pool_id == link.pool_id)
        ):
            current = self.live.members.get(row.id)
            block = current.haproxy if current is not None else row.haproxy
            found = certificates.member_certificates(row.id, row.hostname, block, fqdn, now)
            candidate = candidate_of(found.failover, fqdn, link.zone)
            if candidate is not None:
                due.append(candidate)
        if not due:
            return None
        history = _history(s, [c.member_id for c in due])
        for candidate in sorted(due, key=lambda c: (c.days_left, c.member_id)):
            jobs = history.get(candidate.member_id, [])
            reason = why_not(candidate, jobs, now)
            if reason is None:
                try:
                    # The order service's own checks: the CA's rate-limit back-off for this
                    # name set, and the duplicate-certificate limit.
                    TlsOrders.check_limits(s, link.pool_id, candidate.names)
                except ServerCTLError as exc:
                    reason = exc.message
            if reason is not None:
                log.info("renewal of %s's certificate waits: %s", candidate.hostname, reason)
                continue
            return candidate, fqdn, next_key(candidate, jobs)
        return None

    # -- alerts ---------------------------------------------------------------------------------

    def committed(self, job_id: int) -> None:
        """A certificate job's result was recorded (JobHooks): alert or resolve at once."""
        try:
            with self.db.session() as s:
                job = s.get(Job, job_id)
                member_id = job.member_id if job is not None else None
            if member_id is not None:
                self.review_member(member_id)
        except Exception:  # noqa: BLE001 - the job's result is recorded; this is the alert only
            log.exception("reviewing the certificate alert after job %s failed", job_id)

    def sweep_alerts(self, now: datetime | None = None) -> int:
        """Members whose certificate job ended lately, completion or not (a timeout, a job the
        agent lost): alert or resolve. Returns how many alerts were raised."""
        now = now or utcnow()
        with self.db.session() as s:
            members = set(
                s.scalars(
                    select(Job.member_id).where(
                        Job.type.in_(ORDER_JOBS),
                        Job.finished_at.is_not(None),
                        Job.finished_at > now - SWEEP_WINDOW,
                    )
                )
            )
        return sum(1 for member_id in sorted(members) if self.review_member(member_id))

    def review_member(self, member_id: int) -> bool:
        """Raise the alert for the member's latest certificate job when it failed and was not
        alerted yet, or resolve the open one when it completed. True when an alert was raised."""
        with self.db.session() as s:
            latest = s.scalar(
                select(Job)
                .where(
                    Job.member_id == member_id,
                    Job.type.in_(ORDER_JOBS),
                    Job.state.in_([JobState.COMPLETED, *FAILED]),
                )
                .order_by(Job.finished_at.desc(), Job.id.desc())
                .limit(1)
            )
            if latest is None or latest.finished_at is None:
                return False
            if latest.state == JobState.COMPLETED:
                s.execute(
                    update(Alert)
                    .where(
                        Alert.member_id == member_id,
                        Alert.kind == ALERT_KIND,
                        Alert.resolved_at.is_(None),
                    )
                    .values(resolved_at=utcnow())
                )
                return False
            newest = s.scalar(
                select(Alert)
                .where(Alert.member_id == member_id, Alert.kind == ALERT_KIND)
                .order_by(Alert.id.desc())
                .limit(1)
            )
            if newest is not None and (
                newest.resolved_at is None or newest.at >= latest.finished_at
            ):
                return False  # one open alert per member; this failure was alerted already
            member = s.get(Member, member_id)
            pool = s.get(Pool, latest.pool_id)
            if member is None or pool is None:
                return False
            subject = f"[{pool.name}] TLS certificate order for {member.hostname} failed"
            message = failure_message(latest, member.hostname)
            pool_id = pool.id
        self.alerts.raise_alert(pool_id, ALERT_KIND, subject, message, member_id=member_id)
        return True

    def open_failures(self, pool_id: int) -> list[dict[str, Any]]:
        """The pool's open `tls.certificate_failed` alerts, for the Overview."""
        with self.db.session() as s:
            rows = s.execute(
                select(Alert, Member.hostname)
                .join(Member, Member.id == Alert.member_id)
                .where(
                    Alert.pool_id == pool_id,
                    Alert.kind == ALERT_KIND,
                    Alert.resolved_at.is_(None),
                )
                .order_by(Alert.id)
            ).all()
            return [
                {
                    "alert_id": alert.id,
                    "member_id": alert.member_id,
                    "hostname": hostname,
                    "at": alert.at,
                    "error": alert.message.split("\n\n", 1)[0],
                }
                for alert, hostname in rows
            ]


def failure_message(job: Job, hostname: str) -> str:
    """The alert's text: the job's summary first (the CA's or the DNS provider's own message,
    as the agent reported it), then which job, then what to do."""
    names = ", ".join(str(n) for n in job.params.get("names") or [])
    ended = "timed out" if job.state == JobState.TIMED_OUT else "failed"
    by = f" (queued by {job.enqueued_by})" if job.enqueued_by else ""
    return (
        f"{job.summary or 'the job gave no reason'}\n\n"
        f"The {job.type} job {job.id} on {hostname} for {names or 'the failover name'}{by} "
        f"{ended}.\n\n{WHAT_TO_DO}"
    )


def _history(s: Session, member_ids: list[int]) -> dict[int, list[PastJob]]:
    """Each member's certificate jobs (recipe steps included), newest first."""
    out: dict[int, list[PastJob]] = {}
    rows = s.execute(
        select(Job.id, Job.member_id, Job.state, Job.finished_at, Job.idempotency_key)
        .where(Job.member_id.in_(member_ids), Job.type.in_(ORDER_JOBS))
        .order_by(Job.id.desc())
    )
    for row in rows:
        out.setdefault(row.member_id, []).append(
            PastJob(row.id, row.state, row.finished_at, row.idempotency_key)
        )
    return out
