"""NUL characters are refused at the edge with a clear 400, on SQLite and on PostgreSQL (whose
text columns cannot keep one): in operator JSON, query strings and form fields, in heartbeats
and in job results. Nothing is stored, and a refused job result leaves the job waiting for the
agent's next try rather than lost."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from serverctl.loops import flush
from support.standin_agent import StandInAgent

AGENT_IP = "127.0.0.2"


def _agent(app_env: Any) -> tuple[str, StandInAgent]:
    client = app_env.client
    pool = client.post("/api/pools", json={"name": "nul"}).json()
    base = f"/api/pools/{pool['id']}"
    member = client.post(
        f"{base}/members", json={"hostname": "edge-1", "allowed_ips": [AGENT_IP]}
    ).json()
    agent_http = TestClient(client.app, client=(AGENT_IP, 50000))
    agent = StandInAgent(agent_http, member["secret"], "edge-1", AGENT_IP)
    agent.member_id = member["id"]
    agent.heartbeat()
    return base, agent


def _refused(answer: Any) -> str:
    assert answer.status_code == 400, answer.text
    detail = str(answer.json()["detail"])
    assert "NUL" in detail, detail
    return detail


def test_operator_json_with_a_nul_is_refused_and_nothing_is_made(app_env: Any) -> None:
    client = app_env.client
    before = client.get("/api/tokens").json()["total"]
    _refused(client.post("/api/tokens", json={"name": "ci\x00", "role": "viewer"}))
    _refused(client.post("/api/pools", json={"name": "edge", "notes": {"k\x00": 1}}))
    assert client.get("/api/tokens").json()["total"] == before
    assert client.get("/api/pools").json()["total"] == 0


def test_query_strings_and_form_fields_with_a_nul_are_refused(app_env: Any) -> None:
    client = app_env.client
    _refused(client.get("/api/pools", params={"limit": "5\x00"}))
    # Before any page runs: no session, no CSRF token, and still the NUL is what is named.
    answer = client.post(
        "/login",
        content=b"name=admin%00&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(answer)
    assert answer.headers["connection"] == "close"


def test_a_job_result_with_a_nul_is_refused_and_the_job_still_waits(app_env: Any) -> None:
    base, agent = _agent(app_env)
    client = app_env.client
    queued = client.post(f"{base}/members/{agent.member_id}/jobs", json={"type": "haproxy.reload"})
    job = agent.claim()
    body = {"hostname": "edge-1", "job_id": job["id"], "state": "completed", "summary": "ok\x00"}
    _refused(agent.call("POST", "/api/agents/jobs/complete", json=body))
    view = client.get(f"/api/jobs/{queued.json()['job_id']}").json()
    assert view["state"] == "running"
    # What the agent sends instead (balctl.bounds makes a NUL U+FFFD) is taken.
    agent.complete(job["id"], summary="ok\ufffd", output="line\ufffd\n")
    view = client.get(f"/api/jobs/{queued.json()['job_id']}").json()
    assert (view["state"], view["summary"], view["output"]) == (
        "completed",
        "ok\ufffd",
        "line\ufffd\n",
    )


def test_a_heartbeat_with_a_nul_is_refused_and_shown_on_the_member(app_env: Any) -> None:
    base, agent = _agent(app_env)
    answer = agent.send_heartbeat(source="pid\x00file")
    detail = _refused(answer)
    # Refusals are written in the heartbeat writer's next batch.
    flush.flush_once(app_env.state.db, app_env.state.live, include_seen=False)
    member = app_env.client.get(f"{base}/members/{agent.member_id}").json()
    assert member["last_rejection"]["status"] == 400
    assert member["last_rejection"]["reason"] == detail
