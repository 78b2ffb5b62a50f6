"""A real `serverctl serve` on a real PostgreSQL server: enrolment and heartbeats, a job handed
out and completed, a manual cutover moving a real PowerDNS answer, and everything still there
after the control plane restarts (state in PostgreSQL, nothing in a SQLite file)."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx

from support.postgres import Postgres
from support.powerdns import PowerDNS
from support.server import start_server, stop_process
from support.standin_agent import StandInAgent
from support.util import wait_until

ADDRESSES = {"edge-1": "198.51.100.11", "edge-2": "198.51.100.12"}


def _health(api: httpx.Client, pool_id: int, member_id: int) -> str:
    view = api.get(f"/api/pools/{pool_id}/members/{member_id}").json()
    return str(view["health"]["state"])


def test_the_control_plane_runs_and_restarts_on_postgresql(
    tmp_path: Path, postgres_server: Postgres, pdns: PowerDNS
) -> None:
    env = {"SERVERCTL_DATABASE_URL": postgres_server.create_database()}
    first = start_server(tmp_path / "first", env=env)
    data_dir = first.data_dir
    api = first.api()
    agent_http = httpx.Client(base_url=first.url)
    try:
        pool = api.post("/api/pools", json={"name": "pg-edge"}).json()
        base = f"/api/pools/{pool['id']}"
        agents = {}
        for hostname, ip in ADDRESSES.items():
            member = api.post(
                f"{base}/members", json={"hostname": hostname, "allowed_ips": ["127.0.0.1"]}
            ).json()
            agent = StandInAgent(agent_http, member["secret"], hostname, ip)
            agent.member_id = member["id"]
            agent.heartbeat()
            agents[hostname] = agent
        edge_1, edge_2 = agents.values()
        for agent in (edge_1, edge_2):
            wait_until(
                lambda agent=agent: _health(api, pool["id"], agent.member_id) == "healthy",
                15,
                what=f"{agent.hostname} healthy",
            )

        queued = api.post(
            f"{base}/members/{edge_1.member_id}/jobs", json={"type": "haproxy.reload"}
        )
        assert queued.status_code == 202, queued.text
        job = edge_1.claim()
        edge_1.complete(job["id"], summary="reloaded")

        provider = api.post(
            "/api/dns-providers",
            json={"name": "pdns", "kind": "powerdns", "config": pdns.powerdns_config()},
        )
        assert provider.status_code == 201, provider.text
        linked = api.put(
            f"{base}/dns",
            json={
                "provider_id": provider.json()["id"],
                "zone": pdns.zone,
                "label": "www",
                "ttl": 1,
            },
        )
        assert linked.status_code == 200, linked.text
        fqdn = f"www.{pdns.zone}"
        wait_until(lambda: pdns.query_a(fqdn) == [ADDRESSES["edge-1"]], 15, what="edge-1 served")
        cutover = api.post(f"{base}/cutover", json={})
        assert cutover.status_code in (200, 202), cutover.text
        wait_until(lambda: pdns.query_a(fqdn) == [ADDRESSES["edge-2"]], 15, what="edge-2 served")
    finally:
        stop_process(first.process)
        api.close()
        agent_http.close()

    second = start_server(tmp_path / "second", env=env, data_dir=data_dir)
    api = second.api()
    agent_http = httpx.Client(base_url=second.url)
    try:
        # The same secrets are accepted: the token lookup was loaded from PostgreSQL.
        for agent in (edge_1, edge_2):
            agent.client = agent_http
            assert agent.heartbeat() == []
        members = {m["hostname"]: m for m in api.get(f"{base}/members").json()["items"]}
        assert members["edge-2"]["role"] == "active"
        assert members["edge-1"]["role"] == "standby"
        assert members["edge-1"]["enrolled_at"] is not None
        jobs = api.get(f"{base}/jobs").json()["items"]
        assert [(j["type"], j["state"], j["summary"]) for j in jobs] == [
            ("haproxy.reload", "completed", "reloaded")
        ]
        events = api.get(f"{base}/events").json()["items"]
        assert len(events) == 1 and events[0]["dns"]["state"] == "applied"
        assert pdns.query_a(fqdn) == [ADDRESSES["edge-2"]]
        # Nothing went to the embedded default.
        assert not (data_dir / "serverctl.db").exists()
    finally:
        stop_process(second.process)
        api.close()
        agent_http.close()
