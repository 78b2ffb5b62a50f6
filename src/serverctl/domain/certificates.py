"""The TLS certificate inventory: what each member's agent reports of its certificates, with the
days left and a status, per member and per pool (`GET /api/pools/{id}/certificates`, the
Overview's Certificates card, the member's Status tab, the `member.certificate_expiring` alert).

The agent sends `haproxy.certificates` (docs/agent.md) when the list changes and every 5
minutes; the inventory is each member's latest haproxy block, the live one first and the stored
column otherwise, as the other views read it. Each entry's status, from its `not_after`:

- `expired`: not after now; `critical`: under CRITICAL_DAYS left; `expiring`: under
  RENEWAL_WINDOW_DAYS left (the window in which the renewal orders a new one); `ok` otherwise;
- `error`: the agent could not read the file as a certificate (its `error` says why).

The pool's failover certificate is `/etc/haproxy/certs/<failover FQDN>.pem`, the file the
`letsencrypt` recipe installs on every member. Warnings (the Overview's banner, the alert) are
about the certificates that matter for traffic: those HAProxy loads (`referenced`) and the
failover certificate; another file lying in certs/ is listed, not warned about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from serverctl.db.models import Member, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns import names
from serverctl.domain import lookup
from serverctl.domain.live import LiveState
from serverctl.domain.principal import Principal
from serverctl.errors import ValidationError

CERTS_DIR = "/etc/haproxy/certs"
RENEWAL_WINDOW_DAYS = 30
CRITICAL_DAYS = 7
DAY_S = 86_400
STATUSES = ("ok", "expiring", "critical", "expired", "error")
# What the Overview's banner and the pages call out.
WARN = frozenset({"expiring", "critical", "expired"})


def failover_fqdn(link: PoolDns | None) -> str | None:
    """The pool's failover FQDN (its DNS link's label in its zone), or None when not linked."""
    if link is None or not link.zone:
        return None
    try:
        return names.fqdn(link.label, link.zone)
    except ValidationError:
        return None


def failover_path(fqdn: str | None) -> str | None:
    """Where the `letsencrypt` recipe installs the pool's certificate."""
    return f"{CERTS_DIR}/{fqdn}.pem" if fqdn else None


def days_left(not_after: int, now: datetime) -> int:
    """Whole days left, rounded toward zero (29.9 days is 29), and minus the whole days since
    expiry once expired (0 on its first day: "expired today")."""
    return math.trunc((not_after - now.timestamp()) / DAY_S)


def status_of(not_after: int | None, now: datetime) -> str:
    if not isinstance(not_after, int):
        return "error"
    remaining = not_after - now.timestamp()
    if remaining <= 0:
        return "expired"
    if remaining < CRITICAL_DAYS * DAY_S:
        return "critical"
    if remaining < RENEWAL_WINDOW_DAYS * DAY_S:
        return "expiring"
    return "ok"


def reported(block: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The `certificates` list of a haproxy block (checked at ingest), or None when the agent
    never sent one. Entries not shaped as objects with a path are skipped (a stored block
    from before the check)."""
    entries = (block or {}).get("certificates")
    if not isinstance(entries, list):
        return None
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)]


def entry_view(
    entry: dict[str, Any], now: datetime, failover: str | None, **member: Any
) -> dict[str, Any]:
    """One entry as the API and the pages show it: `member` is member_id and hostname."""
    raw = entry.get("not_after")
    error = entry.get("error")
    readable = error is None and isinstance(raw, int) and not isinstance(raw, bool)
    not_after: int = raw if readable and isinstance(raw, int) else 0
    view: dict[str, Any] = {
        **member,
        "path": entry["path"],
        "subject": entry.get("subject"),
        "sans": list(entry.get("sans") or []),
        "issuer": entry.get("issuer"),
        "not_after": datetime.fromtimestamp(not_after, UTC) if readable else None,
        "days_left": days_left(not_after, now) if readable else None,
        "serial": entry.get("serial"),
        "referenced": bool(entry.get("referenced")),
        "status": status_of(not_after, now) if readable else "error",
        "failover_cert": entry["path"] == failover,
    }
    if error is not None or not readable:
        view["error"] = str(error or "the agent reported no expiry date")
    return view


def watched(view: dict[str, Any]) -> bool:
    """Does this certificate matter for traffic (warned about), or is it only lying there?"""
    return bool(view["referenced"] or view["failover_cert"])


@dataclass(frozen=True)
class MemberCertificates:
    member_id: int
    hostname: str
    # None: the agent never reported certificates (older agent, or a host that never had any).
    items: list[dict[str, Any]] | None
    failover_path: str | None

    @property
    def reporting(self) -> bool:
        return self.items is not None

    @property
    def failover(self) -> dict[str, Any] | None:
        return next((c for c in self.items or [] if c["failover_cert"]), None)

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [c for c in self.items or [] if c["status"] in WARN and watched(c)]


def member_certificates(
    member_id: int,
    hostname: str,
    block: dict[str, Any] | None,
    fqdn: str | None,
    now: datetime,
) -> MemberCertificates:
    path = failover_path(fqdn)
    entries = reported(block)
    items = (
        None
        if entries is None
        else [entry_view(e, now, path, member_id=member_id, hostname=hostname) for e in entries]
    )
    return MemberCertificates(member_id, hostname, items, path)


@dataclass(frozen=True)
class PoolCertificates:
    pool_id: int
    fqdn: str | None
    members: list[MemberCertificates]

    @property
    def items(self) -> list[dict[str, Any]]:
        return [c for m in self.members for c in m.items or []]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [c for m in self.members for c in m.warnings]

    @property
    def worst(self) -> str | None:
        """The most urgent warning status in the pool, or None."""
        found = {c["status"] for c in self.warnings}
        return next((s for s in ("expired", "critical", "expiring") if s in found), None)

    def member(self, member_id: int) -> MemberCertificates | None:
        return next((m for m in self.members if m.member_id == member_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool_id": self.pool_id,
            "fqdn": self.fqdn,
            "failover_path": failover_path(self.fqdn),
            "items": self.items,
            "members": [
                {
                    "member_id": m.member_id,
                    "hostname": m.hostname,
                    "reporting": m.reporting,
                    "certificates": len(m.items or []),
                    "failover_days_left": m.failover["days_left"] if m.failover else None,
                }
                for m in self.members
            ],
        }


def from_member_views(
    pool_id: int,
    members: Sequence[dict[str, Any]],
    dns: dict[str, Any],
    now: datetime | None = None,
) -> PoolCertificates:
    """For the pages: from PoolService member views (their `heartbeat.haproxy` is already the
    live block, else the stored one) and PoolDnsService.view."""
    now = now or utcnow()
    fqdn = dns.get("fqdn") if dns.get("linked") else None
    return PoolCertificates(
        pool_id,
        fqdn,
        [
            member_certificates(
                m["id"], m["hostname"], (m.get("heartbeat") or {}).get("haproxy"), fqdn, now
            )
            for m in members
        ],
    )


def pool_certificates(
    db: Database,
    live: LiveState,
    principal: Principal,
    pool_id: int,
    now: datetime | None = None,
) -> PoolCertificates:
    """For the API: any operator role; NotFound (404) for an unknown pool."""
    principal.require("viewer")
    now = now or utcnow()
    with db.session() as s:
        pool = lookup.pool(s, pool_id)
        fqdn = failover_fqdn(s.get(PoolDns, pool.id))
        rows = s.execute(
            select(Member.id, Member.hostname, Member.haproxy)
            .where(Member.pool_id == pool.id)
            .order_by(Member.id)
        )
        members = []
        for row in rows:
            current = live.members.get(row.id)
            block = current.haproxy if current is not None else row.haproxy
            members.append(member_certificates(row.id, row.hostname, block, fqdn, now))
    return PoolCertificates(pool.id, fqdn, members)
