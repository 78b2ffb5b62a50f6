"""Per-member monitors: heartbeat lost, HAProxy down, rejected heartbeats, TLS certificates.

Every couple of seconds (the alert loop) each member is checked against its thresholds
(Member.alert_settings, defaults in serverctl.domain.alerts.MEMBER_ALERTS) from the live state:

- heartbeat lost: the last heartbeat is older than the threshold (members that never sent one
  are not checked);
- HAProxy down: in a pool with HAProxy monitored, the agent has reported HAProxy not running
  for longer than the threshold (judged only while heartbeats are fresh: a silent agent is the
  heartbeat alert's business);
- rejected: at least the threshold's number of the agent's requests refused in 5 minutes;
- certificate expiring: a certificate HAProxy loads, or the pool's failover certificate, has
  fewer days left than the threshold (or has expired), from the agent's last reported list
  (`haproxy.certificates`, serverctl.domain.certificates). Only members whose block carries
  that list cost anything; the pool's DNS link (which file is the failover certificate) is
  read once per pool and round, only while a certificate is within the threshold. Resolved
  when no such certificate is within the threshold any more (renewed, or no longer loaded).

An incident raises one alert; the open alert (no `resolved_at`) is the incident, so a restart
does not raise it again. The alert is resolved when the condition clears or the alert is
turned off. A condition present but not yet long enough leaves an open alert as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serverctl.db.models import AgentRejection, Alert, Member, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import certificates
from serverctl.domain.alerts import (
    MEMBER_ALERTS,
    REJECTION_WINDOW_S,
    AlertService,
    alert_settings_of,
)
from serverctl.domain.live import LiveState, MemberLive

log = logging.getLogger(__name__)

# HAProxy's reported state is only believed while heartbeats are this fresh.
FRESH_S = 15.0
HEARTBEAT, HAPROXY, REJECTED = "member.heartbeat_lost", "member.haproxy_down", "member.rejected"
CERTIFICATE = "member.certificate_expiring"


class MemberRow(NamedTuple):
    """What a round reads of each member: plain columns, not ORM objects.
    Building thousands of Member objects every round took most of a core's tenth with 5,000
    members (143 ms a round against 19 ms for the columns). Member.haproxy is read only for a
    member missing from the live state whose stored last heartbeat is fresh (just after a
    restart)."""

    id: int
    pool_id: int
    hostname: str
    last_seen_at: datetime | None
    alert_settings: dict[str, Any] | None


_MEMBER_COLUMNS = (
    Member.id,
    Member.pool_id,
    Member.hostname,
    Member.last_seen_at,
    Member.alert_settings,
)
# Most members keep the defaults: worked out once, read-only here.
_DEFAULT_SETTINGS = alert_settings_of(None)


@dataclass(frozen=True)
class Finding:
    """What one check says about one member now."""

    # bad: the alert's condition holds (long enough); unknown: cannot tell, or not yet long
    # enough, so an open alert stays as it is.
    bad: bool = False
    unknown: bool = False
    subject: str = ""
    message: str = ""


CLEAR = Finding()
UNKNOWN = Finding(unknown=True)


@dataclass(frozen=True)
class Subject:
    """One member as the checks see it."""

    member: MemberRow
    pool: Pool
    live: MemberLive | None
    last_seen: datetime | None
    settings: dict[str, dict[str, Any]]


class MemberMonitors:
    def __init__(self, db: Database, live: LiveState, alerts: AlertService) -> None:
        self.db = db
        self.live = live
        self.alerts = alerts
        # When each (member, kind) condition that needs a duration was first seen.
        self._since: dict[tuple[int, str], datetime] = {}
        # Pools' failover FQDNs, read during one round only when a certificate is due.
        self._fqdns: dict[int, str | None] = {}

    def run_once(self, now: datetime | None = None) -> list[int]:
        """Check every member; raise new incidents, resolve cleared ones. Returns new ids."""
        now = now or utcnow()
        raised: list[tuple[int, int, str, Finding]] = []
        self._fqdns = {}
        with self.db.session() as s:
            # Only the columns the checks read (the live state has the rest): whole rows, with
            # their JSON, took a good share of a core every round with thousands of members.
            pools = {pool.id: pool for pool in s.scalars(select(Pool))}
            rows = [
                (member, pools[member.pool_id])
                for member in map(MemberRow._make, s.execute(select(*_MEMBER_COLUMNS)))
                if member.pool_id in pools
            ]
            open_alerts: dict[tuple[int, str], list[Alert]] = {}
            for alert in s.scalars(
                select(Alert).where(
                    Alert.resolved_at.is_(None),
                    Alert.member_id.is_not(None),
                    Alert.kind.in_(list(MEMBER_ALERTS)),
                )
            ):
                open_alerts.setdefault((alert.member_id or 0, alert.kind), []).append(alert)
            counts = self._rejection_counts(s, rows, open_alerts, now)
            for member, pool in rows:
                subject = self._subject(member, pool)
                for kind, finding in self._findings(s, subject, counts, now).items():
                    current = open_alerts.get((member.id, kind), [])
                    if finding.bad and not current:
                        raised.append((pool.id, member.id, kind, finding))
                    elif not finding.bad and not finding.unknown:
                        for alert in current:
                            alert.resolved_at = now
                            log.info("alert %s (%s) resolved", alert.id, alert.subject)
            alive = {member.id for member, _ in rows}
            self._since = {k: v for k, v in self._since.items() if k[0] in alive}
        ids: list[int] = []
        for pool_id, member_id, kind, finding in raised:
            alert_id = self.alerts.raise_alert(
                pool_id, kind, finding.subject, finding.message, member_id=member_id
            )
            if alert_id is not None:
                ids.append(alert_id)
        return ids

    def _subject(self, member: MemberRow, pool: Pool) -> Subject:
        live = self.live.members.get(member.id)
        last_seen = live.last_seen if live is not None else member.last_seen_at
        stored = member.alert_settings
        settings = _DEFAULT_SETTINGS if stored is None else alert_settings_of(stored)
        return Subject(member, pool, live, last_seen, settings)

    def _findings(
        self, s: Session, subject: Subject, counts: dict[int, int], now: datetime
    ) -> dict[str, Finding]:
        settings = subject.settings
        return {
            HEARTBEAT: (
                heartbeat_lost(subject, settings[HEARTBEAT]["threshold"], now)
                if settings[HEARTBEAT]["enabled"]
                else CLEAR
            ),
            HAPROXY: (
                self._haproxy_down(s, subject, settings[HAPROXY]["threshold"], now)
                if settings[HAPROXY]["enabled"]
                else CLEAR
            ),
            REJECTED: (
                rejected(subject, settings[REJECTED]["threshold"], counts.get(subject.member.id))
                if settings[REJECTED]["enabled"]
                else CLEAR
            ),
            CERTIFICATE: (
                certificate_expiring(
                    s, subject, settings[CERTIFICATE]["threshold"], now, self._fqdns
                )
                if settings[CERTIFICATE]["enabled"]
                else CLEAR
            ),
        }

    def _haproxy_down(self, s: Session, subject: Subject, threshold: int, now: datetime) -> Finding:
        key = (subject.member.id, HAPROXY)
        if not subject.pool.haproxy_monitored or subject.last_seen is None:
            self._since.pop(key, None)
            return CLEAR
        if (now - subject.last_seen).total_seconds() > FRESH_S:
            return UNKNOWN
        if subject.live is not None:
            block = subject.live.haproxy or {}
        else:
            stored = s.scalar(select(Member.haproxy).where(Member.id == subject.member.id))
            block = stored or {}
        if block.get("active") is True:
            self._since.pop(key, None)
            return CLEAR
        since = self._since.setdefault(key, now)
        down_s = (now - since).total_seconds()
        if down_s < threshold:
            return UNKNOWN
        name, hostname = subject.pool.name, subject.member.hostname
        if block.get("monitored"):
            state = f"not running ({block.get('source') or 'the agent'} reports it inactive)"
        else:
            state = "not visible to the agent (no systemd unit and no pidfile)"
        return Finding(
            bad=True,
            subject=f"[{name}] {hostname}: HAProxy is down",
            message=(
                f"HAProxy on {hostname} (pool {name}) is {state} for {down_s:.0f} s; alert "
                f"threshold {threshold} s.\n"
                "Check the service on the host (systemctl status haproxy) or use the member's "
                "Control panel (Validate configuration, Reload HAProxy)."
            ),
        )

    def _rejection_counts(
        self,
        s: Session,
        rows: Any,
        open_alerts: dict[tuple[int, str], list[Alert]],
        now: datetime,
    ) -> dict[int, int]:
        """Refused requests per member in the window, for members that may have some."""
        cutoff = now - timedelta(seconds=REJECTION_WINDOW_S)
        candidates = {member_id for member_id, kind in open_alerts if kind == REJECTED}
        for member, _ in rows:
            live = self.live.members.get(member.id)
            if live is not None and live.last_rejection is not None:
                if live.last_rejection.at >= cutoff:
                    candidates.add(member.id)
        if not candidates:
            return {}
        counts: dict[int, int] = dict.fromkeys(candidates, 0)
        for member_id, total in s.execute(
            select(AgentRejection.member_id, func.sum(AgentRejection.count))
            .where(AgentRejection.member_id.in_(candidates), AgentRejection.at >= cutoff)
            .group_by(AgentRejection.member_id)
        ):
            counts[member_id] += int(total or 0)
        # Refusals the flusher has not written yet.
        with self.live.lock:
            pending = list(self.live.rejections)
        for item in pending:
            if item.member_id in counts and item.rejection.at >= cutoff:
                counts[item.member_id] += 1
        return counts


def heartbeat_lost(subject: Subject, threshold: int, now: datetime) -> Finding:
    if subject.last_seen is None:
        return CLEAR
    age = (now - subject.last_seen).total_seconds()
    if age <= threshold:
        return CLEAR
    name, hostname = subject.pool.name, subject.member.hostname
    return Finding(
        bad=True,
        subject=f"[{name}] {hostname}: heartbeat lost",
        message=(
            f"No heartbeat from {hostname} (pool {name}) for {age:.0f} s, since "
            f"{subject.last_seen:%Y-%m-%d %H:%M:%S} UTC; alert threshold {threshold} s.\n"
            "Check that the host is up, that the agent runs (systemctl status balctl) and that "
            "it can reach the control plane."
        ),
    )


def rejected(subject: Subject, threshold: int, count: int | None) -> Finding:
    if not count or count < threshold:
        return CLEAR
    name, hostname = subject.pool.name, subject.member.hostname
    last = subject.live.last_rejection if subject.live else None
    reason = f"\nThe last one: {last.status} from {last.source_ip}: {last.reason}" if last else ""
    return Finding(
        bad=True,
        subject=f"[{name}] {hostname}: agent requests refused",
        message=(
            f"{count} requests from the agent of {hostname} (pool {name}) were refused in the "
            f"last {REJECTION_WINDOW_S // 60} minutes; alert threshold {threshold}.{reason}\n"
            "A rotated secret, a changed address (allowed IPs) or a renamed host are the usual "
            "causes: see the member's Health tab."
        ),
    )


def certificate_expiring(
    s: Session,
    subject: Subject,
    threshold: int,
    now: datetime,
    fqdns: dict[int, str | None] | None = None,
) -> Finding:
    """`fqdns`: the pools' failover FQDNs already read this round (filled in here)."""
    if subject.live is None:
        return UNKNOWN  # registered at start and on add: only a moment; no column read for it
    entries = (subject.live.haproxy or {}).get("certificates")
    if not entries:
        return CLEAR
    limit = now.timestamp() + threshold * certificates.DAY_S
    soon = [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("not_after"), int)
        and e["not_after"] < limit
        and "error" not in e
    ]
    if not soon:
        return CLEAR
    # Rare from here on (only while a certificate is due): which one is the failover one,
    # read once per pool and round.
    fqdns = {} if fqdns is None else fqdns
    pool_id = subject.pool.id
    if pool_id not in fqdns:
        fqdns[pool_id] = certificates.failover_fqdn(s.get(PoolDns, pool_id))
    path = certificates.failover_path(fqdns[pool_id])
    views = [certificates.entry_view(e, now, path) for e in soon]
    views = [v for v in views if certificates.watched(v)]
    if not views:
        return CLEAR
    views.sort(key=lambda v: v["not_after"])
    return _expiring_finding(subject, views, threshold)


def _expiring_finding(subject: Subject, views: list[dict[str, Any]], threshold: int) -> Finding:
    name, hostname = subject.pool.name, subject.member.hostname
    first = views[0]
    days = first["days_left"]
    if first["status"] == "expired":
        when = "has expired"
    else:
        when = f"expires in {days} day{'s' if days != 1 else ''}" if days else "expires today"
    lines = []
    for view in views:
        names = ", ".join(view["sans"]) or view["subject"] or "(no names)"
        state = "expired on" if view["status"] == "expired" else "expires on"
        lines.append(
            f"- {view['path']} ({names}) {state} {view['not_after']:%Y-%m-%d %H:%M} UTC"
            + (" (the pool's failover certificate)" if view["failover_cert"] else "")
        )
    return Finding(
        bad=True,
        subject=f"[{name}] {hostname}: TLS certificate {when}",
        message=(
            f"A TLS certificate on {hostname} (pool {name}) {when}; alert threshold "
            f"{threshold} days.\n"
            + "\n".join(lines)
            + '\nRenew it: run the recipe "Let\'s Encrypt (failover / HAProxy)" on the '
            "member's Recipes tab, or queue the tls.acme_renew_force job (Control panel, or "
            "Cron & Jobs for a schedule). A certificate from another CA: install the renewed "
            "file and reload HAProxy. The alert resolves once the agent reports the new one."
        ),
    )
