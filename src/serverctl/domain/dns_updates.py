"""Publishing a pool's A record: intended changes, applied in order, retried, then verified.

Every change of the record starts as a `DnsUpdate` row written in the same transaction as the
decision behind it (a promotion, a link, a DDNS change), so a failed or interrupted update keeps
the intended state. One worker thread applies them: per pool only the newest pending update is
applied and older ones are marked superseded, so the record never moves backwards and nothing is
applied twice out of order. A failure is retried with capped backoff (or the provider's
Retry-After) and shows as "DNS update pending" with the error; after a few failures an alert is
raised. Once applied, the record is read back through the provider and looked up on the
zone's authoritative servers until they answer the new address ("propagated").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from serverctl.db.models import DnsUpdate, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns import names, propagation
from serverctl.dns.base import DNSProvider
from serverctl.domain.dns_accounts import DnsAccounts
from serverctl.errors import ProviderError, RateLimited, ServerCTLError

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 1.0
BACKOFF_CAP_S = 60.0
# After this many failed attempts the pool's recipients hear that DNS keeps failing.
ALERT_AFTER_ATTEMPTS = 3
# How long to keep asking the authoritative servers before calling it "not yet propagated".
PROPAGATION_WINDOW_S = 300.0

# alert(pool_id, kind, subject, message)
AlertHook = Callable[[int, str, str, str], None]
# on_attempt(provider kind, ok, seconds): each call setting a record, for /metrics.
AttemptHook = Callable[[str, bool, float], None]


@dataclass(frozen=True)
class Target:
    """Where a pool's record lives, as plain values for the provider."""

    provider_id: int
    zone: str
    fqdn: str
    ttl: int
    proxied: bool
    check_servers: tuple[str, ...]


def enqueue(s: Session, pool_id: int, address: str, reason: str) -> DnsUpdate:
    """Record the intended address of the pool's A record in the caller's transaction."""
    row = DnsUpdate(pool_id=pool_id, address=address, reason=reason[:255], state="pending")
    s.add(row)
    s.flush()
    return row


def target_of(link: PoolDns) -> Target:
    return Target(
        provider_id=link.provider_id,
        zone=link.zone,
        fqdn=names.fqdn(link.label, link.zone),
        ttl=link.ttl,
        proxied=link.proxied,
        check_servers=tuple(link.check_servers or ()),
    )


def backoff_s(attempts: int) -> float:
    return float(min(BACKOFF_CAP_S, BACKOFF_INITIAL_S * 2 ** max(0, attempts - 1)))


class DnsPublisher:
    """Applies pending updates (`apply_due`, run by the worker thread) and tells waiters."""

    def __init__(
        self,
        db: Database,
        accounts: DnsAccounts,
        alert: AlertHook | None = None,
        on_attempt: AttemptHook | None = None,
    ) -> None:
        self.db = db
        self.accounts = accounts
        self.alert = alert
        self.on_attempt = on_attempt
        self._providers: dict[int, DNSProvider] = {}
        self._changed = threading.Condition()
        self._kick = threading.Event()
        self._verifiers: set[threading.Thread] = set()

    # -- for callers ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Wake the worker: an update was just queued."""
        self._kick.set()

    def wait(self, update_id: int, timeout: float) -> dict[str, Any]:
        """Wait up to `timeout` for the update to leave `pending`; its view either way."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                view = self.view(update_id)
                left = deadline - time.monotonic()
                if view["state"] != "pending" or left <= 0:
                    return view
                self._changed.wait(min(left, 0.5))

    def view(self, update_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            if row is None:
                return {"id": update_id, "state": "gone"}
            return update_view(row)

    def forget_provider(self, account_id: int) -> None:
        provider = self._providers.pop(account_id, None)
        if provider is not None:
            provider.close()

    # -- the worker -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                wait_s = self.apply_due()
            except Exception:  # noqa: BLE001 - the worker must outlive one bad round
                log.exception("DNS update round failed; will retry")
                wait_s = 1.0
            self._kick.wait(wait_s)
            self._kick.clear()
        for provider in self._providers.values():
            provider.close()

    def apply_due(self) -> float:
        """Apply the newest due update of each pool; seconds until the next one is due."""
        now = utcnow()
        next_due = 5.0
        for pool_id in self._pools_with_pending():
            row_id, due_at = self._newest_pending(pool_id)
            if row_id is None or due_at is None:
                continue
            if due_at > now:
                next_due = min(next_due, (due_at - now).total_seconds())
                continue
            self._apply(row_id)
            # A failed attempt has just set its retry time (1 s backoff, a Retry-After), often
            # sooner than the default wait: look again at once rather than in 5 s.
            next_due = 0.0
        return max(0.05, next_due)

    def _pools_with_pending(self) -> list[int]:
        with self.db.session() as s:
            return list(
                s.scalars(select(DnsUpdate.pool_id).where(DnsUpdate.state == "pending").distinct())
            )

    def _newest_pending(self, pool_id: int) -> tuple[int | None, datetime | None]:
        with self.db.session() as s:
            rows = list(
                s.scalars(
                    select(DnsUpdate)
                    .where(DnsUpdate.pool_id == pool_id, DnsUpdate.state == "pending")
                    .order_by(DnsUpdate.id.desc())
                )
            )
            if not rows:
                return None, None
            newest, older = rows[0], rows[1:]
            if older:
                s.execute(
                    update(DnsUpdate)
                    .where(DnsUpdate.id.in_([r.id for r in older]))
                    .values(state="superseded", last_error=f"superseded by update {newest.id}")
                )
            return newest.id, newest.next_attempt_at

    def _apply(self, update_id: int) -> None:
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            link = s.get(PoolDns, row.pool_id) if row else None
            if row is None or row.state != "pending":
                return
            if link is None:
                row.state, row.last_error = "superseded", "DNS was unlinked from the pool"
                self._notify()
                return
            target, address = target_of(link), row.address
        started, kind = time.monotonic(), "unknown"
        try:
            provider = self._provider(target.provider_id)
            kind = provider.kind
            provider.set_a(target.zone, target.fqdn, address, target.ttl, target.proxied)
        except ServerCTLError as exc:
            self._attempted(kind, False, started)
            self._failed(update_id, exc)
            return
        except Exception:
            self._attempted(kind, False, started)
            raise
        took = self._attempted(kind, True, started)
        log.info("pool DNS %s A %s applied in %.3f s", target.fqdn, address, took)
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            if row is not None:
                row.state, row.applied_at, row.attempts = "applied", utcnow(), row.attempts + 1
                row.last_error = None
        self._notify()
        self._verify_later(update_id, target, address)

    def _attempted(self, kind: str, ok: bool, started: float) -> float:
        took = time.monotonic() - started
        if self.on_attempt is not None:
            self.on_attempt(kind, ok, took)
        return took

    def _failed(self, update_id: int, exc: ServerCTLError) -> None:
        if isinstance(exc, ProviderError) and not isinstance(exc, RateLimited):
            self.forget_provider_for_update(update_id)
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            if row is None:
                return
            row.attempts += 1
            delay = backoff_s(row.attempts)
            if isinstance(exc, RateLimited) and exc.retry_after:
                delay = min(BACKOFF_CAP_S * 5, max(delay, exc.retry_after))
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
            row.last_error = exc.message
            pool = s.get(Pool, row.pool_id)
            pool_name = pool.name if pool else str(row.pool_id)
            log.warning(
                "DNS update %s for pool %s failed (attempt %d, retry in %.0f s): %s",
                row.id,
                pool_name,
                row.attempts,
                delay,
                exc.message,
            )
            should_alert = row.attempts >= ALERT_AFTER_ATTEMPTS and not row.alerted
            if should_alert:
                row.alerted = True
            pool_id, address, attempts = row.pool_id, row.address, row.attempts
        self._notify()
        if should_alert and self.alert is not None:
            self.alert(
                pool_id,
                "dns.failing",
                f"[{pool_name}] DNS update keeps failing",
                f"Moving the A record of pool {pool_name} to {address} failed {attempts} "
                f"times; ServerCTL keeps retrying.\nLast error: {exc.message}",
            )

    def forget_provider_for_update(self, update_id: int) -> None:
        # A provider that failed may hold a broken connection: build a fresh one next time.
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            link = s.get(PoolDns, row.pool_id) if row else None
            account_id = link.provider_id if link else None
        if account_id is not None:
            self.forget_provider(account_id)

    def _provider(self, account_id: int) -> DNSProvider:
        provider = self._providers.get(account_id)
        if provider is None:
            provider = self.accounts.provider(account_id)
            self._providers[account_id] = provider
        return provider

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- verification ---------------------------------------------------------------------------

    def _verify_later(self, update_id: int, target: Target, address: str) -> None:
        self._verifiers = {t for t in self._verifiers if t.is_alive()}
        thread = threading.Thread(
            target=self._verify,
            args=(update_id, target, address),
            daemon=True,
            name=f"dns-verify-{update_id}",
        )
        self._verifiers.add(thread)
        thread.start()

    def _verify(self, update_id: int, target: Target, address: str) -> None:
        try:
            self._read_back(update_id, target, address)
            self._propagation(update_id, target, address)
        except Exception:  # noqa: BLE001 - verification is advisory; never kill the thread noisily
            log.exception("verifying DNS update %s failed", update_id)

    def _read_back(self, update_id: int, target: Target, address: str) -> None:
        provider = self.accounts.provider(target.provider_id)
        try:
            record = provider.get_a(target.zone, target.fqdn)
        except ServerCTLError as exc:
            self._note(update_id, propagation=f"read-back through the provider failed: {exc}")
            return
        finally:
            provider.close()
        if record is not None and record.values == (address,):
            self._note(update_id, verified_at=utcnow())
        else:
            seen = ", ".join(record.values) if record else "no record"
            self._note(update_id, propagation=f"provider read-back shows {seen}, not {address}")

    def _propagation(self, update_id: int, target: Target, address: str) -> None:
        servers = self._servers(target)
        if not servers:
            with self.db.session() as s:
                row = s.get(DnsUpdate, update_id)
                if row is not None and row.verified_at is not None:
                    row.propagated_at = row.verified_at
                    row.propagation = (
                        "read back through the provider (no authoritative server reachable "
                        "to query)"
                    )
            self._notify()
            return
        deadline = time.monotonic() + PROPAGATION_WINDOW_S
        pause = 0.05
        while time.monotonic() < deadline:
            if self._superseded(update_id):
                return
            answers = [propagation.query_a(server, target.fqdn) for server in servers]
            if all(a.addresses == frozenset({address}) for a in answers):
                where = ", ".join(f"{h}:{p}" for h, p in servers)
                self._note(update_id, propagated_at=utcnow(), propagation=f"answered by {where}")
                return
            time.sleep(pause)
            pause = min(5.0, pause * 2)
        self._note(update_id, propagation="not yet answered by every authoritative server")

    def _servers(self, target: Target) -> list[propagation.Server]:
        if target.check_servers:
            return [propagation.parse_server(s) for s in target.check_servers]
        provider = self.accounts.provider(target.provider_id)
        try:
            hinted = provider.nameservers(target.zone)
        finally:
            provider.close()
        return hinted or propagation.zone_nameservers(target.zone)

    def _superseded(self, update_id: int) -> bool:
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            newer = (
                s.scalar(
                    select(DnsUpdate.id)
                    .where(DnsUpdate.pool_id == row.pool_id, DnsUpdate.id > update_id)
                    .limit(1)
                )
                if row
                else None
            )
            return row is None or newer is not None

    def _note(self, update_id: int, **values: Any) -> None:
        with self.db.session() as s:
            row = s.get(DnsUpdate, update_id)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)
        self._notify()


def update_view(row: DnsUpdate) -> dict[str, Any]:
    took = (
        round((row.propagated_at - row.created_at).total_seconds(), 3)
        if row.propagated_at
        else None
    )
    return {
        "id": row.id,
        "address": row.address,
        "reason": row.reason,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at if row.state == "pending" else None,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "applied_at": row.applied_at,
        "verified_at": row.verified_at,
        "propagated_at": row.propagated_at,
        "propagation_s": took,
        "propagation": row.propagation,
    }


def latest(s: Session, pool_id: int) -> DnsUpdate | None:
    """The pool's newest update that is not superseded: what the record should be."""
    return s.scalars(
        select(DnsUpdate)
        .where(DnsUpdate.pool_id == pool_id, DnsUpdate.state != "superseded")
        .order_by(DnsUpdate.id.desc())
        .limit(1)
    ).first()
