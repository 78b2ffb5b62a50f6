"""The control plane's SMTP server (Settings → Email): stored, shown without the password, tested.

Kept in `app_settings` under the key "smtp": the non-secret fields in `value`, the password
only encrypted in `secrets_encrypted` (serverctl.crypto). The password is never returned,
audited or logged; answers say `password_set` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from serverctl.crypto import SecretBox, SecretBoxError
from serverctl.db.models import AppSetting
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, lookup
from serverctl.domain.alerts import email_addresses
from serverctl.domain.mailer import DEFAULT_PORTS, SECURITY, Mailer, SmtpSettings
from serverctl.domain.principal import Principal
from serverctl.errors import MailError, ValidationError

log = logging.getLogger(__name__)

KEY = "smtp"
NOT_CONFIGURED = "SMTP is not configured (Settings → Email)"


class NotConfigured(MailError):
    def __init__(self) -> None:
        super().__init__(NOT_CONFIGURED)


class SmtpService:
    def __init__(self, db: Database, box: SecretBox, mailer: Mailer | None = None) -> None:
        self.db = db
        self.box = box
        self.mailer = mailer or Mailer()

    def get(self, principal: Principal) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            if row is None:
                return {
                    "configured": False,
                    "host": "",
                    "port": DEFAULT_PORTS["starttls"],
                    "security": "starttls",
                    "username": "",
                    "from_address": "",
                    "password_set": False,
                    "updated_at": None,
                    "updated_by": None,
                }
            return {
                "configured": True,
                **_public(row.value),
                "password_set": bool(row.secrets_encrypted),
                "updated_at": row.updated_at,
                "updated_by": row.updated_by,
            }

    def set(
        self,
        principal: Principal,
        *,
        host: str,
        port: int,
        security: str,
        from_address: str,
        username: str = "",
        password: str | None = None,
    ) -> dict[str, Any]:
        """Save the server. An empty or missing password keeps the stored one; an empty user
        name means no login (and drops a stored password)."""
        principal.require("admin")
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            try:
                stored = self._password(row)
            except SecretBoxError:
                # The secret key changed: a new password replaces the unreadable one.
                if not password:
                    raise
                stored = ""
            settings = SmtpSettings.validated(
                host=host,
                port=port,
                security=security,
                from_address=from_address,
                username=username,
                password=password or stored,
            )
            before = _public(row.value) if row else None
            if row is None:
                row = AppSetting(key=KEY, value={}, updated_by=principal.actor)
                s.add(row)
            row.value = settings.public()
            row.secrets_encrypted = (
                self.box.encrypt_json({"password": settings.password})
                if settings.password
                else None
            )
            row.updated_at = utcnow()
            row.updated_by = principal.actor
            audit.record(
                s,
                principal,
                "settings.smtp.update",
                "settings:smtp",
                {
                    "before": before,
                    "after": settings.public(),
                    "password": _password_change(stored, settings.password),
                },
            )
        return self.get(principal)

    def load(self) -> SmtpSettings | None:
        """The settings with the password decrypted, or None when not configured."""
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            if row is None:
                return None
            public, password = _public(row.value), self._password(row)
        return SmtpSettings(**public, password=password)

    def send(self, to: list[str], subject: str, body: str) -> list[str]:
        """Send through the configured server; returns refused recipients. Raises MailError
        (NotConfigured when there is no server yet)."""
        settings = self.load()
        if settings is None:
            raise NotConfigured()
        return self.mailer.send(settings, to, subject, body)

    def send_test(
        self, principal: Principal, to: list[str], about: str = "ServerCTL"
    ) -> dict[str, Any]:
        """Send a test email now; answers {"ok", "detail"} with what the server said."""
        principal.require("operator")
        if not to:
            return {"ok": False, "detail": "no recipients: give at least one address"}
        try:
            recipients = email_addresses(to)
        except ValidationError as exc:
            return {"ok": False, "detail": exc.message}
        body = (
            f"This is a test email from {about}, sent by {principal.actor}.\n\n"
            "Alert emails (automatic failover, no standby ready, DNS updates failing, member "
            "alerts) will arrive like this one.\n\n-- ServerCTL\n"
        )
        try:
            refused = self.send(recipients, f"[{about}] ServerCTL test email", body)
        except MailError as exc:
            log.warning("test email by %s failed: %s", principal.actor, exc.message)
            return {"ok": False, "detail": exc.message}
        sent = [r for r in recipients if r not in refused]
        detail = f"test email accepted by the SMTP server for {', '.join(sent)}"
        if refused:
            detail += f"; refused for {', '.join(refused)}"
        return {"ok": True, "detail": detail}

    def send_pool_test(self, principal: Principal, pool_id: int) -> dict[str, Any]:
        """A test email to the pool's alert recipients."""
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            name, recipients = pool.name, list(pool.alert_recipients or [])
        if not recipients:
            return {
                "ok": False,
                "detail": f"pool {name} has no alert recipients: add some and save first",
            }
        return self.send_test(principal, recipients, about=name)

    def _password(self, row: AppSetting | None) -> str:
        if row is None or not row.secrets_encrypted:
            return ""
        return str(self.box.decrypt_json(row.secrets_encrypted).get("password", ""))


def _public(value: dict[str, Any]) -> dict[str, Any]:
    security = value.get("security", "starttls")
    return {
        "host": str(value.get("host", "")),
        "port": int(value.get("port", DEFAULT_PORTS.get(security, 587))),
        "security": security if security in SECURITY else "starttls",
        "username": str(value.get("username", "")),
        "from_address": str(value.get("from_address", "")),
    }


def _password_change(before: str, after: str) -> str:
    if before == after:
        return "set, unchanged" if after else "none"
    if not after:
        return "removed"
    return "changed" if before else "set"
