"""Pools and their members: create, change, delete, enrolment secrets, and views of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serverctl.db.models import AgentRejection, Member, Pool, PoolDns, RevokedSecret
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, health, lookup, secrets, validation
from serverctl.domain.live import LiveState
from serverctl.domain.principal import Principal
from serverctl.errors import Conflict, NotFound

DEFAULT_FAILOVER_DELAY_S = 30
# Agents send stats every few seconds; older than this, the Status tab says they are stale.
STATS_STALE_S = 30


@dataclass(frozen=True)
class NewMember:
    """A member just created or re-keyed: the only time its secret exists in clear."""

    member: dict[str, Any]
    secret: str


class PoolService:
    def __init__(self, db: Database, live: LiveState) -> None:
        self.db = db
        self.live = live

    # -- pools ----------------------------------------------------------------------------------

    def create_pool(self, principal: Principal, name: str, template: str) -> dict[str, Any]:
        principal.require("operator")
        name = validation.pool_name(name)
        template = validation.pool_template(template)
        try:
            with self.db.session() as s:
                if s.scalar(select(Pool.id).where(Pool.name == name)) is not None:
                    raise Conflict(f"a pool named {name!r} already exists")
                pool = Pool(
                    name=name,
                    template=template,
                    failover_delay_s=DEFAULT_FAILOVER_DELAY_S,
                    haproxy_monitored=template == "haproxy",
                )
                s.add(pool)
                s.flush()
                audit.record(
                    s,
                    principal,
                    "pool.create",
                    f"pool:{pool.id}",
                    {"name": name, "template": template},
                )
                return self._pool_view(s, pool)
        except IntegrityError:
            raise Conflict(f"a pool named {name!r} already exists") from None

    def list_pools(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("viewer")
        with self.db.session() as s:
            return [self._pool_view(s, p) for p in s.scalars(select(Pool).order_by(Pool.name))]

    def get_pool(self, principal: Principal, pool_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            return self._pool_view(s, lookup.pool(s, pool_id))

    def delete_pool(self, principal: Principal, pool_id: int) -> None:
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            member_ids = [m.id for m in pool.members]
            audit.record(s, principal, "pool.delete", f"pool:{pool.id}", {"name": pool.name})
            s.delete(pool)
        for member_id in member_ids:
            self.live.forget(member_id)

    def set_failover(
        self,
        principal: Principal,
        pool_id: int,
        *,
        automatic: bool | None = None,
        delay_s: int | None = None,
        haproxy_monitored: bool | None = None,
        cooldown_s: int | None = None,
    ) -> dict[str, Any]:
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            before = self._failover_settings(pool)
            if automatic is not None:
                pool.failover_automatic = automatic
            if delay_s is not None:
                pool.failover_delay_s = validation.failover_delay(delay_s)
            if haproxy_monitored is not None:
                pool.haproxy_monitored = haproxy_monitored
            if cooldown_s is not None:
                pool.failover_cooldown_s = validation.failover_cooldown(cooldown_s)
            after = self._failover_settings(pool)
            if after != before:
                audit.record(
                    s,
                    principal,
                    "pool.failover.update",
                    f"pool:{pool.id}",
                    {"before": before, "after": after},
                )
            return self._failover_view(pool)

    # -- members --------------------------------------------------------------------------------

    def add_member(
        self, principal: Principal, pool_id: int, hostname: str, allowed_ips: list[str]
    ) -> NewMember:
        principal.require("operator")
        hostname = validation.hostname(hostname)
        allowed = validation.allowed_ips(allowed_ips)
        secret = secrets.new_enrolment_secret()
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            taken = select(Member.id).where(Member.pool_id == pool.id, Member.hostname == hostname)
            # An EXISTS query, not pool.members: loading every member made each add O(pool size).
            if s.scalar(select(taken.exists())):
                raise Conflict(f"pool {pool.name!r} already has a member named {hostname!r}")
            member = Member(
                pool=pool,
                hostname=hostname,
                allowed_ips=allowed,
                secret_hash=secrets.hash_secret(secret),
            )
            s.add(member)
            s.flush()
            if pool.active_member_id is None:
                # The first member of a pool becomes its active member.
                pool.active_member_id = member.id
            audit.record(
                s,
                principal,
                "member.create",
                f"member:{member.id}",
                {"pool": pool.name, "hostname": hostname, "allowed_ips": allowed},
            )
            self._register(member)
            return NewMember(self._member_view(s, pool, member), secret)

    def list_members(self, principal: Principal, pool_id: int) -> list[dict[str, Any]]:
        principal.require("viewer")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            members = list(pool.members)
            stored = _last_rejections(s, [m.id for m in members])
            now = utcnow()
            return [self._member_view(s, pool, m, now=now, stored=stored) for m in members]

    def get_member(self, principal: Principal, pool_id: int, member_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            return self._member_view(s, pool, lookup.member(s, pool, member_id))

    def rejections(
        self, principal: Principal, pool_id: int, member_id: int, limit: int = 50
    ) -> list[dict[str, Any]]:
        principal.require("viewer")
        with self.db.session() as s:
            lookup.pool_member(s, pool_id, member_id)
            rows = s.scalars(
                select(AgentRejection)
                .where(AgentRejection.member_id == member_id)
                .order_by(AgentRejection.id.desc())
                .limit(limit)
            )
            return [
                {
                    "at": r.at,
                    "status": r.status,
                    "reason": r.reason,
                    "source_ip": r.source_ip,
                    "count": r.count,
                }
                for r in rows
            ]

    def member_status(self, principal: Principal, pool_id: int, member_id: int) -> dict[str, Any]:
        """What the agent last reported of HAProxy's traffic: live only, never stored."""
        principal.require("viewer")
        with self.db.session() as s:
            member = lookup.pool_member(s, pool_id, member_id)[1]
            block = member.haproxy or {}
        live = self.live.members.get(member_id)
        if live is not None:
            block = live.haproxy or {}
        stats_at = live.stats_at if live else None
        age = (utcnow() - stats_at).total_seconds() if stats_at else None
        return {
            "stats": live.stats if live else None,
            "info": live.info if live else None,
            "stats_at": stats_at,
            "stats_age_s": round(age, 1) if age is not None else None,
            "stale": age is None or age > STATS_STALE_S,
            "topology": block.get("topology"),
            "admin_socket": block.get("admin_socket"),
            "admin_socket_configured": block.get("admin_socket_configured"),
        }

    def rotate_secret(self, principal: Principal, pool_id: int, member_id: int) -> NewMember:
        principal.require("operator")
        secret = secrets.new_enrolment_secret()
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            member = lookup.member(s, pool, member_id)
            old_hash = member.secret_hash
            s.add(RevokedSecret(secret_hash=old_hash, member_id=member.id))
            member.secret_hash = secrets.hash_secret(secret)
            audit.record(
                s,
                principal,
                "member.rotate_secret",
                f"member:{member.id}",
                {"pool": pool.name, "hostname": member.hostname},
            )
            self.live.revoke(old_hash, member.id)
            self._register(member)
            return NewMember(self._member_view(s, pool, member), secret)

    def delete_member(self, principal: Principal, pool_id: int, member_id: int) -> None:
        principal.require("operator")
        with self.db.session() as s:
            pool = lookup.pool(s, pool_id)
            member = lookup.member(s, pool, member_id)
            if pool.active_member_id == member.id:
                others = [m.id for m in pool.members if m.id != member.id]
                if others and s.get(PoolDns, pool.id) is not None:
                    # The A record points at this member: moving it is a cutover, which the
                    # operator chooses (Make active), not a side effect of a delete.
                    raise Conflict(
                        f"{member.hostname} is the active member and the pool's A record "
                        "points at it: make another member active first, then delete it"
                    )
                # The oldest remaining member becomes active (none when it was the last one).
                pool.active_member_id = others[0] if others else None
            audit.record(
                s,
                principal,
                "member.delete",
                f"member:{member.id}",
                {
                    "pool": pool.name,
                    "hostname": member.hostname,
                    "new_active_member_id": pool.active_member_id,
                },
            )
            s.delete(member)
        self.live.forget(member_id)

    def record_enrolment(self, member_id: int, ip: str, version: str) -> dict[str, Any]:
        """An agent proved its secret with `--enrol`: note it, and tell it where it belongs."""
        with self.db.session() as s:
            member = s.get(Member, member_id)
            if member is None:
                raise NotFound(f"no member with id {member_id}")
            principal = Principal("agent", member.hostname, "viewer", ip)
            audit.record(
                s,
                principal,
                "member.enrol",
                f"member:{member.id}",
                {"pool": member.pool.name, "ip": ip, "version": version},
            )
            return {
                "member_id": member.id,
                "pool_id": member.pool_id,
                "pool_name": member.pool.name,
                "hostname": member.hostname,
            }

    # -- start-up -------------------------------------------------------------------------------

    def load_live_state(self) -> int:
        """Fill the live state from the database (at start); returns the member count."""
        with self.db.session() as s:
            members = list(s.scalars(select(Member)))
            for member in members:
                self._register(member)
            for revoked in s.scalars(select(RevokedSecret)):
                self.live.revoked[revoked.secret_hash] = revoked.member_id
            for pool_id in s.scalars(select(PoolDns.pool_id).where(PoolDns.ddns.is_(True))):
                self.live.set_ddns(pool_id, True)
            return len(members)

    def prune_rejections(self, keep: int = 200) -> None:
        """Keep each member's rejection log bounded."""
        with self.db.session() as s:
            for member_id, count in s.execute(
                select(AgentRejection.member_id, func.count()).group_by(AgentRejection.member_id)
            ):
                if count > keep:
                    cutoff = s.scalar(
                        select(AgentRejection.id)
                        .where(AgentRejection.member_id == member_id)
                        .order_by(AgentRejection.id.desc())
                        .offset(keep)
                        .limit(1)
                    )
                    s.execute(
                        delete(AgentRejection).where(
                            AgentRejection.member_id == member_id, AgentRejection.id <= cutoff
                        )
                    )

    # -- helpers --------------------------------------------------------------------------------

    def _register(self, member: Member) -> None:
        self.live.register(
            member_id=member.id,
            pool_id=member.pool_id,
            hostname=member.hostname,
            allowed_ips=member.allowed_ips,
            secret_hash=member.secret_hash,
            last_seen=member.last_seen_at,
            ip=member.last_ip,
            version=member.agent_version,
            haproxy=member.haproxy,
            enrolled_at=member.enrolled_at,
        )

    @staticmethod
    def _failover_view(pool: Pool) -> dict[str, Any]:
        return {
            **PoolService._failover_settings(pool),
            "last_auto_failover_at": pool.last_auto_failover_at,
        }

    @staticmethod
    def _failover_settings(pool: Pool) -> dict[str, Any]:
        """What an operator sets, as the audit log records it: JSON values only (the last
        promotion's time, a datetime, is not a setting and would not serialise)."""
        return {
            "automatic": pool.failover_automatic,
            "delay_s": pool.failover_delay_s,
            "haproxy_monitored": pool.haproxy_monitored,
            "cooldown_s": pool.failover_cooldown_s,
        }

    def _pool_view(self, s: Session, pool: Pool) -> dict[str, Any]:
        now = utcnow()
        # Health only: the full member view costs a query per member (its last refusal).
        states = [self._health(pool, m, now).state for m in pool.members]
        return {
            "id": pool.id,
            "name": pool.name,
            "template": pool.template,
            "created_at": pool.created_at,
            "active_member_id": pool.active_member_id,
            "failover": self._failover_view(pool),
            "member_count": len(states),
            "healthy_count": states.count("healthy"),
        }

    def _health(self, pool: Pool, member: Member, now: datetime) -> health.Health:
        return health.of_member(pool, member, self.live.members.get(member.id), now)

    def _member_view(
        self,
        s: Session,
        pool: Pool,
        member: Member,
        now: datetime | None = None,
        stored: dict[int, AgentRejection] | None = None,
    ) -> dict[str, Any]:
        """`stored`: the members' last stored refusals, read beforehand for a whole list."""
        now = now or utcnow()
        live = self.live.members.get(member.id)
        last_seen = live.last_seen if live else member.last_seen_at
        ip = live.ip if live else member.last_ip
        version = live.version if live else member.agent_version
        haproxy = live.haproxy if live else member.haproxy
        enrolled_at = live.enrolled_at if live else member.enrolled_at
        state = self._health(pool, member, now)
        rejection = live.last_rejection if live else None
        if rejection is None:
            row = (
                stored.get(member.id)
                if stored is not None
                else _last_rejections(s, [member.id]).get(member.id)
            )
            rejection_view = (
                {
                    "at": row.at,
                    "status": row.status,
                    "reason": row.reason,
                    "source_ip": row.source_ip,
                }
                if row
                else None
            )
        else:
            rejection_view = {
                "at": rejection.at,
                "status": rejection.status,
                "reason": rejection.reason,
                "source_ip": rejection.source_ip,
            }
        return {
            "id": member.id,
            "pool_id": pool.id,
            "hostname": member.hostname,
            "allowed_ips": list(member.allowed_ips),
            "role": "active" if pool.active_member_id == member.id else "standby",
            "created_at": member.created_at,
            "enrolled_at": enrolled_at,
            "heartbeat": (
                {"at": last_seen, "ip": ip, "version": version, "haproxy": haproxy}
                if last_seen is not None
                else None
            ),
            "health": {
                "state": state.state,
                "heartbeat_age_s": (
                    round(state.heartbeat_age_s, 1) if state.heartbeat_age_s is not None else None
                ),
                "reason": state.reason,
            },
            "last_rejection": rejection_view,
        }


def _last_rejections(s: Session, member_ids: list[int]) -> dict[int, AgentRejection]:
    """Each member's latest stored refusal, in one query for the whole list."""
    if not member_ids:
        return {}
    latest = (
        select(func.max(AgentRejection.id))
        .where(AgentRejection.member_id.in_(member_ids))
        .group_by(AgentRejection.member_id)
    )
    rows = s.scalars(select(AgentRejection).where(AgentRejection.id.in_(latest)))
    return {row.member_id: row for row in rows}
