"""NUL characters, on SQLite and on PostgreSQL (whose text columns cannot keep one). An
operator's NUL (JSON, query string, URL-encoded or multipart form field) is refused with a clear
400 and nothing is stored. An agent's NUL is kept as U+FFFD: a host's report (a log line after a
crash is a run of NULs) is never lost, nor does it fail at the insert."""

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
    # The same form sent as multipart (which every form route also reads).
    _refused(client.post("/login", files={"name": (None, "ad\x00min"), "password": (None, "x")}))
    # In a multipart field "%00" is just text: that login is refused for what it is.
    answer = client.post("/login", files={"name": (None, "ad%00min"), "password": (None, "x")})
    assert answer.status_code != 400 and "NUL" not in answer.text


def test_a_job_result_with_a_nul_is_kept_with_the_replacement_character(app_env: Any) -> None:
    base, agent = _agent(app_env)
    client = app_env.client
    queued = client.post(f"{base}/members/{agent.member_id}/jobs", json={"type": "haproxy.reload"})
    job = agent.claim()
    agent.complete(
        job["id"], summary="ok\x00", output="line\x00\x00\n", result={"text\x00": "a\x00b"}
    )
    view = client.get(f"/api/jobs/{queued.json()['job_id']}").json()
    assert view["state"] == "completed"
    assert (view["summary"], view["output"]) == ("ok\ufffd", "line\ufffd\ufffd\n")
    assert view["result"] == {"text\ufffd": "a\ufffdb"}


def test_a_heartbeat_with_a_nul_is_taken_and_shown_with_the_replacement_character(
    app_env: Any,
) -> None:
    base, agent = _agent(app_env)
    agent.heartbeat(source="pid\x00file")
    flush.flush_once(app_env.state.db, app_env.state.live, include_seen=False)
    member = app_env.client.get(f"{base}/members/{agent.member_id}").json()
    assert member["heartbeat"]["haproxy"]["source"] == "pid\ufffdfile"
    assert member["last_rejection"] is None
