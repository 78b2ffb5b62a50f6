"""Cutover and automatic failover: who is active, and moving the A record to them.

A promotion sets the pool's active member, records a failover event and queues the DNS update
in one transaction (serverctl.domain.dns_updates applies it). Manual promotions (Make active,
Cut DNS to standby) need linked DNS and a ready member. The automatic evaluator (about once a
second, and at once when a heartbeat changes a member's health) promotes a failover-ready
standby when the active member is unhealthy, under three rules that stop flapping:

- one promotion per incident: an incident is the active member being unhealthy; it ends when
  that member is healthy again or is no longer active;
- a cool-down (`failover_cooldown_s`) counted from the last automatic promotion only;
- no promotion without a ready standby: an alert instead, once per incident.

Silence is counted only while this control plane has been listening: after a start (a restart,
a crash) the active member's heartbeat age counts from the start at the earliest. The stored
last-seen times lag (they are written in batches) and nobody heard anything while the control
plane was down, so an outage of its own must not read as the active member's silence. A
standby's readiness still needs a heartbeat really received within the delay.

A member that returns after losing the active role stays a standby: nothing promotes it back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serverctl.db.models import DnsUpdate, FailoverEvent, Member, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, dns_updates, health, lookup
from serverctl.domain.dns_updates import DnsPublisher, update_view
from serverctl.domain.live import LiveState
from serverctl.domain.principal import SYSTEM, Principal
from serverctl.errors import Conflict

log = logging.getLogger(__name__)

# How long a manual cutover waits for the DNS update before answering (it goes on after).
MANUAL_DNS_WAIT_S = 3.0

# alert(pool_id, kind, subject, message)
AlertHook = Callable[[int, str, str, str], None]


@dataclass
class Incident:
    member_id: int
    since: datetime
    reason: str
    handled: bool = False
    no_standby_alerted: bool = False
    cooldown_alerted: bool = False


class FailoverService:
    def __init__(
        self,
        db: Database,
        live: LiveState,
        publisher: DnsPublisher,
        alert: AlertHook | None = None,
    ) -> None:
        self.db = db
        self.live = live
        self.publisher = publisher
        self.alert = alert
        self._incidents: dict[int, Incident] = {}
        # Since when heartbeats could arrive: the active member's silence counts from here.
        self.listening_since = utcnow()
        # Alerts decided during an evaluation round, sent once its transaction has committed.
        self._outbox: list[tuple[int, str, str, str]] = []
        # Promotions (the evaluator thread, operator requests) change one pool at a time.
        self._lock = threading.Lock()

    # -- manual ---------------------------------------------------------------------------------

    def activate(self, principal: Principal, pool_id: int, member_id: int) -> dict[str, Any]:
        """Make active: promote this member, or publish the record again when it already is."""
        principal.require("operator")
        event_id: int | None = None
        update_id: int | None = None
        with self._lock, self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            link = _require_dns(s, pool)
            address = self._publishable_ip(member)
            if pool.active_member_id == member.id:
                row = dns_updates.enqueue(s, pool.id, address, f"republish for {member.hostname}")
                audit.record(
                    s,
                    principal,
                    "pool.dns.republish",
                    f"pool:{pool.id}",
                    {"member": member.hostname, "address": address, "record": _fqdn(link)},
                )
                update_id = row.id
            else:
                self._require_ready(pool, member)
                event = self._promote(
                    s,
                    pool,
                    member,
                    address,
                    principal,
                    "manual",
                    f"Make active on {member.hostname} by {principal.actor}",
                )
                event_id, update_id = event.id, event.dns_update_id
        return self._answer(event_id, update_id)

    def cutover(self, principal: Principal, pool_id: int) -> dict[str, Any]:
        """Cut DNS to standby: promote the next failover-ready standby."""
        principal.require("operator")
        with self._lock, self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            _require_dns(s, pool)
            standby = self._ready_standby(pool)
            if standby is None:
                raise Conflict(
                    f"no standby of pool {pool.name!r} is failover-ready "
                    "(each needs a recent heartbeat and, when monitored, HAProxy running)"
                )
            event = self._promote(
                s,
                pool,
                standby,
                self._publishable_ip(standby),
                principal,
                "cutover",
                f"Cut DNS to standby by {principal.actor}",
            )
            event_id, update_id = event.id, event.dns_update_id
        return self._answer(event_id, update_id)

    def _answer(self, event_id: int | None, update_id: int | None) -> dict[str, Any]:
        self.publisher.kick()
        dns = self.publisher.wait(update_id, MANUAL_DNS_WAIT_S) if update_id else None
        return {"event_id": event_id, "dns": dns}

    # -- automatic ------------------------------------------------------------------------------

    def start_listening(self) -> None:
        """Heartbeats can arrive from now on (the evaluator's start, once the app serves)."""
        self.listening_since = utcnow()

    def evaluate(self, now: datetime | None = None) -> list[int]:
        """One round of the evaluator over pools with automatic failover; new event ids."""
        now = now or utcnow()
        promoted: list[int] = []
        with self._lock:
            self._outbox = []
            with self.db.session() as s:
                pools = list(s.scalars(select(Pool).where(Pool.failover_automatic.is_(True))))
                live_pools = {p.id for p in pools}
                for pool in pools:
                    event_id = self._evaluate_pool(s, pool, now)
                    if event_id is not None:
                        promoted.append(event_id)
            for pool_id in list(self._incidents):
                if pool_id not in live_pools:
                    self._incidents.pop(pool_id, None)
            outbox, self._outbox = self._outbox, []
        if promoted:
            self.publisher.kick()
        # Alerts are written after the promotion commits: with SQLite a second writer inside
        # the evaluator's transaction would wait on it.
        if self.alert is not None:
            for alert in outbox:
                self.alert(*alert)
        return promoted

    def _evaluate_pool(self, s: Session, pool: Pool, now: datetime) -> int | None:
        active = next((m for m in pool.members if m.id == pool.active_member_id), None)
        if active is None:
            self._incidents.pop(pool.id, None)
            return None
        state = self._health(pool, active, now, heard_since_start=True)
        if state.state != "unhealthy":
            self._incidents.pop(pool.id, None)
            return None
        incident = self._incidents.get(pool.id)
        if incident is None or incident.member_id != active.id:
            incident = Incident(active.id, now, state.reason or "unhealthy")
            self._incidents[pool.id] = incident
            log.warning(
                "pool %s: active member %s is unhealthy: %s",
                pool.name,
                active.hostname,
                incident.reason,
            )
        if incident.handled:
            return None
        if s.get(PoolDns, pool.id) is None:
            self._alert_once(
                incident,
                "no_standby_alerted",
                pool,
                "failover.no_dns",
                f"[{pool.name}] automatic failover cannot move DNS",
                f"The active member {active.hostname} is unhealthy "
                f"({incident.reason}), but no DNS provider is linked to the pool.",
            )
            return None
        held = self._cooldown_left(pool, now)
        if held > 0:
            self._alert_once(
                incident,
                "cooldown_alerted",
                pool,
                "failover.cooldown",
                f"[{pool.name}] automatic failover held back by the cool-down",
                f"The active member {active.hostname} is unhealthy "
                f"({incident.reason}). The last automatic promotion was less than "
                f"{pool.failover_cooldown_s} s ago; ServerCTL promotes again in "
                f"{held:.0f} s if it is still unhealthy.",
            )
            return None
        standby = self._ready_standby(pool, now)
        if standby is None:
            self._alert_once(
                incident,
                "no_standby_alerted",
                pool,
                "failover.no_standby",
                f"[{pool.name}] no standby is ready for failover",
                f"The active member {active.hostname} is unhealthy "
                f"({incident.reason}), and no standby is failover-ready, so "
                "DNS stays where it is.",
            )
            return None
        event = self._promote(
            s,
            pool,
            standby,
            self._publishable_ip(standby),
            SYSTEM,
            "automatic",
            f"{active.hostname}: {incident.reason}",
            detected_at=incident.since,
        )
        incident.handled = True
        pool.last_auto_failover_at = now
        self._outbox.append(
            (
                pool.id,
                "failover.promoted",
                f"[{pool.name}] failover: {standby.hostname} is now active",
                f"Automatic failover promoted {standby.hostname} ({event.address}) because "
                f"{active.hostname} was unhealthy: {incident.reason}.\n"
                f"The A record {_fqdn(s.get(PoolDns, pool.id))} is being moved to "
                f"{event.address}.",
            )
        )
        return event.id

    def _cooldown_left(self, pool: Pool, now: datetime) -> float:
        last = pool.last_auto_failover_at
        if last is None or pool.failover_cooldown_s <= 0:
            return 0.0
        return (last + timedelta(seconds=pool.failover_cooldown_s) - now).total_seconds()

    def _alert_once(
        self, incident: Incident, flag: str, pool: Pool, kind: str, subject: str, message: str
    ) -> None:
        if getattr(incident, flag):
            return
        setattr(incident, flag, True)
        log.warning("pool %s: %s", pool.name, subject)
        self._outbox.append((pool.id, kind, subject, message))

    # -- promotion ------------------------------------------------------------------------------

    def _promote(
        self,
        s: Session,
        pool: Pool,
        member: Member,
        address: str,
        principal: Principal,
        trigger: str,
        reason: str,
        detected_at: datetime | None = None,
    ) -> FailoverEvent:
        previous = next((m for m in pool.members if m.id == pool.active_member_id), None)
        pool.active_member_id = member.id
        update = dns_updates.enqueue(
            s, pool.id, address, f"{trigger} failover to {member.hostname}"
        )
        event = FailoverEvent(
            pool_id=pool.id,
            trigger=trigger,
            reason=reason,
            actor=principal.actor,
            from_member_id=previous.id if previous else None,
            from_hostname=previous.hostname if previous else None,
            to_member_id=member.id,
            to_hostname=member.hostname,
            address=address,
            detected_at=detected_at,
            dns_update_id=update.id,
        )
        s.add(event)
        s.flush()
        audit.record(
            s,
            principal,
            "pool.failover",
            f"pool:{pool.id}",
            {
                "trigger": trigger,
                "reason": reason,
                "from": event.from_hostname,
                "to": member.hostname,
                "address": address,
            },
        )
        log.warning(
            "pool %s: %s promoted %s (%s): %s", pool.name, trigger, member.hostname, address, reason
        )
        return event

    def _health(
        self, pool: Pool, member: Member, now: datetime, *, heard_since_start: bool = False
    ) -> health.Health:
        """`heard_since_start`: silence counts from this control plane's start at the earliest
        (for the active member: see the module's docstring)."""
        heard_since = self.listening_since if heard_since_start else None
        return health.of_member(
            pool, member, self.live.members.get(member.id), now, heard_since=heard_since
        )

    def _ready_standby(self, pool: Pool, now: datetime | None = None) -> Member | None:
        """The first standby (in member order) that is healthy and has an address."""
        now = now or utcnow()
        for member in pool.members:
            if member.id == pool.active_member_id:
                continue
            if self._health(pool, member, now).state == "healthy" and self._ip(member):
                return member
        return None

    def _require_ready(self, pool: Pool, member: Member) -> None:
        state = self._health(pool, member, utcnow())
        if state.state != "healthy":
            raise Conflict(
                f"{member.hostname} is not failover-ready: "
                f"{state.reason or 'it has not sent a heartbeat yet'}"
            )

    def _ip(self, member: Member) -> str | None:
        return self.live.ip_of(member.id, member.last_ip)

    def _publishable_ip(self, member: Member) -> str:
        address = self._ip(member)
        if not address or ":" in address:
            raise Conflict(
                f"{member.hostname} has reported no public IPv4 address yet "
                "(its heartbeats carry the address the A record points at)"
            )
        return address

    # -- reading --------------------------------------------------------------------------------

    def events(self, principal: Principal, pool_id: int, limit: int = 50) -> list[dict[str, Any]]:
        principal.require("viewer")
        with self.db.session() as s:
            lookup.pool(s, pool_id)
            rows = s.scalars(
                select(FailoverEvent)
                .where(FailoverEvent.pool_id == pool_id)
                .order_by(FailoverEvent.id.desc())
                .limit(max(1, min(limit, 500)))
            )
            return [event_view(s, e) for e in rows]

    def last_event(self, s: Session, pool_id: int) -> dict[str, Any] | None:
        row = s.scalars(
            select(FailoverEvent)
            .where(FailoverEvent.pool_id == pool_id)
            .order_by(FailoverEvent.id.desc())
            .limit(1)
        ).first()
        return event_view(s, row) if row else None

    def incident(self, pool_id: int) -> dict[str, Any] | None:
        found = self._incidents.get(pool_id)
        if found is None:
            return None
        return {
            "member_id": found.member_id,
            "since": found.since,
            "reason": found.reason,
            "handled": found.handled,
        }


def event_view(s: Session, event: FailoverEvent) -> dict[str, Any]:
    update = s.get(DnsUpdate, event.dns_update_id) if event.dns_update_id else None
    dns = update_view(update) if update else None

    def since(moment: datetime | None, start: datetime | None) -> float | None:
        if moment is None or start is None:
            return None
        return round((moment - start).total_seconds(), 3)

    return {
        "id": event.id,
        "at": event.at,
        "trigger": event.trigger,
        "reason": event.reason,
        "actor": event.actor,
        "from": {"id": event.from_member_id, "hostname": event.from_hostname}
        if event.from_member_id
        else None,
        "to": {"id": event.to_member_id, "hostname": event.to_hostname},
        "address": event.address,
        "detected_at": event.detected_at,
        "dns": dns,
        "timings": {
            "detect_to_promote_s": since(event.at, event.detected_at),
            "promote_to_dns_applied_s": since(update.applied_at, event.at) if update else None,
            "promote_to_propagated_s": since(update.propagated_at, event.at) if update else None,
        },
    }


def _require_dns(s: Session, pool: Pool) -> PoolDns:
    link = s.get(PoolDns, pool.id)
    if link is None:
        raise Conflict(
            f"DNS is not connected for pool {pool.name!r}: link a DNS provider on its Managed "
            "DNS tab (PUT /api/pools/{id}/dns) before moving the A record"
        )
    return link


def _fqdn(link: PoolDns | None) -> str:
    from serverctl.dns import names

    return names.fqdn(link.label, link.zone) if link else "(not linked)"
