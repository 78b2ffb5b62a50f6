"""Shared by the order service's tests (conftest fixtures import it too)."""

from __future__ import annotations

from typing import Any

AGENT_IP = "127.0.0.2"
FQDN = "lb.demo.example"


def make_pool(env: Any, name: str = "edge") -> tuple[int, int, str]:
    """A pool with one member `edge-1` (agent calls from AGENT_IP): (pool id, member id,
    the member's enrolment secret)."""
    pool = env.client.post("/api/pools", json={"name": name}).json()
    member = env.client.post(
        f"/api/pools/{pool['id']}/members", json={"hostname": "edge-1", "allowed_ips": [AGENT_IP]}
    ).json()
    return pool["id"], member["id"], member["secret"]
