"""Many enrolled members without hosts: for load, soak and benchmark runs.

Members are spread over pools of `per_pool`, as a fleet of many edge tiers would be, all allowed
to call from 127.0.0.1. `enrol_simulated` makes them through a running server's REST API;
`seed_simulated` writes the same rows into a data directory whose server has not started yet
(it loads them at start): seconds for thousands instead of minutes. Their heartbeats carry
what a real agent sends with stats enrichment on: the `haproxy` block with `info`, a
`show stat` summary and the topology (the shapes of docs/agent.md).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

from support.server import ServerProcess

SOURCE_IP = "127.0.0.1"


@dataclass(frozen=True)
class SimulatedMember:
    pool_id: int
    member_id: int
    hostname: str
    secret: str


def enrol_simulated(
    server: ServerProcess, count: int, per_pool: int = 100, prefix: str = "sim"
) -> list[SimulatedMember]:
    """`count` members in pools of `per_pool`, made with a few parallel API clients."""
    with server.api() as api:
        pool_ids = []
        for index in range(-(-count // per_pool)):
            answer = api.post("/api/pools", json={"name": f"{prefix}-{index:03d}"})
            answer.raise_for_status()
            pool_ids.append(answer.json()["id"])

    def make(index: int) -> SimulatedMember:
        pool_id = pool_ids[index // per_pool]
        hostname = f"{prefix}-{index:05d}"
        with server.api() as api:
            answer = api.post(
                f"/api/pools/{pool_id}/members",
                json={"hostname": hostname, "allowed_ips": [SOURCE_IP]},
            )
            answer.raise_for_status()
            body = answer.json()
        return SimulatedMember(pool_id, body["id"], hostname, body["secret"])

    with ThreadPoolExecutor(4) as workers:
        return list(workers.map(make, range(count)))


def seed_simulated(
    data_dir: Path, count: int, per_pool: int = 100, prefix: str = "sim"
) -> list[SimulatedMember]:
    """The members `enrol_simulated` makes, written in one transaction before the server starts
    (give the same `data_dir` to `start_server`; it loads them at start): a second or two for
    thousands instead of minutes. Rows as PoolService writes them (secret hashes, each pool's
    first member active), without the audit records of an operator's additions."""
    from serverctl.config import Settings
    from serverctl.db.migrate import upgrade
    from serverctl.db.models import Member, Pool
    from serverctl.db.session import Database
    from serverctl.domain import secrets

    db = Database(Settings(data_dir=data_dir))
    try:
        upgrade(db.engine)
        with db.session() as s:
            pools = [
                Pool(name=f"{prefix}-{number:03d}", template="haproxy", haproxy_monitored=True)
                for number in range(-(-count // per_pool))
            ]
            s.add_all(pools)
            s.flush()
            made = []
            for index in range(count):
                secret = secrets.new_enrolment_secret()
                row = Member(
                    pool_id=pools[index // per_pool].id,
                    hostname=f"{prefix}-{index:05d}",
                    allowed_ips=[SOURCE_IP],
                    secret_hash=secrets.hash_secret(secret),
                )
                made.append((row, secret))
            s.add_all(row for row, _ in made)
            s.flush()
            for number, pool in enumerate(pools):
                pool.active_member_id = made[number * per_pool][0].id
            return [SimulatedMember(r.pool_id, r.id, r.hostname, secret) for r, secret in made]
    finally:
        db.dispose()


def haproxy_block(*, active: bool = True, enriched: bool = True) -> dict[str, Any]:
    """What a real agent reports with the admin socket answering (one frontend, two backends)."""
    block: dict[str, Any] = {
        "monitored": True,
        "active": active,
        "source": "pidfile",
        "admin_socket_configured": True,
    }
    if not enriched:
        return block
    now = int(time.time())
    servers = [
        {
            "name": f"app{n}",
            "status": "UP",
            "weight": 1,
            "scur": n,
            "rate": 2,
            "check_status": "L7OK",
            "admin": "ready",
        }
        for n in range(1, 5)
    ]
    block.update(
        admin_socket=True,
        info={
            "version": "2.6.12-1+deb12u4",
            "pid": 1234,
            "uptime_s": 3600,
            "curr_conns": 12,
            "conn_rate": 4,
            "sess_rate": 4,
        },
        stats={
            "at": now,
            "frontends": [
                {
                    "name": "fe_web",
                    "status": "OPEN",
                    "scur": 12,
                    "rate": 4,
                    "stot": 90210,
                    "bin": 8812930,
                    "bout": 90331202,
                },
            ],
            "backends": [
                {
                    "name": name,
                    "status": "UP",
                    "scur": 6,
                    "rate": 2,
                    "stot": 45105,
                    "bin": 4406465,
                    "bout": 45165601,
                    "servers": servers,
                }
                for name in ("be_app", "be_static")
            ],
        },
        topology={
            "listeners": [{"frontend": "fe_web", "bind": "0.0.0.0:443"}],
            "backends": [
                {"name": "be_app", "servers": [s["name"] for s in servers]},
                {"name": "be_static", "servers": [s["name"] for s in servers]},
            ],
        },
    )
    return block


def heartbeat_body(member: SimulatedMember, *, active: bool = True, enriched: bool = True) -> bytes:
    return json.dumps(
        {
            "ip": SOURCE_IP,
            "hostname": member.hostname,
            "version": "0.6.0",
            "haproxy": haproxy_block(active=active, enriched=enriched),
        }
    ).encode()


def send_heartbeat(client: httpx.Client, member: SimulatedMember, body: bytes) -> httpx.Response:
    return client.post(
        "/api/agents/heartbeat",
        content=body,
        headers={"Authorization": f"Bearer {member.secret}", "Content-Type": "application/json"},
    )
