"""A pool's managed DNS: linking a provider account, the record's settings, and what the
provider says the record is now (Managed DNS tab, `PUT/GET /api/pools/{id}/dns`), plus dynamic
DNS sync of the active member's address."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from serverctl.db.models import DnsProviderAccount, Member, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns import names, propagation, registry
from serverctl.dns.base import check_ttl
from serverctl.domain import audit, dns_updates, lookup, validation
from serverctl.domain.dns_accounts import INTERACTIVE_TIMEOUT_S, DnsAccounts
from serverctl.domain.dns_updates import DnsPublisher, update_view
from serverctl.domain.live import LiveState
from serverctl.domain.principal import SYSTEM, Principal
from serverctl.errors import NotFound, ServerCTLError, ValidationError

log = logging.getLogger(__name__)
LINK_DNS_WAIT_S = 3.0


class PoolDnsService:
    def __init__(
        self, db: Database, live: LiveState, accounts: DnsAccounts, publisher: DnsPublisher
    ) -> None:
        self.db = db
        self.live = live
        self.accounts = accounts
        self.publisher = publisher

    def link(
        self,
        principal: Principal,
        pool_id: int,
        *,
        provider_id: int,
        zone: str,
        label: str,
        ttl: int,
        proxied: bool = False,
        ddns: bool = False,
        check_servers: list[str] | None = None,
    ) -> dict[str, Any]:
        """Link (or re-link) the pool's record and publish it for the active member at once."""
        principal.require("operator")
        zone = names.normalise_zone(zone)
        label = names.normalise_label(label)
        names.fqdn(label, zone)
        check_ttl(ttl)
        servers = _check_servers(check_servers or [])
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            account = s.get(DnsProviderAccount, provider_id)
            if account is None:
                raise ValidationError(f"no DNS provider with id {provider_id}")
            if proxied and not registry.provider_class(account.kind).supports_proxied:
                raise ValidationError(
                    f"{account.name} ({account.kind}) cannot proxy records: set proxied false"
                )
            link = s.get(PoolDns, pool.id) or PoolDns(pool_id=pool.id)
            before = _settings(link) if link.provider_id else None
            link.provider_id, link.zone, link.label, link.ttl = account.id, zone, label, ttl
            link.proxied, link.ddns, link.check_servers = proxied, ddns, servers
            link.linked_at = utcnow()
            s.add(link)
            s.flush()
            audit.record(
                s,
                principal,
                "pool.dns.link",
                f"pool:{pool.id}",
                {"before": before, "after": _settings(link), "provider": account.name},
            )
            update_id = self._publish_active(s, pool, "DNS linked")
            self.live.set_ddns(pool.id, ddns)
        self.publisher.kick()
        if update_id is not None:
            self.publisher.wait(update_id, LINK_DNS_WAIT_S)
        return self.view(principal, pool_id, read_provider=False)

    def unlink(self, principal: Principal, pool_id: int) -> None:
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            link = s.get(PoolDns, pool.id)
            if link is None:
                raise NotFound(f"pool {pool.name!r} has no DNS linked")
            audit.record(s, principal, "pool.dns.unlink", f"pool:{pool.id}", _settings(link))
            s.delete(link)
        self.live.set_ddns(pool_id, False)

    def view(
        self, principal: Principal, pool_id: int, read_provider: bool = True
    ) -> dict[str, Any]:
        """The link, the intended record, and (when asked) the record as the provider has it."""
        principal.require("viewer")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            link = s.get(PoolDns, pool.id)
            active = self._active_ip(s, pool)
            latest = dns_updates.latest(s, pool.id)
            if link is None:
                return {"linked": False, "active_ip": active, "update": None}
            account = s.get(DnsProviderAccount, link.provider_id)
            result: dict[str, Any] = {
                "linked": True,
                **_settings(link),
                "fqdn": names.fqdn(link.label, link.zone),
                "provider": {"id": account.id, "name": account.name, "kind": account.kind}
                if account
                else None,
                "supports_proxied": registry.provider_class(account.kind).supports_proxied
                if account
                else False,
                "active_ip": active,
                "update": update_view(latest) if latest else None,
            }
        if read_provider:
            result["current"] = self._read_current(link, active)
        return result

    def _read_current(self, link: PoolDns, active_ip: str | None) -> dict[str, Any]:
        """What the provider answers now, and whether it matches the active member."""
        try:
            provider = self.accounts.provider(link.provider_id, timeout=INTERACTIVE_TIMEOUT_S)
        except ServerCTLError as exc:
            return {"ok": False, "error": exc.message, "target": None, "matches_active": False}
        try:
            record = provider.get_a(link.zone, names.fqdn(link.label, link.zone))
        except ServerCTLError as exc:
            return {"ok": False, "error": exc.message, "target": None, "matches_active": False}
        finally:
            provider.close()
        targets = list(record.values) if record else []
        return {
            "ok": True,
            "error": None,
            "target": targets[0] if len(targets) == 1 else (targets or None),
            "ttl": record.ttl if record else None,
            "proxied": record.proxied if record else None,
            "matches_active": bool(active_ip) and targets == [active_ip],
        }

    def test(self, principal: Principal, pool_id: int) -> dict[str, Any]:
        """The DNS connectivity test of the pool's link."""
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            link = s.get(PoolDns, pool.id)
            if link is None:
                raise NotFound(f"pool {pool.name!r} has no DNS linked")
            provider_id, zone = link.provider_id, link.zone
        result = self.accounts.test(principal, provider_id, zone)
        return {"ok": result.ok, "detail": result.detail}

    # -- dynamic DNS ----------------------------------------------------------------------------

    def address_changed(self, member_id: int, address: str) -> int | None:
        """DDNS: the active member of a DDNS pool reported a new address; move the record."""
        with self.db.session() as s:
            member = s.get(Member, member_id)
            if member is None:
                return None
            pool = member.pool
            link = s.get(PoolDns, pool.id)
            if link is None or not link.ddns or pool.active_member_id != member.id:
                return None
            latest = dns_updates.latest(s, pool.id)
            if latest is not None and latest.address == address:
                return None  # only on a real change
            if ":" in address:
                return None
            row = dns_updates.enqueue(s, pool.id, address, f"dynamic DNS: {member.hostname}")
            audit.record(
                s,
                SYSTEM,
                "pool.dns.ddns",
                f"pool:{pool.id}",
                {
                    "member": member.hostname,
                    "address": address,
                    "previous": latest.address if latest else None,
                },
            )
            update_id = row.id
        self.publisher.kick()
        return update_id

    def follow_address(self, member_id: int, old_ip: str | None, new_ip: str) -> list[str]:
        """DDNS pools: the member's allowed IPs follow its new address (audited)."""
        with self.db.session() as s:
            member = s.get(Member, member_id)
            if member is None:
                return []
            allowed = [a for a in member.allowed_ips if a != old_ip]
            if new_ip not in allowed:
                allowed.append(new_ip)
            allowed = validation.allowed_ips(allowed[-64:])
            audit.record(
                s,
                SYSTEM,
                "member.allowed_ips.follow",
                f"member:{member.id}",
                {
                    "hostname": member.hostname,
                    "before": list(member.allowed_ips),
                    "after": allowed,
                    "reason": "dynamic DNS sync is on for the pool",
                },
            )
            member.allowed_ips = allowed
            return allowed

    # -- helpers --------------------------------------------------------------------------------

    def _publish_active(self, s: Session, pool: Pool, reason: str) -> int | None:
        address = self._active_ip(s, pool)
        if address is None:
            log.info("pool %s: DNS linked; no active member address to publish yet", pool.name)
            return None
        return dns_updates.enqueue(s, pool.id, address, reason).id

    def _active_ip(self, s: Session, pool: Pool) -> str | None:
        if pool.active_member_id is None:
            return None
        member = s.get(Member, pool.active_member_id)
        address = self.live.ip_of(pool.active_member_id, member.last_ip if member else None)
        return address if address and ":" not in address else None


def _settings(link: PoolDns) -> dict[str, Any]:
    return {
        "provider_id": link.provider_id,
        "zone": link.zone,
        "label": link.label,
        "ttl": link.ttl,
        "proxied": link.proxied,
        "ddns": link.ddns,
        "check_servers": list(link.check_servers or []),
    }


def _check_servers(values: list[str]) -> list[str]:
    if len(values) > 8:
        raise ValidationError("check_servers takes at most 8 servers")
    result = []
    for value in values:
        try:
            propagation.parse_server(value)
        except ValueError as exc:
            raise ValidationError(f"check_servers entry is not host or host:port: {exc}") from None
        result.append(value.strip())
    return result
