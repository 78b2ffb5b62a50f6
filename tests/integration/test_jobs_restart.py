"""Jobs survive a control-plane crash: a real `serverctl serve` killed with SIGKILL and started
again on the same data directory. A stand-in agent (plain HTTP from 127.0.0.2) heartbeats."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from support.server import start_server, stop_process
from support.util import wait_until

MEMBER_IP = "127.0.0.2"


class StandInAgent:
    def __init__(self, url: str, secret: str) -> None:
        self.client = httpx.Client(
            base_url=url,
            timeout=5,
            transport=httpx.HTTPTransport(local_address=MEMBER_IP),
            headers={"Authorization": f"Bearer {secret}"},
        )

    def heartbeat(self) -> list[dict]:
        answer = self.client.post(
            "/api/agents/heartbeat",
            json={
                "ip": MEMBER_IP,
                "hostname": "edge-1",
                "version": "0.1.0",
                "haproxy": {"monitored": True, "active": True, "source": "pidfile"},
            },
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["jobs"]

    def complete(self, job_id: int, state: str = "completed") -> httpx.Response:
        return self.client.post(
            "/api/agents/jobs/complete",
            json={
                "hostname": "edge-1",
                "job_id": job_id,
                "state": state,
                "summary": "done",
                "output": "ok",
            },
        )


@pytest.fixture
def setup(tmp_path):
    first = start_server(tmp_path)
    with first.api() as api:
        pool = api.post("/api/pools", json={"name": "edge"}).json()
        member = api.post(
            f"/api/pools/{pool['id']}/members",
            json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
        ).json()
    url = f"/api/pools/{pool['id']}/members/{member['id']}/jobs"
    made: list[StandInAgent] = []

    def agent(server_url: str) -> StandInAgent:
        made.append(StandInAgent(server_url, member["secret"]))
        return made[-1]

    yield {"server": first, "tmp": tmp_path, "jobs_url": url, "agent": agent}
    for each in made:
        each.client.close()
    stop_process(first.process)


def test_heartbeat_answer_hands_out_a_queued_job_once(setup):
    srv = setup["server"]
    agent = setup["agent"](srv.url)
    with srv.api() as api:
        job_id = api.post(setup["jobs_url"], json={"type": "haproxy.validate"}).json()["job_id"]
        jobs = agent.heartbeat()
        assert [(j["id"], j["type"], j["params"], j["timeout_s"]) for j in jobs] == [
            (job_id, "haproxy.validate", {}, 60)
        ]
        assert agent.heartbeat() == [], "a claimed job is not handed out again"
        assert agent.complete(job_id).json() == {"ok": True, "state": "completed"}
        assert agent.complete(job_id).json() == {"ok": True, "state": "completed"}
        assert api.get(f"/api/jobs/{job_id}").json()["state"] == "completed"


def test_completion_checks_the_agent_like_a_heartbeat(setup):
    srv = setup["server"]
    agent = setup["agent"](srv.url)
    with srv.api() as api:
        job_id = api.post(setup["jobs_url"], json={"type": "haproxy.validate"}).json()["job_id"]
    agent.heartbeat()
    wrong_host = agent.client.post(
        "/api/agents/jobs/complete",
        json={"hostname": "edge-2", "job_id": job_id, "state": "completed"},
    )
    assert wrong_host.status_code == 401
    bad_state = agent.client.post(
        "/api/agents/jobs/complete", json={"hostname": "edge-1", "job_id": job_id, "state": "great"}
    )
    assert bad_state.status_code == 422
    unknown = agent.complete(job_id + 100)
    assert unknown.status_code == 404
    stranger = httpx.post(
        f"{srv.url}/api/agents/jobs/complete",
        headers={"Authorization": "Bearer " + "z" * 48},
        json={"hostname": "edge-1", "job_id": job_id, "state": "completed"},
    )
    assert stranger.status_code == 401


def test_jobs_survive_a_killed_control_plane(setup):
    srv = setup["server"]
    agent = setup["agent"](srv.url)
    with srv.api() as api:
        running = api.post(setup["jobs_url"], json={"type": "haproxy.validate"}).json()["job_id"]
        pending = api.post(setup["jobs_url"], json={"type": "haproxy.reload"}).json()["job_id"]
    assert [j["id"] for j in agent.heartbeat()] == [running]

    srv.process.kill()  # SIGKILL: no shutdown hooks run
    srv.process.wait(10)
    again = start_server(setup["tmp"] / "again", data_dir=srv.data_dir)
    try:
        agent = setup["agent"](again.url)
        with again.api() as api:
            assert api.get(f"/api/jobs/{running}").json()["state"] == "running"
            assert api.get(f"/api/jobs/{pending}").json()["state"] == "pending"
            assert agent.heartbeat() == [], "one job at a time: the running one is not done"
            assert agent.complete(running).json()["state"] == "completed"
            assert [j["id"] for j in agent.heartbeat()] == [pending]
            assert agent.complete(pending).json()["state"] == "completed"
            states = {j["state"] for j in api.get(setup["jobs_url"]).json()["items"]}
            assert states == {"completed"}
    finally:
        stop_process(again.process)


def test_a_job_whose_agent_goes_silent_times_out_also_after_a_restart(setup):
    srv = setup["server"]
    agent = setup["agent"](srv.url)
    with srv.api() as api:
        job_id = api.post(
            setup["jobs_url"], json={"type": "haproxy.validate", "timeout_s": 5}
        ).json()["job_id"]
    assert [j["id"] for j in agent.heartbeat()] == [job_id]
    srv.process.kill()
    srv.process.wait(10)
    again = start_server(setup["tmp"] / "again", data_dir=srv.data_dir)
    try:
        with again.api() as api:

            def timed_out() -> bool:
                return bool(api.get(f"/api/jobs/{job_id}").json()["state"] == "timed_out")

            wait_until(timed_out, 30, interval=0.5, what="the silent job to time out")
            job = api.get(f"/api/jobs/{job_id}").json()
            assert "no result from the agent within 5 s" in job["summary"]
            late = setup["agent"](again.url).complete(job_id)
            assert late.status_code == 409
    finally:
        stop_process(again.process)
