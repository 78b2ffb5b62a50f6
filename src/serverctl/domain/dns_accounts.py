"""Named, reusable DNS provider credentials (Settings → API providers).

The secret fields of a provider's settings are encrypted at rest and never shown again after
saving; the rest is shown so operators can tell accounts apart. Building a provider from an
account is the only place the secrets are decrypted.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serverctl.crypto import SecretBox
from serverctl.db.models import DnsProviderAccount, PoolDns
from serverctl.db.session import Database
from serverctl.dns import registry
from serverctl.dns.base import CheckResult, DNSProvider
from serverctl.domain import audit
from serverctl.domain.principal import Principal
from serverctl.errors import Conflict, NotFound, ValidationError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
# Provider calls made for an operator (test, zone list, record read) must answer quickly.
INTERACTIVE_TIMEOUT_S = 8.0


class DnsAccounts:
    def __init__(self, db: Database, box: SecretBox, timeout: float = 10.0) -> None:
        self.db = db
        self.box = box
        self.timeout = timeout

    def create(
        self, principal: Principal, name: str, kind: str, config: dict[str, Any]
    ) -> dict[str, Any]:
        principal.require("admin")
        name = _account_name(name)
        cls = registry.provider_class(kind)
        if not isinstance(config, dict):
            raise ValidationError("config must be a JSON object of the provider's settings")
        provider = cls.from_dict(config)  # validates every key (422 naming the bad one)
        values = provider.config.model_dump(mode="json")
        public = {k: v for k, v in values.items() if k not in cls.secret_fields}
        hidden = {k: v for k, v in values.items() if k in cls.secret_fields}
        try:
            with self.db.session() as s:
                if s.scalar(select(DnsProviderAccount.id).where(DnsProviderAccount.name == name)):
                    raise Conflict(f"a DNS provider named {name!r} already exists")
                account = DnsProviderAccount(
                    name=name,
                    kind=kind,
                    settings=public,
                    secrets_encrypted=self.box.encrypt_json(hidden),
                    created_by=principal.actor,
                )
                s.add(account)
                s.flush()
                # The audit entry names the account and the keys set, never their values.
                audit.record(
                    s,
                    principal,
                    "dns_provider.create",
                    f"dns_provider:{account.id}",
                    {"name": name, "kind": kind, "settings": public, "secrets": sorted(hidden)},
                )
                return self._view(s, account)
        except IntegrityError:
            raise Conflict(f"a DNS provider named {name!r} already exists") from None

    def list_all(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("viewer")
        with self.db.session() as s:
            rows = s.scalars(select(DnsProviderAccount).order_by(DnsProviderAccount.name))
            return [self._view(s, a) for a in rows]

    def get(self, principal: Principal, account_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            return self._view(s, _account(s, account_id))

    def delete(self, principal: Principal, account_id: int) -> None:
        principal.require("admin")
        with self.db.session() as s:
            account = _account(s, account_id)
            linked = _linked_pools(s, account.id)
            if linked:
                raise Conflict(
                    f"DNS provider {account.name!r} is linked to {linked} pool(s); "
                    "unlink it on their Managed DNS tabs first"
                )
            audit.record(
                s,
                principal,
                "dns_provider.delete",
                f"dns_provider:{account.id}",
                {"name": account.name, "kind": account.kind},
            )
            s.delete(account)

    def test(self, principal: Principal, account_id: int, zone: str | None = None) -> CheckResult:
        principal.require("operator")
        provider = self.provider(account_id, timeout=INTERACTIVE_TIMEOUT_S)
        try:
            return provider.check(zone)
        finally:
            provider.close()

    def zones(self, principal: Principal, account_id: int) -> list[str]:
        principal.require("operator")
        provider = self.provider(account_id, timeout=INTERACTIVE_TIMEOUT_S)
        try:
            return provider.zones()
        finally:
            provider.close()

    def supports_proxied(self, account_id: int) -> bool:
        with self.db.session() as s:
            return registry.provider_class(_account(s, account_id).kind).supports_proxied

    def provider(self, account_id: int, *, timeout: float | None = None) -> DNSProvider:
        """A ready provider for this account (secrets decrypted here and only here)."""
        with self.db.session() as s:
            account = _account(s, account_id)
            kind, public, token = account.kind, dict(account.settings), account.secrets_encrypted
        config = {**public, **self.box.decrypt_json(token)}
        return registry.build(kind, config, timeout=timeout or self.timeout)

    @staticmethod
    def _view(s: Session, account: DnsProviderAccount) -> dict[str, Any]:
        cls = registry.provider_class(account.kind)
        return {
            "id": account.id,
            "name": account.name,
            "kind": account.kind,
            "title": cls.title,
            "supports_proxied": cls.supports_proxied,
            "settings": dict(account.settings),
            "created_at": account.created_at,
            "created_by": account.created_by,
            "linked_pools": _linked_pools(s, account.id),
        }


def _account(s: Session, account_id: int) -> DnsProviderAccount:
    found = s.get(DnsProviderAccount, account_id)
    if found is None:
        raise NotFound(f"no DNS provider with id {account_id}")
    return found


def _linked_pools(s: Session, account_id: int) -> int:
    return s.scalar(select(func.count()).where(PoolDns.provider_id == account_id)) or 0


def _account_name(value: str) -> str:
    value = (value or "").strip()
    if not _NAME.match(value):
        raise ValidationError(
            f"provider name {value!r} is not valid: 1-64 letters, digits, spaces, '.', '_' "
            "or '-', starting with a letter or digit (e.g. cloudflare-prod)"
        )
    return value
