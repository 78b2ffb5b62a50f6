"""The member tabs' forms: queueing jobs, recipes and schedules from the web UI."""

from __future__ import annotations

import re

import pytest

from serverctl.domain.principal import SYSTEM


@pytest.fixture
def web(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"])
    app_env.client.headers.pop("Authorization")
    _, password = app_env.state.operators.create_user(SYSTEM, "ops", "operator")
    app_env.client.post("/login", data={"name": "ops", "password": password})
    page = app_env.client.get("/pools/1/members/1/control")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return app_env, csrf


def test_every_member_tab_renders(web):
    env, _ = web
    for tab in ("", "/status", "/control", "/recipes", "/jobs"):
        page = env.client.get(f"/pools/1/members/1{tab}")
        assert page.status_code == 200, tab
        assert "Cron &amp; Jobs" in page.text
    for live in ("/status/live", "/control/live", "/recipes/live", "/jobs/live"):
        assert env.client.get(f"/pools/1/members/1{live}").status_code == 200


def test_control_panel_button_queues_the_job_and_returns_to_the_tab(web):
    env, csrf = web
    answer = env.client.post(
        "/pools/1/members/1/jobs",
        data={"job_type": "haproxy.reload", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/pools/1/members/1/control?queued=1"
    page = env.client.get(answer.headers["location"])
    assert "Job 1 queued" in page.text
    assert env.state.jobs.get(SYSTEM, 1)["type"] == "haproxy.reload"


def test_drain_button_queues_a_server_state_job(web):
    env, csrf = web
    env.client.post(
        "/pools/1/members/1/jobs",
        data={
            "job_type": "haproxy.server_state",
            "backend": "app",
            "server": "app1",
            "server_state": "drain",
            "csrf_token": csrf,
        },
    )
    job = env.state.jobs.get(SYSTEM, 1)
    assert job["params"] == {"backend": "app", "server": "app1", "state": "drain"}


def test_bad_job_from_the_ui_shows_the_reason(web):
    env, csrf = web
    answer = env.client.post(
        "/pools/1/members/1/jobs",
        data={
            "job_type": "haproxy.server_state",
            "backend": "app",
            "server": "bad name",
            "server_state": "drain",
            "csrf_token": csrf,
        },
    )
    assert answer.status_code == 422
    assert "bad params for haproxy.server_state" in answer.text


def test_job_forms_need_the_csrf_token(web):
    env, _ = web
    answer = env.client.post("/pools/1/members/1/jobs", data={"job_type": "haproxy.reload"})
    assert answer.status_code == 403
    assert env.state.jobs.list_jobs(SYSTEM, 1)[1] == 0


def test_recipe_apply_from_the_ui_starts_the_recipe(web):
    env, csrf = web
    env.client.post("/pools/1/members/1/recipes/admin-socket/apply", data={"csrf_token": csrf})
    page = env.client.get("/pools/1/members/1/recipes")
    assert "Last run: apply" in page.text
    assert 'data-job-state="running"' in page.text


def test_schedule_form_adds_a_schedule_and_shows_bad_cron(web):
    env, csrf = web
    bad = env.client.post(
        "/pools/1/members/1/schedules",
        data={"job_type": "haproxy.reload", "cron": "nope", "scope": "pool", "csrf_token": csrf},
    )
    assert bad.status_code == 422 and "cron expression" in bad.text
    env.client.post(
        "/pools/1/members/1/schedules",
        data={
            "job_type": "haproxy.reload",
            "cron": "0 3 * * *",
            "scope": "pool",
            "csrf_token": csrf,
        },
    )
    page = env.client.get("/pools/1/members/1/jobs")
    assert "every member of the pool" in page.text and "03:00:00 UTC" in page.text


def test_cancel_from_the_timeline(web):
    env, csrf = web
    env.client.post(
        "/pools/1/members/1/jobs", data={"job_type": "haproxy.reload", "csrf_token": csrf}
    )
    answer = env.client.post("/jobs/1/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.headers["location"] == "/pools/1/members/1/jobs"
    assert env.state.jobs.get(SYSTEM, 1)["state"] == "cancelled"
