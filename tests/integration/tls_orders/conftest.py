"""Fixtures for the certificate order service: the in-process app (its order worker running),
a real PowerDNS (zone demo.example) and a real Pebble that checks DNS-01 on it, a pool linked to
that PowerDNS with the failover label `lb`, and one member whose agent calls come from
127.0.0.2 with its enrolment secret."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from integration.tls_orders.tls_orders_kit import AGENT_IP, FQDN, make_pool
from serverctl.db.models import TlsOrder
from support.powerdns import PowerDNS


@dataclass
class TlsWorld:
    env: Any
    pool_id: int
    member_id: int
    secret: str
    provider_id: int
    agent: TestClient

    @property
    def api(self) -> TestClient:
        return self.env.client

    def claim(self) -> list[dict[str, Any]]:
        """What the member's next heartbeat would be handed (the job becomes running)."""
        jobs: list[dict[str, Any]] = self.env.state.jobs.claim(self.member_id)
        return jobs

    def post(self, path: str, body: dict[str, Any], secret: str | None = None) -> Any:
        return self.agent.post(
            path, json=body, headers={"Authorization": f"Bearer {secret or self.secret}"}
        )

    def order(self, job_id: int, csr: str, hostname: str = "edge-1") -> Any:
        return self.post(
            "/api/agents/tls/order", {"hostname": hostname, "job_id": job_id, "csr": csr}
        )

    def status(self, job_id: int) -> Any:
        return self.post("/api/agents/tls/order/status", {"hostname": "edge-1", "job_id": job_id})

    def add_order(
        self, s: Any, job_id: int, state: str, csr_sha256: str = "-", **fields: Any
    ) -> None:
        """A tls_orders row for this member's failover name, as the order service writes one."""
        s.add(
            TlsOrder(
                pool_id=self.pool_id,
                member_id=self.member_id,
                job_id=job_id,
                names=[FQDN],
                names_key=FQDN,
                csr="-",
                csr_sha256=csr_sha256,
                state=state,
                **fields,
            )
        )

    def queue(self, names: list[str] | None = None, job_type: str = "tls.acme_issue") -> int:
        names = names or [FQDN]
        answer = self.api.post(
            f"/api/pools/{self.pool_id}/members/{self.member_id}/jobs",
            json={"type": job_type, "params": {"fqdn": names[0], "names": names}},
        )
        assert answer.status_code == 202, answer.text
        job_id: int = answer.json()["job_id"]
        return job_id


@pytest.fixture
def world(acme_env, pdns: PowerDNS) -> Iterator[TlsWorld]:
    pool_id, member_id, secret = make_pool(acme_env)
    linked = acme_env.client.put(
        f"/api/pools/{pool_id}/dns",
        json={"provider_id": acme_env.provider_id, "zone": pdns.zone, "label": "lb", "ttl": 60},
    )
    assert linked.status_code == 200, linked.text
    agent = TestClient(acme_env.client.app, client=(AGENT_IP, 50000))
    yield TlsWorld(acme_env, pool_id, member_id, secret, acme_env.provider_id, agent)
    agent.close()
