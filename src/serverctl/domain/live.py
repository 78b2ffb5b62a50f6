"""The live state of every member, held in memory by the one process that takes heartbeats.

A heartbeat touches only this: the token lookup is a dict keyed by the secret's hash, and the
database sees the heartbeat later, in batches (`serverctl.loops.flush`), and only for what
changed. Operator actions that add, rotate or remove secrets update it at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_address
from typing import Any

from serverctl.domain.validation import IPNetwork, parse_networks

RETAINED_KEYS = ("topology", "admin_socket", "backup_files")


@dataclass
class Rejection:
    at: datetime
    status: int
    reason: str
    source_ip: str


@dataclass
class MemberLive:
    member_id: int
    pool_id: int
    hostname: str
    allowed: tuple[IPNetwork, ...]
    # The key of this member in LiveState.by_secret.
    secret_hash: str = ""
    last_seen: datetime | None = None
    ip: str | None = None
    version: str | None = None
    haproxy: dict[str, Any] | None = None
    enrolled_at: datetime | None = None
    last_rejection: Rejection | None = None
    # Set when this member may have queued work: only then does a heartbeat ask the database.
    jobs_hint: bool = False
    # `show stat` / `show info` summaries: live only, never written to the database.
    stats: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    stats_at: datetime | None = None
    # What the flusher still has to write.
    changed: bool = False
    seen: bool = False

    def allows(self, address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed)


@dataclass(frozen=True)
class HeartbeatChange:
    """What a heartbeat changed that others must react to at once."""

    # HAProxy's state flipped (or the agent lost/regained sight of it): evaluate failover now.
    health: bool = False
    # The reported address changed: dynamic DNS may move the record.
    ip: bool = False


NO_CHANGE = HeartbeatChange()


@dataclass
class PendingRejection:
    member_id: int
    rejection: Rejection


@dataclass
class LiveState:
    members: dict[int, MemberLive] = field(default_factory=dict)
    by_secret: dict[str, int] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)
    rejections: list[PendingRejection] = field(default_factory=list)
    # Pools with dynamic DNS sync on: their members' allowed IPs follow their address.
    ddns_pools: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ip_of(self, member_id: int, stored: str | None) -> str | None:
        """The member's reported address: the live one, else the one stored at last flush."""
        live = self.members.get(member_id)
        return (live.ip if live else None) or stored

    def set_ddns(self, pool_id: int, on: bool) -> None:
        with self.lock:
            if on:
                self.ddns_pools.add(pool_id)
            else:
                self.ddns_pools.discard(pool_id)

    def follow_address(self, member: MemberLive, address: str) -> None:
        """A DDNS member called from a new address: let that address in from now on."""
        with self.lock:
            # The entry for the old address goes; networks and other addresses stay.
            kept = [
                n
                for n in member.allowed
                if not (n.num_addresses == 1 and str(n.network_address) == member.ip)
            ]
            member.allowed = (*kept, *parse_networks([address]))

    # -- registration (operator actions, start-up) --------------------------------------------

    def register(
        self,
        *,
        member_id: int,
        pool_id: int,
        hostname: str,
        allowed_ips: list[str],
        secret_hash: str,
        last_seen: datetime | None = None,
        ip: str | None = None,
        version: str | None = None,
        haproxy: dict[str, Any] | None = None,
        enrolled_at: datetime | None = None,
    ) -> None:
        with self.lock:
            current = self.members.get(member_id)
            if current is None:
                current = MemberLive(
                    member_id=member_id,
                    pool_id=pool_id,
                    hostname=hostname,
                    allowed=parse_networks(allowed_ips),
                    last_seen=last_seen,
                    ip=ip,
                    version=version,
                    haproxy=haproxy,
                    enrolled_at=enrolled_at,
                )
                self.members[member_id] = current
            else:
                current.hostname = hostname
                current.allowed = parse_networks(allowed_ips)
                # A direct removal: rebuilding the index per member made start-up quadratic.
                self.by_secret.pop(current.secret_hash, None)
            current.secret_hash = secret_hash
            self.by_secret[secret_hash] = member_id

    def revoke(self, secret_hash: str, member_id: int) -> None:
        with self.lock:
            self.by_secret.pop(secret_hash, None)
            self.revoked[secret_hash] = member_id

    def forget(self, member_id: int) -> None:
        with self.lock:
            gone = self.members.pop(member_id, None)
            if gone is not None:
                self.by_secret.pop(gone.secret_hash, None)
            self.revoked = {h: m for h, m in self.revoked.items() if m != member_id}

    # -- the heartbeat path ---------------------------------------------------------------------

    def record_heartbeat(
        self,
        member: MemberLive,
        *,
        now: datetime,
        ip: str,
        version: str,
        haproxy: dict[str, Any],
    ) -> HeartbeatChange:
        # The agent sends its stats summaries every few seconds and its topology when it
        # changes; between those, heartbeats leave them out and the last ones stand.
        stats = haproxy.pop("stats", None)
        info = haproxy.pop("info", None)
        if isinstance(stats, dict):
            member.stats, member.stats_at = stats, now
        if isinstance(info, dict):
            member.info = info
        previous = member.haproxy or {}
        for key in RETAINED_KEYS:
            if key not in haproxy and key in previous:
                haproxy[key] = previous[key]
        change = NO_CHANGE
        if member.ip != ip or member.version != version or member.haproxy != haproxy:
            health_flip = previous.get("active") != haproxy.get("active") or previous.get(
                "monitored"
            ) != haproxy.get("monitored")
            change = HeartbeatChange(health=health_flip, ip=member.ip != ip)
            member.ip, member.version, member.haproxy = ip, version, haproxy
            member.changed = True
        if member.enrolled_at is None:
            member.enrolled_at = now
            member.changed = True
        member.last_seen = now
        member.seen = True
        return change

    def record_rejection(self, member_id: int, rejection: Rejection) -> None:
        member = self.members.get(member_id)
        if member is None:
            return
        member.last_rejection = rejection
        with self.lock:
            # Bounded: a flood of refused requests must not grow memory without limit.
            if len(self.rejections) < 10_000:
                self.rejections.append(PendingRejection(member_id, rejection))

    def take_rejections(self) -> list[PendingRejection]:
        with self.lock:
            taken, self.rejections = self.rejections, []
        return taken
