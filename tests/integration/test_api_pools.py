"""The operator REST API against the real app and a real SQLite database."""

from __future__ import annotations

import sqlite3

import pytest


def _pool(env, name="production-edge", template="haproxy"):
    answer = env.client.post("/api/pools", json={"name": name, "template": template})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _member(env, pool_id, hostname="edge-1", ips=("203.0.113.10",)):
    answer = env.client.post(
        f"/api/pools/{pool_id}/members", json={"hostname": hostname, "allowed_ips": list(ips)}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_healthz_answers_without_authentication(app_env):
    answer = app_env.client.get("/healthz", headers={"Authorization": ""})
    assert answer.status_code == 200


def test_api_without_token_is_refused_with_detail(app_env):
    answer = app_env.client.get("/api/pools", headers={"Authorization": ""})
    assert answer.status_code == 401
    assert "API token" in answer.json()["detail"]


def test_api_with_wrong_token_is_refused(app_env):
    answer = app_env.client.get("/api/pools", headers={"Authorization": "Bearer sct_nope"})
    assert answer.status_code == 401
    assert answer.json() == {"detail": "unknown or revoked API token"}


def test_create_list_get_and_delete_a_pool(app_env):
    pool = _pool(app_env)
    assert pool["name"] == "production-edge"
    assert pool["failover"] == {
        "automatic": False,
        "delay_s": 30,
        "haproxy_monitored": True,
        "cooldown_s": 300,
        "last_auto_failover_at": None,
    }
    listed = app_env.client.get("/api/pools").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == pool["id"]
    assert app_env.client.get(f"/api/pools/{pool['id']}").json()["name"] == "production-edge"
    assert app_env.client.delete(f"/api/pools/{pool['id']}").status_code == 204
    gone = app_env.client.get(f"/api/pools/{pool['id']}")
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"no pool with id {pool['id']}"}


def test_generic_linux_pools_do_not_monitor_haproxy_by_default(app_env):
    assert _pool(app_env, "linux-hosts", "linux")["failover"]["haproxy_monitored"] is False


def test_bad_pool_name_is_422_with_a_message(app_env):
    answer = app_env.client.post("/api/pools", json={"name": "Bad Name"})
    assert answer.status_code == 422
    assert "pool name 'Bad Name' is not valid" in answer.json()["detail"]


def test_unknown_template_and_missing_fields_are_422_with_a_string_detail(app_env):
    for body in ({"name": "edge", "template": "nginx"}, {}, {"name": 5}):
        answer = app_env.client.post("/api/pools", json=body)
        assert answer.status_code == 422
        assert isinstance(answer.json()["detail"], str)


def test_duplicate_pool_name_is_409(app_env):
    _pool(app_env)
    answer = app_env.client.post("/api/pools", json={"name": "production-edge"})
    assert answer.status_code == 409
    assert "already exists" in answer.json()["detail"]


def test_adding_a_member_returns_its_secret_once_and_stores_only_a_hash(app_env):
    pool = _pool(app_env)
    member = _member(app_env, pool["id"])
    assert len(member["secret"]) == 48
    assert member["install_command"] == (
        "curl -fsSL https://cp.example.net/agent/install.sh | sudo bash -s -- "
        f"--server https://cp.example.net --key {member['secret']} --hostname edge-1"
    )
    assert member["health"] == {
        "state": "pending",
        "heartbeat_age_s": None,
        "reason": "waiting for the first heartbeat",
    }
    again = app_env.client.get(f"/api/pools/{pool['id']}/members/{member['id']}").json()
    assert "secret" not in again and "install_command" not in again
    db = app_env.state.settings.data_dir / "serverctl.db"
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert member["secret"] not in dump


def test_first_member_is_active_and_the_next_are_standbys(app_env):
    pool = _pool(app_env)
    first = _member(app_env, pool["id"], "edge-1")
    second = _member(app_env, pool["id"], "edge-2", ["203.0.113.11"])
    assert (first["role"], second["role"]) == ("active", "standby")
    listed = app_env.client.get(f"/api/pools/{pool['id']}/members").json()
    assert listed["total"] == 2
    assert [m["role"] for m in listed["items"]] == ["active", "standby"]
    assert app_env.client.get(f"/api/pools/{pool['id']}").json()["active_member_id"] == first["id"]


def test_deleting_the_active_member_makes_the_oldest_standby_active(app_env):
    pool = _pool(app_env)
    first = _member(app_env, pool["id"], "edge-1")
    second = _member(app_env, pool["id"], "edge-2")
    assert (
        app_env.client.delete(f"/api/pools/{pool['id']}/members/{first['id']}").status_code == 204
    )
    after = app_env.client.get(f"/api/pools/{pool['id']}/members/{second['id']}").json()
    assert after["role"] == "active"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"hostname": "edge 1", "allowed_ips": ["203.0.113.10"]}, "hostname"),
        ({"hostname": "edge-1", "allowed_ips": []}, "at least one"),
        ({"hostname": "edge-1", "allowed_ips": ["nope"]}, "'nope'"),
        ({"hostname": "edge-1"}, "allowed_ips"),
    ],
)
def test_bad_member_input_is_422(app_env, body, fragment):
    pool = _pool(app_env)
    answer = app_env.client.post(f"/api/pools/{pool['id']}/members", json=body)
    assert answer.status_code == 422
    assert fragment in answer.json()["detail"]


def test_duplicate_member_hostname_in_a_pool_is_409(app_env):
    pool = _pool(app_env)
    _member(app_env, pool["id"], "edge-1")
    answer = app_env.client.post(
        f"/api/pools/{pool['id']}/members", json={"hostname": "EDGE-1", "allowed_ips": ["::1"]}
    )
    assert answer.status_code == 409


def test_rotating_a_secret_gives_a_new_one(app_env):
    pool = _pool(app_env)
    member = _member(app_env, pool["id"])
    rotated = app_env.client.post(f"/api/pools/{pool['id']}/members/{member['id']}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != member["secret"]
    assert rotated.json()["secret"] in rotated.json()["install_command"]


def test_failover_settings_are_validated_and_saved(app_env):
    pool = _pool(app_env)
    url = f"/api/pools/{pool['id']}/failover"
    body = {"automatic": True, "delay_s": 10, "haproxy_monitored": False, "cooldown_s": 0}
    saved = app_env.client.put(url, json=body)
    expected = {**body, "last_auto_failover_at": None}
    assert saved.json() == expected
    assert app_env.client.get(url).json() == expected
    bad_bodies = (
        {"delay_s": 9},
        {"delay_s": 121},
        {},
        {"delay_s": "soon"},
        {"other": 1},
        {"cooldown_s": -1},
        {"cooldown_s": 3601},
        {"automatic": "maybe"},
    )
    for bad in bad_bodies:
        answer = app_env.client.put(url, json=bad)
        assert answer.status_code == 422, bad
    assert app_env.client.get(url).json() == expected


def test_unknown_member_and_pool_are_404(app_env):
    pool = _pool(app_env)
    assert app_env.client.get(f"/api/pools/{pool['id']}/members/999").status_code == 404
    assert app_env.client.get("/api/pools/999/members").status_code == 404


def test_viewer_reads_but_cannot_change(app_env):
    pool = _pool(app_env)
    viewer = app_env.as_role("viewer")
    assert app_env.client.get("/api/pools", headers=viewer).status_code == 200
    denied = app_env.client.post("/api/pools", json={"name": "other"}, headers=viewer)
    assert denied.status_code == 403
    assert "viewer" in denied.json()["detail"]
    assert app_env.client.delete(f"/api/pools/{pool['id']}", headers=viewer).status_code == 403
    assert app_env.client.get(f"/api/pools/{pool['id']}").status_code == 200


def test_operator_changes_pools_but_does_not_manage_users(app_env):
    operator = app_env.as_role("operator")
    assert (
        app_env.client.post("/api/pools", json={"name": "ops"}, headers=operator).status_code == 201
    )
    denied = app_env.client.post("/api/users", json={"name": "eve"}, headers=operator)
    assert denied.status_code == 403
    assert app_env.client.get("/api/audit", headers=operator).status_code == 403


def test_admin_creates_users_with_a_password_shown_once(app_env):
    created = app_env.client.post("/api/users", json={"name": "olivia", "role": "operator"})
    assert created.status_code == 201
    assert len(created.json()["password"]) >= 10
    listed = app_env.client.get("/api/users").json()
    assert "password" not in listed["items"][0]
    dup = app_env.client.post("/api/users", json={"name": "olivia"})
    assert dup.status_code == 409


def test_revoked_api_token_is_refused_at_once(app_env):
    made = app_env.client.post("/api/tokens", json={"name": "ci", "role": "viewer"}).json()
    headers = {"Authorization": f"Bearer {made['token']}"}
    assert app_env.client.get("/api/pools", headers=headers).status_code == 200
    assert app_env.client.delete(f"/api/tokens/{made['id']}").status_code == 204
    assert app_env.client.get("/api/pools", headers=headers).status_code == 401


def test_every_change_is_in_the_audit_log_with_who_and_from_where(app_env):
    pool = _pool(app_env)
    _member(app_env, pool["id"])
    app_env.client.put(f"/api/pools/{pool['id']}/failover", json={"delay_s": 15})
    app_env.client.delete(f"/api/pools/{pool['id']}")
    entries = app_env.client.get("/api/audit").json()["items"]
    actions = [e["action"] for e in entries]
    assert actions[:4] == ["pool.delete", "pool.failover.update", "member.create", "pool.create"]
    assert all(e["actor"] == "token:tests" for e in entries[:4])
    assert entries[0]["source_ip"] == "testclient"
    assert entries[1]["detail"]["after"]["delay_s"] == 15


def test_openapi_document_lists_the_pool_endpoints(app_env):
    paths = app_env.client.get("/openapi.json").json()["paths"]
    assert "/api/pools/{pool_id}/members/{member_id}/rotate-secret" in paths
    assert "/api/pools/{pool_id}/failover" in paths
