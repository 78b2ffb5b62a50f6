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

import msgspec

from serverctl.domain.validation import IPNetwork, parse_networks

RETAINED_KEYS = ("topology", "admin_socket", "backup_files", "certificates")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def _decoded(raw: bytes | None) -> dict[str, Any] | None:
    return _decoder.decode(raw) if raw is not None else None


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
    # `show stat` / `show info` summaries: live only, never written to the database. Kept as
    # JSON (bytes), read back by `stats` and `info`: as objects, each heartbeat left a few dozen
    # containers alive for a second, the garbage collector's worst case (every young collection
    # promoted them, and full collections of hundreds of thousands of objects stalled the event
    # loop for a tenth of a second at a time). Bytes are not tracked by the collector at all.
    stats_json: bytes | None = None
    info_json: bytes | None = None
    stats_at: datetime | None = None
    # What the flusher still has to write.
    changed: bool = False
    seen: bool = False
    # The last address `allows` let in, with the very `allowed` tuple it was checked against:
    # an agent calls from one address, so most checks are one comparison. Any new `allowed`
    # (re-registration, DDNS follow) is a new tuple, which makes the memo miss.
    _let_in: tuple[tuple[IPNetwork, ...], str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def stats(self) -> dict[str, Any] | None:
        return _decoded(self.stats_json)

    @property
    def info(self) -> dict[str, Any] | None:
        return _decoded(self.info_json)

    def allows(self, address: str) -> bool:
        memo = self._let_in
        if memo is not None and memo[0] is self.allowed and memo[1] == address:
            return True
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        allowed = self.allowed
        if any(ip in network for network in allowed):
            self._let_in = (allowed, address)
            return True
        return False


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
            member.stats_json, member.stats_at = _encoder.encode(stats), now
        if isinstance(info, dict):
            member.info_json = _encoder.encode(info)
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
