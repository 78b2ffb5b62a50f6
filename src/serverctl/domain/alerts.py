"""Alerts: things operators must hear about, kept per pool (and member) and emailed.

`AlertService.raise_alert` records an alert, marked for email when the pool (or, for a member
alert, the member's settings) wants that kind and the pool has recipients, and wakes the alert
loop, which sends the email (serverctl.domain.alert_delivery): a slow SMTP server never delays
a failover.

The failover rules and the DNS publisher get `AlertService.hook`; they call it after their own
transaction has committed (on SQLite a second writer inside it would wait on it).

Member alerts (heartbeat lost, HAProxy down, rejected heartbeats, a TLS certificate expiring)
are raised by the member monitors (serverctl.domain.monitors), once per incident, and resolved
when the condition clears.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serverctl.db.models import Alert, Member, Pool
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, lookup
from serverctl.domain.principal import Principal
from serverctl.errors import ValidationError

log = logging.getLogger(__name__)

# Pool-wide alerts and whether each is emailed by default (the pool's Monitoring tab).
POOL_ALERTS: dict[str, tuple[str, bool]] = {
    "failover.promoted": ("Automatic failover promoted a standby", True),
    "failover.no_standby": ("No standby is ready for failover", True),
    "failover.no_dns": ("Automatic failover cannot move DNS (not linked)", True),
    "failover.cooldown": ("Automatic failover held back by the cool-down", True),
    "dns.failing": ("A DNS update keeps failing", True),
    "backup.failed": ("A backup failed", True),
    "tls.certificate_failed": ("TLS certificate order failed", True),
}


# Refused requests are counted over this window for the member.rejected alert.
REJECTION_WINDOW_S = 300


@dataclass(frozen=True)
class MemberAlertKind:
    title: str
    # The threshold's default and bounds, and what it counts.
    default: int
    minimum: int
    maximum: int
    unit: str
    help: str


# Per-member alerts (the member's Monitoring tab). Each is on, and emailed, by default.
MEMBER_ALERTS: dict[str, MemberAlertKind] = {
    "member.heartbeat_lost": MemberAlertKind(
        "Heartbeat lost",
        60,
        5,
        86_400,
        "seconds",
        "no heartbeat for longer than this",
    ),
    "member.haproxy_down": MemberAlertKind(
        "HAProxy down",
        10,
        1,
        86_400,
        "seconds",
        "the agent reports HAProxy not running for longer than this (pools with HAProxy "
        "monitored only)",
    ),
    "member.rejected": MemberAlertKind(
        "Rejected heartbeats",
        5,
        1,
        10_000,
        "refused requests in 5 minutes",
        "at least this many of the agent's requests refused within 5 minutes",
    ),
    "member.certificate_expiring": MemberAlertKind(
        "TLS certificate expiring",
        14,
        1,
        60,
        "days",
        "a certificate HAProxy loads (or the pool's failover certificate) expires within "
        "this many days; automatic renewal starts at 30",
    ),
}
ALERT_TITLES = {
    **{kind: title for kind, (title, _) in POOL_ALERTS.items()},
    **{kind: spec.title for kind, spec in MEMBER_ALERTS.items()},
}
MEMBER_ALERT_FIELDS = ("enabled", "threshold", "email")


def pool_alert_settings(pool: Pool) -> dict[str, bool]:
    stored = pool.alert_settings or {}
    return {kind: bool(stored.get(kind, default)) for kind, (_, default) in POOL_ALERTS.items()}


def member_alert_settings(member: Member) -> dict[str, dict[str, Any]]:
    """Each member alert's `enabled`, `threshold` and `email`, defaults filled in."""
    return alert_settings_of(member.alert_settings)


def alert_settings_of(stored: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """`member_alert_settings` from the stored column's value."""
    stored = stored or {}
    result: dict[str, dict[str, Any]] = {}
    for kind, spec in MEMBER_ALERTS.items():
        mine = stored.get(kind)
        mine = mine if isinstance(mine, dict) else {}
        threshold = mine.get("threshold", spec.default)
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            threshold = spec.default
        result[kind] = {
            "enabled": bool(mine.get("enabled", True)),
            "threshold": min(spec.maximum, max(spec.minimum, threshold)),
            "email": bool(mine.get("email", True)),
        }
    return result


def _member_alert_changes(
    current: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The settings after `changes`, or a ValidationError naming the bad kind or value."""
    unknown = sorted(set(changes) - set(MEMBER_ALERTS))
    if unknown:
        raise ValidationError(
            f"unknown member alert kind(s) {unknown}; known: {sorted(MEMBER_ALERTS)}"
        )
    result = {kind: dict(values) for kind, values in current.items()}
    for kind, change in changes.items():
        spec = MEMBER_ALERTS[kind]
        bad = sorted(set(change) - set(MEMBER_ALERT_FIELDS))
        if bad:
            raise ValidationError(f"{kind}: unknown field(s) {bad}; known: {MEMBER_ALERT_FIELDS}")
        for flag in ("enabled", "email"):
            if flag in change and change[flag] is not None:
                if not isinstance(change[flag], bool):
                    raise ValidationError(f"{kind}.{flag} must be true or false")
                result[kind][flag] = change[flag]
        threshold = change.get("threshold")
        if threshold is not None:
            if not isinstance(threshold, int) or isinstance(threshold, bool):
                raise ValidationError(f"{kind}.threshold must be a whole number")
            if not spec.minimum <= threshold <= spec.maximum:
                raise ValidationError(
                    f"{kind}.threshold must be {spec.minimum}-{spec.maximum} {spec.unit}, "
                    f"not {threshold}"
                )
            result[kind]["threshold"] = threshold
    return result


class AlertService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Set when an alert to email is recorded: wakes the alert loop at once.
        self.wakeup = threading.Event()

    def raise_alert(
        self,
        pool_id: int,
        kind: str,
        subject: str,
        message: str,
        member_id: int | None = None,
    ) -> int | None:
        with self.db.session() as s:
            pool = s.get(Pool, pool_id)
            if pool is None:
                return None
            member = s.get(Member, member_id) if member_id is not None else None
            if member_id is not None and (member is None or member.pool_id != pool_id):
                return None
            if member is not None and kind in MEMBER_ALERTS:
                wanted = bool(member_alert_settings(member)[kind]["email"])
            else:
                wanted = pool_alert_settings(pool).get(kind, True)
            email = "pending" if wanted and pool.alert_recipients else "none"
            alert = Alert(
                pool_id=pool_id,
                member_id=member_id,
                kind=kind,
                subject=subject[:255],
                message=message,
                email_state=email,
            )
            s.add(alert)
            s.flush()
            alert_id = alert.id
        log.warning("alert %s: %s", kind, subject)
        if email == "pending":
            self.wakeup.set()
        return alert_id

    def pool_alerts(self, principal: Principal, pool_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            return {
                "recipients": list(pool.alert_recipients or []),
                "email_on": pool_alert_settings(pool),
            }

    def set_pool_alerts(
        self,
        principal: Principal,
        pool_id: int,
        *,
        recipients: list[str] | None = None,
        email_on: dict[str, bool] | None = None,
    ) -> dict[str, Any]:
        """Who gets the pool's alert emails, and for which kinds."""
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            before = {
                "recipients": list(pool.alert_recipients or []),
                "email_on": pool_alert_settings(pool),
            }
            if recipients is not None:
                pool.alert_recipients = email_addresses(recipients)
            if email_on is not None:
                unknown = sorted(set(email_on) - set(POOL_ALERTS))
                if unknown:
                    raise ValidationError(
                        f"unknown alert kind(s) {unknown}; known: {sorted(POOL_ALERTS)}"
                    )
                pool.alert_settings = {**pool_alert_settings(pool), **email_on}
            after = {
                "recipients": list(pool.alert_recipients or []),
                "email_on": pool_alert_settings(pool),
            }
            if after != before:
                audit.record(
                    s,
                    principal,
                    "pool.alerts.update",
                    f"pool:{pool.id}",
                    {"before": before, "after": after},
                )
            return after

    def hook(self, pool_id: int, kind: str, subject: str, message: str) -> None:
        """The (pool_id, kind, subject, message) callable the failover rules and the DNS
        publisher are given. Call it outside an open write transaction: on SQLite the alert's
        own write would wait for that transaction to end."""
        try:
            self.raise_alert(pool_id, kind, subject, message)
        except Exception:  # noqa: BLE001 - an alert must never break a failover
            log.exception("recording alert %s for pool %s failed", kind, pool_id)

    def recent(
        self, pool_id: int, member_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return _history(s, pool_id, member_id, limit)

    def history(
        self, principal: Principal, pool_id: int, member_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The newest alerts of a pool (members' included), or of one member."""
        principal.require("viewer")
        limit = max(1, min(limit, 500))
        with self.db.session() as s:
            if member_id is None:
                lookup.pool(s, pool_id)
            else:
                lookup.pool_member(s, pool_id, member_id)
            return _history(s, pool_id, member_id, limit)

    # -- per-member alert settings --------------------------------------------------------------

    def member_alerts(self, principal: Principal, pool_id: int, member_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            return _member_alerts_view(s, pool, member)

    def set_member_alerts(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        changes: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """Change some of a member's alerts: {kind: {"enabled"?, "threshold"?, "email"?}}.
        Turning an alert off resolves its open incident."""
        principal.require("operator")
        with self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            before = member_alert_settings(member)
            after = _member_alert_changes(before, changes)
            if after != before:
                member.alert_settings = after
                audit.record(
                    s,
                    principal,
                    "member.alerts.update",
                    f"member:{member.id}",
                    {
                        "pool": pool.name,
                        "hostname": member.hostname,
                        "before": before,
                        "after": after,
                    },
                )
                off = [kind for kind, values in after.items() if not values["enabled"]]
                if off:
                    _resolve_open(s, member.id, off)
            return _member_alerts_view(s, pool, member)


def _resolve_open(s: Session, member_id: int, kinds: list[str]) -> None:
    now = utcnow()
    for alert in s.scalars(
        select(Alert).where(
            Alert.member_id == member_id, Alert.kind.in_(kinds), Alert.resolved_at.is_(None)
        )
    ):
        alert.resolved_at = now


def _member_alerts_view(s: Session, pool: Pool, member: Member) -> dict[str, Any]:
    settings = member_alert_settings(member)
    open_kinds = set(
        s.scalars(
            select(Alert.kind).where(Alert.member_id == member.id, Alert.resolved_at.is_(None))
        )
    )
    return {
        "pool_id": pool.id,
        "member_id": member.id,
        "hostname": member.hostname,
        "haproxy_monitored": pool.haproxy_monitored,
        "rejection_window_s": REJECTION_WINDOW_S,
        "alerts": {
            kind: {
                **settings[kind],
                "title": spec.title,
                "unit": spec.unit,
                "help": spec.help,
                "default": spec.default,
                "min": spec.minimum,
                "max": spec.maximum,
                "open": kind in open_kinds,
            }
            for kind, spec in MEMBER_ALERTS.items()
        },
    }


def _history(s: Session, pool_id: int, member_id: int | None, limit: int) -> list[dict[str, Any]]:
    query = select(Alert).where(Alert.pool_id == pool_id)
    if member_id is not None:
        query = query.where(Alert.member_id == member_id)
    rows = list(s.scalars(query.order_by(Alert.id.desc()).limit(limit)))
    member_ids = {a.member_id for a in rows if a.member_id is not None}
    names = (
        dict(s.execute(select(Member.id, Member.hostname).where(Member.id.in_(member_ids))).all())
        if member_ids
        else {}
    )
    return [{**alert_view(a), "hostname": names.get(a.member_id or 0)} for a in rows]


def alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "at": alert.at,
        "pool_id": alert.pool_id,
        "member_id": alert.member_id,
        "kind": alert.kind,
        "title": ALERT_TITLES.get(alert.kind, alert.kind),
        "subject": alert.subject,
        "message": alert.message,
        "resolved_at": alert.resolved_at,
        "email_state": alert.email_state,
        "email_error": alert.email_error,
    }


def email_addresses(values: list[str]) -> list[str]:
    """Recipient addresses: a plain local@domain check (the SMTP server has the last word)."""
    result: list[str] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        local, at, domain = value.rpartition("@")
        if not at or not local or "." not in domain or any(c in value for c in " ,;<>\r\n"):
            raise ValidationError(f"{value!r} is not an email address (name@example.com)")
        if value not in result:
            result.append(value)
    if len(result) > 50:
        raise ValidationError("at most 50 alert recipients")
    return result
