"""The job engine against the real app and a real SQLite database."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from serverctl.db.models import Job
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from serverctl.errors import Conflict, NotFound


@pytest.fixture
def member(app_env):
    pool = app_env.client.post("/api/pools", json={"name": "edge"}).json()
    made = app_env.client.post(
        f"/api/pools/{pool['id']}/members",
        json={"hostname": "edge-1", "allowed_ips": ["127.0.0.2"]},
    ).json()
    return {
        "pool_id": pool["id"],
        "id": made["id"],
        "jobs": f"/api/pools/{pool['id']}/members/{made['id']}/jobs",
    }


def _enqueue(app_env, member, body):
    return app_env.client.post(member["jobs"], json=body)


def test_enqueue_answers_202_with_the_job_id_and_the_job_is_pending(app_env, member):
    answer = _enqueue(app_env, member, {"type": "haproxy.reload"})
    assert answer.status_code == 202
    job = app_env.client.get(f"/api/jobs/{answer.json()['job_id']}").json()
    assert (job["state"], job["type"], job["source"]) == ("pending", "haproxy.reload", "operator")
    assert job["enqueued_by"] == "token:tests"
    assert job["timeout_s"] == 120


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "rm -rf /"}, "unknown job type"),
        ({"type": "haproxy.server_state", "params": {"backend": "be"}}, "server"),
        (
            {
                "type": "haproxy.server_state",
                "params": {"backend": "be", "server": "s1", "state": "down"},
            },
            "state",
        ),
        (
            {
                "type": "haproxy.server_state",
                "params": {"backend": "be; reboot", "server": "s1", "state": "drain"},
            },
            "backend",
        ),
        ({"type": "haproxy.reload", "params": {"extra": 1}}, "extra"),
        ({"type": "haproxy.reload", "timeout_s": 1}, "timeout_s"),
        (
            {"type": "agent.update", "params": {"url": "http://evil", "sha256": "0" * 64}},
            "takes no params",
        ),
    ],
)
def test_unknown_types_and_bad_params_are_422_with_the_reason(app_env, member, body, fragment):
    answer = _enqueue(app_env, member, body)
    assert answer.status_code == 422
    assert fragment in answer.json()["detail"]
    assert app_env.client.get(member["jobs"]).json()["total"] == 0


def test_agent_update_gets_the_control_planes_zipapp_url_and_checksum(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "agent.update"}).json()["job_id"]
    params = app_env.client.get(f"/api/jobs/{job_id}").json()["params"]
    assert params["url"] == "https://cp.example.net/agent/balctl.pyz"
    served = app_env.client.get("/agent/balctl.pyz.sha256").text.split()[0]
    assert params["sha256"] == served


def test_same_idempotency_key_returns_the_first_job(app_env, member):
    first = _enqueue(app_env, member, {"type": "haproxy.reload", "idempotency_key": "deploy-42"})
    again = _enqueue(app_env, member, {"type": "haproxy.reload", "idempotency_key": "deploy-42"})
    assert first.json() == again.json()
    assert app_env.client.get(member["jobs"]).json()["total"] == 1


def test_haproxy_jobs_on_a_generic_linux_pool_need_haproxy_on_the_host(app_env):
    pool = app_env.client.post("/api/pools", json={"name": "boxes", "template": "linux"}).json()
    made = app_env.client.post(
        f"/api/pools/{pool['id']}/members", json={"hostname": "box-1", "allowed_ips": ["127.0.0.2"]}
    ).json()
    url = f"/api/pools/{pool['id']}/members/{made['id']}/jobs"
    refused = app_env.client.post(url, json={"type": "haproxy.reload"})
    assert refused.status_code == 409
    assert "does not report HAProxy" in refused.json()["detail"]
    assert app_env.client.post(url, json={"type": "haproxy.install"}).status_code == 202
    app_env.state.live.members[made["id"]].haproxy = {"monitored": True, "active": True}
    assert app_env.client.post(url, json={"type": "haproxy.reload"}).status_code == 202


def test_list_filters_by_state_and_type(app_env, member):
    _enqueue(app_env, member, {"type": "haproxy.reload"})
    _enqueue(app_env, member, {"type": "haproxy.validate"})
    jobs = app_env.state.jobs
    claimed = jobs.claim(member["id"])
    assert [j["type"] for j in claimed] == ["haproxy.reload"]
    running = app_env.client.get(member["jobs"], params={"state": "running"}).json()
    assert [j["type"] for j in running["items"]] == ["haproxy.reload"]
    by_type = app_env.client.get(member["jobs"], params={"type": "haproxy.validate"}).json()
    assert by_type["total"] == 1
    assert app_env.client.get(member["jobs"], params={"state": "bogus"}).status_code == 422


def test_a_member_runs_one_job_at_a_time_in_order(app_env, member):
    ids = [
        _enqueue(app_env, member, {"type": t}).json()["job_id"]
        for t in ("haproxy.validate", "haproxy.reload")
    ]
    jobs = app_env.state.jobs
    first = jobs.claim(member["id"])
    assert [j["id"] for j in first] == [ids[0]]
    assert first[0]["timeout_s"] == 60 and first[0]["params"] == {}
    assert jobs.claim(member["id"]) == []
    assert jobs.complete(member["id"], ids[0], "completed", "ok", "valid", None) == "completed"
    assert [j["id"] for j in jobs.claim(member["id"])] == [ids[1]]


def test_completion_is_idempotent_and_checks_the_member(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    jobs = app_env.state.jobs
    jobs.claim(member["id"])
    with pytest.raises(NotFound):
        jobs.complete(member["id"] + 1, job_id, "completed", "ok", None, None)
    assert jobs.complete(member["id"], job_id, "failed", "boom", "out", {"rc": 1}) == "failed"
    assert jobs.complete(member["id"], job_id, "failed", "boom", "out", {"rc": 1}) == "failed"
    job = app_env.client.get(f"/api/jobs/{job_id}").json()
    assert (job["state"], job["summary"], job["output"], job["result"]) == (
        "failed",
        "boom",
        "out",
        {"rc": 1},
    )
    assert job["started_at"] and job["finished_at"]


def test_cancelled_job_refuses_a_late_result_and_is_never_handed_out(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    cancelled = app_env.client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    assert app_env.state.jobs.claim(member["id"]) == []
    again = app_env.client.post(f"/api/jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_output_is_bounded_keeping_the_tail(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    app_env.state.jobs.claim(member["id"])
    app_env.state.jobs.complete(
        member["id"], job_id, "completed", "ok", "x" * 100_000 + "THE END", None
    )
    output = app_env.client.get(f"/api/jobs/{job_id}").json()["output"]
    assert output.endswith("THE END") and output.startswith("[...")
    assert len(output) < 70_000


def test_a_running_job_with_no_result_times_out(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    jobs = app_env.state.jobs
    jobs.claim(member["id"])
    assert jobs.reap() == 0
    with app_env.state.db.session() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(started_at=utcnow() - timedelta(seconds=131))
        )
    assert jobs.reap() == 1
    job = app_env.client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "timed_out"
    assert "no result from the agent within 120 s" in job["summary"]
    with pytest.raises(Conflict):
        jobs.complete(member["id"], job_id, "completed", "late", None, None)


def test_a_job_nobody_claims_times_out_after_the_pending_limit(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    with app_env.state.db.session() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(hours=2))
        )
    app_env.state.jobs.reap()
    assert "never claimed" in app_env.client.get(f"/api/jobs/{job_id}").json()["summary"]


def test_concurrent_claims_hand_each_job_out_once_and_one_at_a_time(app_env, member):
    total = 15
    for _ in range(total):
        _enqueue(app_env, member, {"type": "haproxy.validate"})
    jobs = app_env.state.jobs
    claimed: list[int] = []
    running = 0
    most_running = 0
    lock = threading.Lock()

    def agent_heartbeats() -> None:
        nonlocal running, most_running
        for _ in range(400):
            got = jobs.claim(member["id"])
            for job in got:
                with lock:
                    claimed.append(job["id"])
                    running += 1
                    most_running = max(most_running, running)
                with lock:
                    running -= 1
                jobs.complete(member["id"], job["id"], "completed", "ok", None, None)
            with lock:
                if len(claimed) >= total:
                    return

    threads = [threading.Thread(target=agent_heartbeats) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(set(claimed)), "a job was handed out twice"
    assert len(claimed) == total
    assert most_running == 1


def test_recipe_runs_its_steps_in_order_and_completes_with_the_last(app_env, member):
    url = f"/api/pools/{member['pool_id']}/members/{member['id']}/recipes"
    listed = app_env.client.get(url).json()["items"]
    assert [r["id"] for r in listed] == ["admin-socket", "letsencrypt"]
    assert listed[0]["completed"] is None
    recipe_job = app_env.client.post(f"{url}/admin-socket/apply").json()["job_id"]
    jobs = app_env.state.jobs
    first = jobs.claim(member["id"])
    assert [j["type"] for j in first] == ["haproxy.validate"]
    view = app_env.client.get(f"/api/jobs/{recipe_job}").json()
    assert view["state"] == "running"
    assert [s["state"] for s in view["steps"]] == ["running", "waiting"]
    jobs.complete(member["id"], first[0]["id"], "completed", "valid", None, None)
    second = jobs.claim(member["id"])
    assert [j["type"] for j in second] == ["haproxy.admin_socket.enable"]
    jobs.complete(
        member["id"], second[0]["id"], "completed", "enabled", "reloaded", {"changed": True}
    )
    done = app_env.client.get(f"/api/jobs/{recipe_job}").json()
    assert done["state"] == "completed"
    assert [s["state"] for s in done["steps"]] == ["completed", "completed"]
    assert app_env.client.get(url).json()["items"][0]["last_job"]["id"] == recipe_job


def test_recipe_fails_with_the_failing_steps_output(app_env, member):
    url = f"/api/pools/{member['pool_id']}/members/{member['id']}/recipes/admin-socket/apply"
    recipe_job = app_env.client.post(url).json()["job_id"]
    jobs = app_env.state.jobs
    step = jobs.claim(member["id"])[0]
    jobs.complete(
        member["id"],
        step["id"],
        "failed",
        "configuration is invalid",
        "[ALERT] parsing error",
        None,
    )
    view = app_env.client.get(f"/api/jobs/{recipe_job}").json()
    assert view["state"] == "failed"
    assert "step 1/2 (haproxy.validate) failed: configuration is invalid" == view["summary"]
    assert view["output"] == "[ALERT] parsing error"
    assert jobs.claim(member["id"]) == [], "no further step after a failure"


def test_unknown_recipe_is_404(app_env, member):
    url = f"/api/pools/{member['pool_id']}/members/{member['id']}/recipes/nope/apply"
    assert app_env.client.post(url).status_code == 404


def test_viewer_cannot_enqueue_or_cancel(app_env, member):
    viewer = app_env.as_role("viewer")
    refused = app_env.client.post(member["jobs"], json={"type": "haproxy.reload"}, headers=viewer)
    assert refused.status_code == 403
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    assert app_env.client.post(f"/api/jobs/{job_id}/cancel", headers=viewer).status_code == 403
    assert app_env.client.get(f"/api/jobs/{job_id}", headers=viewer).status_code == 200


def test_catalogue_lists_every_job_type_with_its_params(app_env):
    items = {i["type"]: i for i in app_env.client.get("/api/catalogue").json()["items"]}
    assert set(items) >= {
        "haproxy.install",
        "haproxy.validate",
        "haproxy.reload",
        "haproxy.server_state",
        "haproxy.admin_socket.enable",
        "haproxy.admin_socket.disable",
        "agent.update",
    }
    assert set(items["haproxy.server_state"]["params"]["properties"]) == {
        "backend",
        "server",
        "state",
    }


def test_enqueue_is_audited(app_env, member):
    _enqueue(app_env, member, {"type": "haproxy.reload"})
    entry = app_env.client.get("/api/audit").json()["items"][0]
    assert entry["action"] == "job.enqueue" and entry["detail"]["type"] == "haproxy.reload"


def test_jobs_of_a_deleted_member_go_with_it(app_env, member):
    job_id = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    app_env.state.pools.delete_member(SYSTEM, member["pool_id"], member["id"])
    assert app_env.client.get(f"/api/jobs/{job_id}").status_code == 404


def _age_start(app_env, job_id, seconds):
    with app_env.state.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(started_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_job_the_restarted_agent_no_longer_names_fails_and_frees_the_queue(app_env, member):
    lost = _enqueue(app_env, member, {"type": "haproxy.reload"}).json()["job_id"]
    queued = _enqueue(app_env, member, {"type": "haproxy.validate"}).json()["job_id"]
    jobs = app_env.state.jobs
    assert [j["id"] for j in jobs.claim(member["id"], [])] == [lost]
    assert jobs.claim(member["id"], []) == [], "just handed out: it may not have arrived yet"
    _age_start(app_env, lost, 20)
    assert jobs.claim(member["id"], [lost]) == [], "the agent still has it"
    assert jobs.claim(member["id"], None) == [], "an agent that does not report: wait"
    assert [j["id"] for j in jobs.claim(member["id"], [])] == [queued]
    job = app_env.client.get(f"/api/jobs/{lost}").json()
    assert job["state"] == "failed"
    assert job["summary"] == "the agent is no longer running this job (it restarted?)"


def test_a_lost_recipe_step_fails_its_recipe(app_env, member):
    url = f"/api/pools/{member['pool_id']}/members/{member['id']}/recipes/admin-socket/apply"
    run = app_env.client.post(url).json()["job_id"]
    jobs = app_env.state.jobs
    step = jobs.claim(member["id"], [])[0]["id"]
    _age_start(app_env, step, 20)
    assert jobs.claim(member["id"], []) == []
    view = app_env.client.get(f"/api/jobs/{run}").json()
    assert view["state"] == "failed"
    assert "step 1/2 (haproxy.validate) failed: the agent is no longer running" in view["summary"]
