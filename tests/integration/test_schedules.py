"""Cron schedules: validated on entry, due times in UTC, missed runs caught up once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from serverctl.db.models import Schedule
from serverctl.domain.schedules import check_cron, next_runs
from serverctl.errors import ValidationError


def test_next_runs_are_computed_in_utc():
    after = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a European DST change day: no effect
    assert next_runs("0 3 * * *", after, 2) == [
        datetime(2026, 3, 29, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 3, 0, tzinfo=UTC),
    ]
    assert next_runs("*/15 * * * *", after, 1) == [datetime(2026, 3, 29, 0, 45, tzinfo=UTC)]


@pytest.mark.parametrize("bad", ["", "* * * *", "61 * * * *", "* * * * * *", "every day"])
def test_bad_cron_expressions_are_refused_with_the_reason(bad):
    with pytest.raises(ValidationError, match="cron expression"):
        check_cron(bad)


@pytest.fixture
def pool(app_env):
    made = app_env.client.post("/api/pools", json={"name": "edge"}).json()
    members = [
        app_env.client.post(
            f"/api/pools/{made['id']}/members",
            json={"hostname": f"edge-{i}", "allowed_ips": ["127.0.0.2"]},
        ).json()
        for i in (1, 2)
    ]
    return {
        "id": made["id"],
        "members": [m["id"] for m in members],
        "url": f"/api/pools/{made['id']}/schedules",
    }


def test_schedule_is_created_with_its_next_run_times(app_env, pool):
    answer = app_env.client.post(
        pool["url"], json={"job_type": "haproxy.reload", "cron": "0  3 * * *"}
    )
    assert answer.status_code == 201
    made = answer.json()
    assert made["cron"] == "0 3 * * *"
    assert len(made["next_runs"]) == 3
    assert made["next_runs"][0].endswith("T03:00:00Z")
    listed = app_env.client.get(pool["url"]).json()
    assert listed["total"] == 1


def test_bad_schedule_input_is_422(app_env, pool):
    bad_cron = app_env.client.post(
        pool["url"], json={"job_type": "haproxy.reload", "cron": "0 25 * * *"}
    )
    assert bad_cron.status_code == 422 and "cron expression" in bad_cron.json()["detail"]
    bad_type = app_env.client.post(pool["url"], json={"job_type": "shell", "cron": "* * * * *"})
    assert bad_type.status_code == 422


def _make_due(app_env, schedule_id, minutes_ago):
    with app_env.state.db.session() as s:
        s.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id)
            .values(next_run_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))
        )


def test_a_due_pool_schedule_queues_one_job_per_member(app_env, pool):
    made = app_env.client.post(
        pool["url"], json={"job_type": "haproxy.reload", "cron": "*/5 * * * *"}
    ).json()
    _make_due(app_env, made["id"], 1)
    assert app_env.state.schedules.run_due() == 2
    jobs = app_env.client.get(f"/api/pools/{pool['id']}/jobs").json()["items"]
    assert sorted(j["member_id"] for j in jobs) == sorted(pool["members"])
    assert {j["source"] for j in jobs} == {"cron"}
    assert {j["enqueued_by"] for j in jobs} == {f"cron:{made['id']}"}


def test_missed_runs_during_downtime_run_once_not_many_times(app_env, pool):
    made = app_env.client.post(
        pool["url"],
        json={
            "job_type": "haproxy.reload",
            "cron": "* * * * *",
            "member_id": pool["members"][0],
        },
    ).json()
    _make_due(app_env, made["id"], 180)  # three hours of minutely runs were missed
    assert app_env.state.schedules.run_due() == 1
    assert app_env.state.schedules.run_due() == 0
    after = app_env.client.get(pool["url"]).json()["items"][0]
    assert datetime.fromisoformat(after["next_run_at"]) > datetime.now(UTC)
    assert app_env.client.get(f"/api/pools/{pool['id']}/jobs").json()["total"] == 1


def test_disabled_schedules_do_not_run_and_can_be_deleted(app_env, pool):
    made = app_env.client.post(
        pool["url"], json={"job_type": "haproxy.reload", "cron": "* * * * *"}
    ).json()
    url = f"{pool['url']}/{made['id']}"
    assert app_env.client.patch(url, json={"enabled": False}).json()["next_run_at"] is None
    _make_due(app_env, made["id"], 5)
    assert app_env.state.schedules.run_due() == 0
    assert app_env.client.delete(url).status_code == 204
    assert app_env.client.get(pool["url"]).json()["total"] == 0
