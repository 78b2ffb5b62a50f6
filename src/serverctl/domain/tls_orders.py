"""Certificate orders: the agent's CSR in, the CA's chain (or its error) out.

An agent running `tls.acme_issue` / `tls.acme_renew_force` sends the CSR it made for the job's
names (`submit`) and then asks for the result (`status`). The order runs here, in one worker
thread (`run`), one order at a time: `AcmeClient.issue` with the pool's DNS provider and zone.
Nothing is retried: a failure is stored with the CA's (or the DNS provider's) own message and
the agent fails its job with it.

Let's Encrypt's limits are respected before the CA is asked:
- after a `rateLimited` answer no new order for the pool's name set is taken until the CA's
  Retry-After (or 1 h, doubling for each rate-limited order in a row, at most 24 h);
- at most `DUPLICATE_LIMIT` certificates for one exact name set in `DUPLICATE_WINDOW` (its
  "duplicate certificate" limit; counted over every pool, as the CA counts per account).

The orders are rows (db.models.TlsOrder), so a restart loses nothing: an order left `running`
by a restart fails ("the control plane restarted during the order") and the agent hears it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serverctl.acme.client import AcmeClient, AcmeError, Issued, csr_names
from serverctl.acme.settings import AcmeSettingsService
from serverctl.db.models import AppSetting, Job, Pool, PoolDns, TlsOrder
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns import names as dns_names
from serverctl.domain import audit
from serverctl.domain.catalogue import JobState
from serverctl.domain.dns_accounts import DnsAccounts
from serverctl.domain.principal import SYSTEM
from serverctl.errors import Conflict, NotFound, ServerCTLError, ValidationError

log = logging.getLogger(__name__)

ORDER_JOBS = ("tls.acme_issue", "tls.acme_renew_force")
PENDING, RUNNING, VALID, FAILED = "pending", "running", "valid", "failed"
MAX_CSR_CHARS = 16 * 1024
BACKOFF_FIRST = timedelta(hours=1)
BACKOFF_MAX = timedelta(hours=24)
DUPLICATE_LIMIT = 5
DUPLICATE_WINDOW = timedelta(days=7)
KEEP = timedelta(days=90)
PRUNE_EVERY_S = 3600.0
MAX_ERROR = 4000
RESTARTED = "the control plane restarted during the order; run the job again"
NO_LINK = "link a DNS provider to the pool first (Managed DNS)"
NO_LABEL = "set the pool's failover label first (Managed DNS)"
NO_ACME = "configure ACME in Settings first (Settings → TLS, PUT /api/settings/acme)"


def names_key(names: list[str] | tuple[str, ...]) -> str:
    return ",".join(sorted(names))


def failover_fqdn(s: Session, pool: Pool) -> str:
    """The pool's failover FQDN (its DNS link's label in its zone); Conflict with what to do
    first when the pool has none, or when ACME is not configured."""
    link = s.get(PoolDns, pool.id)
    if link is None:
        raise Conflict(NO_LINK)
    if not link.label:
        raise Conflict(NO_LABEL)
    if s.get(AppSetting, "acme") is None:
        raise Conflict(NO_ACME)
    return dns_names.fqdn(link.label, link.zone)


def _date(when: datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC"


class TlsOrders:
    def __init__(
        self,
        db: Database,
        accounts: DnsAccounts,
        acme_settings: AcmeSettingsService,
        client: Callable[[AcmeSettingsService], AcmeClient] = AcmeClient,
    ) -> None:
        self.db = db
        self.accounts = accounts
        self.acme_settings = acme_settings
        # Tests give a client with shorter waits; one is built per order.
        self.client = client
        self.wakeup = threading.Event()

    # -- the agent's side ------------------------------------------------------------------------

    def submit(self, member_id: int, job_id: int, csr_pem: str) -> dict[str, Any]:
        """Take the CSR for a running certificate job of this member; idempotent for the same
        CSR, and a new CSR replaces an order that has not finished (the agent restarted)."""
        if len(csr_pem) > MAX_CSR_CHARS:
            raise ValidationError(f"the CSR is over {MAX_CSR_CHARS} characters")
        digest = hashlib.sha256(csr_pem.encode()).hexdigest()
        try:
            with self.db.session() as s:
                job = self._job(s, member_id, job_id)
                found = s.scalar(select(TlsOrder).where(TlsOrder.job_id == job.id))
                if found is not None and found.csr_sha256 == digest:
                    return self._view(found)
                if found is not None and found.state in (VALID, FAILED):
                    raise Conflict(
                        f"the certificate order of job {job_id} already ended ({found.state}); "
                        "queue the job again for a new order"
                    )
                names = [str(n) for n in job.params.get("names") or []]
                self._check_csr(s, job, names, csr_pem)
                self.check_limits(s, job.pool_id, names)
                order = found or TlsOrder(
                    pool_id=job.pool_id, member_id=member_id, job_id=job.id, created_at=utcnow()
                )
                order.names, order.names_key = names, names_key(names)
                order.csr, order.csr_sha256 = csr_pem, digest
                order.state, order.error, order.chain = PENDING, None, None
                order.updated_at = utcnow()
                s.add(order)
                s.flush()
                if found is not None:
                    log.info("job %d sent a new CSR: its order starts again", job_id)
                view = self._view(order)
        except IntegrityError:
            # Two posts of the same job raced: the first one's order stands.
            with self.db.session() as s:
                order_row = s.scalar(select(TlsOrder).where(TlsOrder.job_id == job_id))
                if order_row is None or order_row.member_id != member_id:
                    raise
                return self._view(order_row)
        self.wakeup.set()
        return view

    def status(self, member_id: int, job_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            order = s.scalar(select(TlsOrder).where(TlsOrder.job_id == job_id))
            if order is None or order.member_id != member_id:
                raise NotFound(f"no certificate order for job {job_id} of this member")
            return self._view(order)

    @staticmethod
    def _view(order: TlsOrder) -> dict[str, Any]:
        if order.state == VALID:
            return {"state": VALID, "chain": order.chain}
        if order.state == FAILED:
            return {"state": FAILED, "error": order.error or "the order failed"}
        return {"state": PENDING}

    @staticmethod
    def _job(s: Session, member_id: int, job_id: int) -> Job:
        job = s.get(Job, job_id)
        if job is None or job.member_id != member_id:
            raise NotFound(f"no job {job_id} for this member")
        if job.type not in ORDER_JOBS:
            raise NotFound(f"job {job_id} is a {job.type} job, not a certificate job")
        if job.state != JobState.RUNNING:
            raise Conflict(f"job {job_id} is {job.state}: it takes no certificate order")
        return job

    @staticmethod
    def _check_csr(s: Session, job: Job, names: list[str], csr_pem: str) -> None:
        pool = s.get(Pool, job.pool_id)
        assert pool is not None
        failover_fqdn(s, pool)  # the pool can still order (its link, ACME settings)
        link = s.get(PoolDns, pool.id)
        assert link is not None
        in_csr = csr_names(csr_pem.encode(), link.zone)  # 422 when unreadable or out of zone
        if set(in_csr) != set(names):
            raise ValidationError(
                f"the CSR names {', '.join(in_csr)}; job {job.id} orders exactly {', '.join(names)}"
            )

    @staticmethod
    def check_limits(s: Session, pool_id: int, names: list[str]) -> None:
        """Conflict when the CA's rate-limit back-off or the duplicate-certificate limit holds
        for this name set (also asked by the automatic renewal before it queues a job)."""
        key = names_key(names)
        now = utcnow()
        backed_off = s.scalar(
            select(TlsOrder)
            .where(
                TlsOrder.pool_id == pool_id,
                TlsOrder.names_key == key,
                TlsOrder.retry_at.is_not(None),
                TlsOrder.retry_at > now,
            )
            .order_by(TlsOrder.retry_at.desc())
            .limit(1)
        )
        if backed_off is not None and backed_off.retry_at is not None:
            raise Conflict(
                f"rate limited by the CA until {_date(backed_off.retry_at)}: {backed_off.error}"
            )
        issued = (
            s.scalar(
                select(func.count())
                .select_from(TlsOrder)
                .where(
                    TlsOrder.names_key == key,
                    TlsOrder.state == VALID,
                    TlsOrder.updated_at > now - DUPLICATE_WINDOW,
                )
            )
            or 0
        )
        if issued >= DUPLICATE_LIMIT:
            raise Conflict(
                f"{issued} certificates were issued for {', '.join(names)} in the last 7 days: "
                f"Let's Encrypt allows {DUPLICATE_LIMIT} per exact set of names a week; reuse "
                "the installed certificate (tls.acme_issue without force) or wait"
            )

    # -- the worker ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, idle_s: float = 5.0) -> None:
        """The worker thread: fail what a restart interrupted, then run pending orders one at
        a time until `stop` is set; prune old orders now and then."""
        self.recover()
        last_prune = 0.0
        while not stop.is_set():
            try:
                if stop.wait(0) or not self.run_once():
                    now = time.monotonic()
                    if now - last_prune > PRUNE_EVERY_S:
                        self.prune()
                        last_prune = now
                    self.wakeup.wait(idle_s)
                    self.wakeup.clear()
            except Exception:  # noqa: BLE001 - the worker must outlive one bad order
                log.exception("TLS order worker round failed; continuing")
                stop.wait(idle_s)

    def recover(self) -> int:
        """Orders a restart interrupted fail: nobody runs them any more, and the agent must hear
        it rather than wait for its job's deadline."""
        with self.db.session() as s:
            changed = s.execute(
                update(TlsOrder)
                .where(TlsOrder.state == RUNNING)
                .values(state=FAILED, error=RESTARTED, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            count = int(changed.rowcount)  # type: ignore[attr-defined]
        if count:
            log.warning("%d certificate order(s) failed: the control plane restarted", count)
        return count

    def prune(self) -> int:
        with self.db.session() as s:
            gone = s.execute(
                delete(TlsOrder)
                .where(
                    TlsOrder.updated_at < utcnow() - KEEP,
                    TlsOrder.state.in_([VALID, FAILED]),
                )
                .execution_options(synchronize_session=False)
            )
            return int(gone.rowcount)  # type: ignore[attr-defined]

    def run_once(self) -> bool:
        """Run the oldest pending order; False when there was none."""
        claimed = self._claim()
        if claimed is None:
            return False
        order_id, csr_digest, csr, provider_id, zone, job_id = claimed
        log.info("certificate order %d (job %d) starts", order_id, job_id)
        try:
            issued = self._issue(provider_id, zone, csr)
        except AcmeError as exc:
            self._failed(order_id, csr_digest, exc.message, exc if exc.rate_limited else None)
        except ServerCTLError as exc:
            self._failed(order_id, csr_digest, exc.message, None)
        except Exception as exc:  # noqa: BLE001 - the agent must hear that it failed
            log.exception("certificate order %d failed unexpectedly", order_id)
            self._failed(order_id, csr_digest, f"the order failed: {exc.__class__.__name__}", None)
        else:
            self._issued(order_id, csr_digest, issued)
        return True

    def _claim(self) -> tuple[int, str, str, int, str, int] | None:
        with self.db.session() as s:
            while True:
                order = s.scalar(
                    select(TlsOrder).where(TlsOrder.state == PENDING).order_by(TlsOrder.id).limit(1)
                )
                if order is None:
                    return None
                job = s.get(Job, order.job_id)
                link = s.get(PoolDns, order.pool_id)
                problem = None
                if job is None or job.state != JobState.RUNNING:
                    problem = f"job {order.job_id} is no longer running: not ordered"
                elif link is None:
                    problem = NO_LINK
                if problem is not None:
                    order.state, order.error, order.updated_at = FAILED, problem, utcnow()
                    s.flush()
                    continue
                assert link is not None
                order.state, order.updated_at = RUNNING, utcnow()
                s.flush()
                return (
                    order.id,
                    order.csr_sha256,
                    order.csr,
                    link.provider_id,
                    link.zone,
                    order.job_id,
                )

    def _issue(self, provider_id: int, zone: str, csr: str) -> Issued:
        provider = self.accounts.provider(provider_id)
        try:
            return self.client(self.acme_settings).issue(provider, zone, csr)
        finally:
            provider.close()

    def _current(self, s: Session, order_id: int, csr_digest: str) -> TlsOrder | None:
        """The order, unless a new CSR replaced the one that ran (its result is for a key the
        agent no longer has)."""
        order = s.get(TlsOrder, order_id)
        if order is None or order.csr_sha256 != csr_digest or order.state != RUNNING:
            log.info("certificate order %d was replaced while it ran: result dropped", order_id)
            return None
        return order

    def _issued(self, order_id: int, csr_digest: str, issued: Issued) -> None:
        with self.db.session() as s:
            order = self._current(s, order_id, csr_digest)
            if order is None:
                return
            order.state, order.chain = VALID, issued.chain_pem
            order.not_after, order.serial = issued.not_after, issued.serial[:64]
            # The certificate is good; a TXT value left behind is for the operator to remove.
            order.error = issued.cleanup_error
            order.updated_at = utcnow()
            audit.record(
                s,
                SYSTEM,
                "tls.certificate.issue",
                f"member:{order.member_id}",
                {
                    "job_id": order.job_id,
                    "names": list(order.names),
                    "serial": issued.serial,
                    "not_after": issued.not_after.isoformat(),
                },
            )
        log.info("certificate order %d issued serial %s", order_id, issued.serial)

    def _failed(
        self, order_id: int, csr_digest: str, message: str, limited: AcmeError | None
    ) -> None:
        with self.db.session() as s:
            order = self._current(s, order_id, csr_digest)
            if order is None:
                return
            order.state, order.error, order.updated_at = FAILED, message[:MAX_ERROR], utcnow()
            if limited is not None:
                order.retry_at = order.updated_at + self._backoff(s, order, limited.retry_after)
            s.flush()
        log.warning("certificate order %d failed: %s", order_id, message)

    @staticmethod
    def _backoff(s: Session, order: TlsOrder, retry_after: float | None) -> timedelta:
        """The CA's Retry-After, else 1 h doubled for each rate-limited order in a row before
        this one (for the same pool and names), at most 24 h."""
        if retry_after is not None:
            return timedelta(seconds=retry_after)  # the CA knows best, even beyond 24 h
        earlier = s.scalars(
            select(TlsOrder.retry_at)
            .where(
                TlsOrder.pool_id == order.pool_id,
                TlsOrder.names_key == order.names_key,
                TlsOrder.id != order.id,
                TlsOrder.state.in_([VALID, FAILED]),
            )
            .order_by(TlsOrder.updated_at.desc())
            .limit(8)
        )
        streak = 0
        for retry_at in earlier:
            if retry_at is None:
                break
            streak += 1
        doubled: timedelta = BACKOFF_FIRST * 2 ** min(streak, 8)
        return min(doubled, BACKOFF_MAX)
