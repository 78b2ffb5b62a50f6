"""Alert email delivery: pending alerts become emails to the pool's recipients.

One round (`AlertDelivery.run_once`, called by the alert loop about once a second and at once
when an alert is raised) sends every due pending alert and marks it:

- `sent` when the SMTP server took it (refused recipients, if some, are noted in `email_error`);
- still `pending`, with the error and the next try in `email_error`, after a failed attempt:
  tries are spaced by RETRY_DELAYS_S;
- `failed` with the error after MAX_ATTEMPTS, at once when SMTP is not configured or the pool
  has no recipients any more, and when an alert waited longer than GIVE_UP_AFTER.

The attempt counts live in memory: after a restart a pending alert gets its tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from serverctl.db.models import Alert, Member, Pool
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain.alerts import ALERT_TITLES, AlertService
from serverctl.domain.mailer import SmtpSettings
from serverctl.domain.smtp_settings import NOT_CONFIGURED, SmtpService
from serverctl.errors import MailError, ServerCTLError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
RETRY_DELAYS_S = (10, 60, 300)
GIVE_UP_AFTER = timedelta(hours=24)
BATCH = 20


@dataclass(frozen=True)
class Outgoing:
    """One pending alert, read out of its session, with what its email needs."""

    alert_id: int
    at: datetime
    pool_id: int
    pool_name: str
    recipients: list[str]
    hostname: str | None
    kind: str
    subject: str
    message: str


@dataclass
class _Tries:
    attempts: int
    next_at: datetime


class AlertDelivery:
    def __init__(
        self,
        db: Database,
        smtp: SmtpService,
        alerts: AlertService,
        public_url: str | None = None,
    ) -> None:
        self.db = db
        self.smtp = smtp
        self.alerts = alerts
        self.public_url = public_url.rstrip("/") if public_url else None
        self._tries: dict[int, _Tries] = {}

    def run_once(self, now: datetime | None = None) -> int:
        """Send the due pending alert emails; returns how many were sent."""
        now = now or utcnow()
        due = self._due(now)
        if not due:
            return 0
        try:
            settings = self.smtp.load()
        except ServerCTLError as exc:  # e.g. the password cannot be decrypted any more
            settings, broken = None, exc.message
        else:
            broken = NOT_CONFIGURED
        sent = 0
        for item in due:
            if settings is None:
                self._mark(item.alert_id, "failed", broken)
                continue
            sent += self._deliver(settings, item, now)
        return sent

    def _due(self, now: datetime) -> list[Outgoing]:
        with self.db.session() as s:
            rows = s.execute(
                select(Alert, Pool)
                .join(Pool, Pool.id == Alert.pool_id)
                .where(Alert.email_state == "pending")
                .order_by(Alert.id)
                .limit(BATCH)
            ).all()
            due: list[Outgoing] = []
            for alert, pool in rows:
                tries = self._tries.get(alert.id)
                if tries is not None and tries.next_at > now:
                    continue
                if now - alert.at > GIVE_UP_AFTER:
                    alert.email_state = "failed"
                    alert.email_error = (
                        f"not sent: still pending after {GIVE_UP_AFTER.total_seconds() / 3600:.0f}"
                        f" h ({alert.email_error or 'the alert loop was not running'})"
                    )
                    self._tries.pop(alert.id, None)
                    continue
                if not pool.alert_recipients:
                    alert.email_state = "failed"
                    alert.email_error = "not sent: the pool has no alert recipients any more"
                    continue
                member = s.get(Member, alert.member_id) if alert.member_id else None
                due.append(
                    Outgoing(
                        alert_id=alert.id,
                        at=alert.at,
                        pool_id=pool.id,
                        pool_name=pool.name,
                        recipients=list(pool.alert_recipients),
                        hostname=member.hostname if member else None,
                        kind=alert.kind,
                        subject=alert.subject,
                        message=alert.message,
                    )
                )
            return due

    def _deliver(self, settings: SmtpSettings, item: Outgoing, now: datetime) -> int:
        try:
            refused = self.smtp.mailer.send(
                settings, item.recipients, item.subject, self.body(item)
            )
        except MailError as exc:
            self._failed(item, exc.message, now)
            return 0
        self._tries.pop(item.alert_id, None)
        note = f"refused by the SMTP server for {', '.join(refused)}" if refused else None
        self._mark(item.alert_id, "sent", note)
        return 1

    def _failed(self, item: Outgoing, error: str, now: datetime) -> None:
        tries = self._tries.get(item.alert_id) or _Tries(0, now)
        tries.attempts += 1
        if tries.attempts >= MAX_ATTEMPTS:
            self._tries.pop(item.alert_id, None)
            log.warning(
                "alert %s email failed %d times, giving up: %s", item.alert_id, MAX_ATTEMPTS, error
            )
            self._mark(item.alert_id, "failed", f"{error} (gave up after {MAX_ATTEMPTS} tries)")
            return
        delay = RETRY_DELAYS_S[min(tries.attempts, len(RETRY_DELAYS_S)) - 1]
        tries.next_at = now + timedelta(seconds=delay)
        self._tries[item.alert_id] = tries
        log.warning(
            "alert %s email failed (try %d of %d, next in %d s): %s",
            item.alert_id,
            tries.attempts,
            MAX_ATTEMPTS,
            delay,
            error,
        )
        self._mark(
            item.alert_id,
            "pending",
            f"try {tries.attempts} of {MAX_ATTEMPTS} failed, next in {delay} s: {error}",
        )

    def _mark(self, alert_id: int, state: str, error: str | None) -> None:
        with self.db.session() as s:
            alert = s.get(Alert, alert_id)
            if alert is not None:
                alert.email_state = state
                alert.email_error = error

    def body(self, item: Outgoing) -> str:
        lines = [item.message.rstrip(), "", f"Pool: {item.pool_name}"]
        if item.hostname:
            lines.append(f"Member: {item.hostname}")
        lines += [
            f"Alert: {ALERT_TITLES.get(item.kind, item.kind)} ({item.kind})",
            f"Raised: {item.at:%Y-%m-%d %H:%M:%S} UTC",
        ]
        if self.public_url:
            lines.append(f"Monitoring: {self.public_url}/pools/{item.pool_id}/monitoring")
        lines += ["", "-- ServerCTL"]
        return "\n".join(lines) + "\n"
