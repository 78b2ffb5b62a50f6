"""Jobs through the whole chain: REST enqueue → heartbeat claim → the real agent → a real
haproxy → the result in the API, and the agent's stats enrichment on the Status endpoint."""

from __future__ import annotations

import pytest

from support.agent import Agent, download_zipapp
from support.haproxy import HAProxy
from support.util import free_port, wait_until

MEMBER_IP = "127.0.0.2"


@pytest.fixture
def fleet(server, tmp_path):
    root = tmp_path / "host"
    haproxy = HAProxy(
        "edge-1",
        root,
        f"{MEMBER_IP}:{free_port(MEMBER_IP)}",
        admin_socket=False,
        backends={"app": ["app1", "app2"]},
    )
    haproxy.start()
    api = server.api()
    pool = api.post("/api/pools", json={"name": "edge"}).json()
    member = api.post(
        f"/api/pools/{pool['id']}/members", json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]}
    ).json()
    pyz = download_zipapp(server.url, tmp_path / "balctl.pyz")
    agent = Agent(
        pyz,
        root,
        env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile), "BALCTL_STATS_INTERVAL_S": "1"},
    )
    assert (
        agent.enrol(server.url, member["secret"], "edge-1", "--source-ip", MEMBER_IP).returncode
        == 0
    )
    agent.start()
    url = f"/api/pools/{pool['id']}/members/{member['id']}"
    wait_until(
        lambda: api.get(url).json()["health"]["state"] == "healthy", 10, what="a healthy member"
    )
    yield {"api": api, "url": url, "haproxy": haproxy, "agent": agent, "pool": pool}
    agent.stop()
    haproxy.kill()
    api.close()


def _run(fleet, body, timeout=60):
    api = fleet["api"]
    job_id = api.post(f"{fleet['url']}/jobs", json=body).json()["job_id"]

    def done():
        job = api.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] not in ("pending", "running") else None

    return wait_until(done, timeout, interval=0.2, what=f"{body['type']} to finish")


def _server_admin(fleet, server):
    status = fleet["api"].get(f"{fleet['url']}/status").json()
    for backend in (status.get("stats") or {}).get("backends", []):
        for srv in backend["servers"]:
            if f"{backend['name']}/{srv['name']}" == server:
                return srv["admin"]
    return None


def test_validate_recipe_drain_and_reload_on_a_real_haproxy(fleet):
    api, url, haproxy = fleet["api"], fleet["url"], fleet["haproxy"]
    validated = _run(fleet, {"type": "haproxy.validate"})
    assert validated["state"] == "completed", validated
    assert validated["started_at"] is not None

    refused = _run(
        fleet,
        {
            "type": "haproxy.server_state",
            "params": {"backend": "app", "server": "app1", "state": "drain"},
        },
    )
    assert refused["state"] == "failed", "no admin socket yet: drain cannot work"

    recipes = f"{url}/recipes"
    assert api.get(recipes).json()["items"][0]["completed"] is False
    run_id = api.post(f"{recipes}/admin-socket/apply").json()["job_id"]
    wait_until(
        lambda: api.get(f"/api/jobs/{run_id}").json()["state"] not in ("running",),
        90,
        interval=0.3,
        what="the recipe to finish",
    )
    run = api.get(f"/api/jobs/{run_id}").json()
    assert run["state"] == "completed", run
    assert [s["state"] for s in run["steps"]] == ["completed", "completed"]
    assert "stats socket" in haproxy.config.read_text()
    wait_until(
        lambda: api.get(recipes).json()["items"][0]["completed"] is True,
        10,
        what="the recipe's completion state",
    )

    drained = _run(
        fleet,
        {
            "type": "haproxy.server_state",
            "params": {"backend": "app", "server": "app1", "state": "drain"},
        },
    )
    assert drained["state"] == "completed", drained
    assert "DRAIN" in haproxy.runtime("show stat").split("app,app1,")[1].split("\n")[0]
    wait_until(
        lambda: _server_admin(fleet, "app/app1") == "drain",
        10,
        what="the drain to show in the status",
    )

    old_pid = haproxy.pid()
    reloaded = _run(fleet, {"type": "haproxy.reload"})
    assert reloaded["state"] == "completed", reloaded
    assert haproxy.pid() != old_pid and haproxy.alive()


def _recipe(fleet, action):
    api = fleet["api"]
    run_id = api.post(f"{fleet['url']}/recipes/admin-socket/{action}").json()["job_id"]
    wait_until(
        lambda: api.get(f"/api/jobs/{run_id}").json()["state"] != "running",
        90,
        interval=0.3,
        what=f"the recipe {action} to finish",
    )
    return api.get(f"/api/jobs/{run_id}").json()


def test_admin_socket_recipe_twice_changes_nothing_and_disable_removes_it(fleet):
    haproxy = fleet["haproxy"]
    assert _recipe(fleet, "apply")["state"] == "completed"
    once = haproxy.config.read_text()
    assert once.count("stats socket") == 1 and once.count("stats timeout 2m") == 1
    pid = haproxy.pid()
    again = _recipe(fleet, "apply")
    assert again["state"] == "completed"
    assert again["result"] == {"changed": False}
    assert haproxy.config.read_text() == once
    assert haproxy.pid() == pid, "nothing to change, so no reload"
    disabled = _recipe(fleet, "disable")
    assert disabled["state"] == "completed", disabled
    assert "stats socket" not in haproxy.config.read_text()
    assert haproxy.alive()
    recipes = f"{fleet['url']}/recipes"
    wait_until(
        lambda: fleet["api"].get(recipes).json()["items"][0]["completed"] is False,
        10,
        what="the recipe to read as not enabled",
    )


def test_a_broken_config_fails_validation_and_reload_keeps_the_old_process(fleet):
    haproxy = fleet["haproxy"]
    old_pid = haproxy.pid()
    haproxy.config.write_text(haproxy.config.read_text() + "\nthis is not haproxy\n")
    validated = _run(fleet, {"type": "haproxy.validate"})
    assert validated["state"] == "failed"
    assert "invalid" in validated["summary"]
    reloaded = _run(fleet, {"type": "haproxy.reload"})
    assert reloaded["state"] == "failed"
    assert haproxy.pid() == old_pid and haproxy.alive()
