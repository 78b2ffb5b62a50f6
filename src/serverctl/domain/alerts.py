"""Alerts: things operators must hear about, kept per pool (and member) and emailed.

`AlertService.raise_alert` is the hook the failover rules and the DNS publisher call. It only
records the alert (marking it for email when the pool wants that kind and has recipients); the
alert loop sends the email, so a slow SMTP server never delays a failover.
"""

from __future__ import annotations

import logging
from typing import Any

from serverctl.db.models import Alert, Pool
from serverctl.db.session import Database
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
}


def pool_alert_settings(pool: Pool) -> dict[str, bool]:
    stored = pool.alert_settings or {}
    return {kind: bool(stored.get(kind, default)) for kind, (_, default) in POOL_ALERTS.items()}


class AlertService:
    def __init__(self, db: Database) -> None:
        self.db = db

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
            log.warning("alert %s: %s", kind, subject)
            return alert.id

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
        """The (pool_id, kind, subject, message) callable the failover rules are given."""
        try:
            self.raise_alert(pool_id, kind, subject, message)
        except Exception:  # noqa: BLE001 - an alert must never break a failover
            log.exception("recording alert %s for pool %s failed", kind, pool_id)

    def recent(
        self, pool_id: int, member_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        from sqlalchemy import select

        with self.db.session() as s:
            query = select(Alert).where(Alert.pool_id == pool_id)
            if member_id is not None:
                query = query.where(Alert.member_id == member_id)
            rows = s.scalars(query.order_by(Alert.id.desc()).limit(limit))
            return [alert_view(a) for a in rows]


def alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "at": alert.at,
        "pool_id": alert.pool_id,
        "member_id": alert.member_id,
        "kind": alert.kind,
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
