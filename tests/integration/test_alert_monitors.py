"""Member monitors: heartbeat lost, HAProxy down and rejected heartbeats, once per incident."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serverctl.db.types import utcnow
from serverctl.domain.live import Rejection
from serverctl.domain.principal import SYSTEM
from serverctl.loops.flush import flush_once

UP = {"monitored": True, "active": True, "source": "systemd"}
DOWN = {"monitored": True, "active": False, "source": "systemd"}


@pytest.fixture
def member(state):
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=["ops@example.com"])
    created = state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"])
    return created.member


def _beat(state, member_id, at, haproxy=UP):
    live = state.live.members[member_id]
    state.live.record_heartbeat(live, now=at, ip="127.0.0.2", version="1.0", haproxy=dict(haproxy))


def _alerts(state, kind=None):
    rows = state.alerts.recent(1)
    return [a for a in rows if kind is None or a["kind"] == kind]


def test_heartbeat_lost_is_raised_once_per_incident_and_resolved(state, member):
    t0 = utcnow()
    _beat(state, member["id"], t0)
    assert state.monitors.run_once(t0 + timedelta(seconds=59)) == []
    raised = state.monitors.run_once(t0 + timedelta(seconds=61))
    assert len(raised) == 1
    for seconds in (63, 90, 300):
        assert state.monitors.run_once(t0 + timedelta(seconds=seconds)) == []
    [alert] = _alerts(state)
    assert alert["kind"] == "member.heartbeat_lost" and alert["member_id"] == member["id"]
    assert alert["subject"] == "[edge] edge-1: heartbeat lost"
    assert "No heartbeat from edge-1 (pool edge) for 61 s" in alert["message"]
    assert alert["resolved_at"] is None and alert["email_state"] == "pending"
    _beat(state, member["id"], t0 + timedelta(seconds=301))
    assert state.monitors.run_once(t0 + timedelta(seconds=302)) == []
    [alert] = _alerts(state)
    assert alert["resolved_at"] == t0 + timedelta(seconds=302)
    # A second silence is a second incident.
    assert len(state.monitors.run_once(t0 + timedelta(seconds=400))) == 1
    assert [a["resolved_at"] is None for a in _alerts(state)] == [True, False]


def test_a_member_that_never_sent_a_heartbeat_is_not_lost(state, member):
    assert state.monitors.run_once(utcnow() + timedelta(hours=1)) == []


def test_the_heartbeat_threshold_is_the_members_own(state, member):
    state.alerts.set_member_alerts(
        SYSTEM, 1, member["id"], {"member.heartbeat_lost": {"threshold": 10}}
    )
    t0 = utcnow()
    _beat(state, member["id"], t0)
    assert len(state.monitors.run_once(t0 + timedelta(seconds=11))) == 1


def test_haproxy_down_is_raised_after_the_threshold_once_and_resolved(state, member):
    t0 = utcnow()
    _beat(state, member["id"], t0, DOWN)
    assert state.monitors.run_once(t0) == []
    _beat(state, member["id"], t0 + timedelta(seconds=9), DOWN)
    assert state.monitors.run_once(t0 + timedelta(seconds=9)) == []
    _beat(state, member["id"], t0 + timedelta(seconds=10), DOWN)
    assert len(state.monitors.run_once(t0 + timedelta(seconds=10))) == 1
    _beat(state, member["id"], t0 + timedelta(seconds=20), DOWN)
    assert state.monitors.run_once(t0 + timedelta(seconds=20)) == []
    [alert] = _alerts(state, "member.haproxy_down")
    assert alert["subject"] == "[edge] edge-1: HAProxy is down"
    assert "not running (systemd reports it inactive) for 10 s" in alert["message"]
    _beat(state, member["id"], t0 + timedelta(seconds=21), UP)
    state.monitors.run_once(t0 + timedelta(seconds=21))
    [alert] = _alerts(state, "member.haproxy_down")
    assert alert["resolved_at"] == t0 + timedelta(seconds=21)
    assert _alerts(state, "member.heartbeat_lost") == []


def test_haproxy_state_from_a_silent_agent_is_not_judged(state, member):
    t0 = utcnow()
    _beat(state, member["id"], t0, DOWN)
    state.monitors.run_once(t0)
    raised = state.monitors.run_once(t0 + timedelta(seconds=30))
    assert raised == []
    assert _alerts(state, "member.haproxy_down") == []


def test_haproxy_down_is_not_watched_where_haproxy_is_not_monitored(state):
    pool = state.pools.create_pool(SYSTEM, "linux-hosts", "linux")
    created = state.pools.add_member(SYSTEM, pool["id"], "host-1", ["127.0.0.3"])
    t0 = utcnow()
    for seconds in (0, 5, 11, 12):
        _beat(state, created.member["id"], t0 + timedelta(seconds=seconds), DOWN)
        assert state.monitors.run_once(t0 + timedelta(seconds=seconds)) == []


def test_rejected_heartbeats_raise_once_and_resolve_after_the_window(state, member):
    t0 = utcnow()
    for i in range(4):
        rejection = Rejection(t0 + timedelta(seconds=i), 403, "not allowed", "198.51.100.7")
        state.live.record_rejection(member["id"], rejection)
    assert state.monitors.run_once(t0 + timedelta(seconds=5)) == []
    flush_once(state.db, state.live, include_seen=False)  # now counted from the table
    state.live.record_rejection(
        member["id"], Rejection(t0 + timedelta(seconds=6), 403, "not allowed", "198.51.100.7")
    )
    assert len(state.monitors.run_once(t0 + timedelta(seconds=7))) == 1
    flush_once(state.db, state.live, include_seen=False)
    assert state.monitors.run_once(t0 + timedelta(seconds=60)) == []
    [alert] = _alerts(state, "member.rejected")
    assert "5 requests from the agent of edge-1" in alert["message"]
    assert "403 from 198.51.100.7: not allowed" in alert["message"]
    state.monitors.run_once(t0 + timedelta(seconds=320))
    assert _alerts(state, "member.rejected")[0]["resolved_at"] is not None


def test_turning_an_alert_off_resolves_it_and_stops_it(state, member):
    t0 = utcnow()
    _beat(state, member["id"], t0)
    state.monitors.run_once(t0 + timedelta(seconds=61))
    state.alerts.set_member_alerts(
        SYSTEM, 1, member["id"], {"member.heartbeat_lost": {"enabled": False}}
    )
    assert _alerts(state)[0]["resolved_at"] is not None
    assert state.monitors.run_once(t0 + timedelta(seconds=200)) == []
    assert len(_alerts(state)) == 1


def test_member_alert_email_follows_the_members_email_flag(state, member):
    state.alerts.set_member_alerts(
        SYSTEM, 1, member["id"], {"member.heartbeat_lost": {"email": False}}
    )
    t0 = utcnow()
    _beat(state, member["id"], t0)
    state.monitors.run_once(t0 + timedelta(seconds=61))
    assert _alerts(state)[0]["email_state"] == "none"


def test_member_alert_settings_api_validates_and_audits(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"])
    url = "/api/pools/1/members/1/alerts"
    got = app_env.client.get(url).json()
    assert got["alerts"]["member.heartbeat_lost"] == {
        "enabled": True,
        "threshold": 60,
        "email": True,
        "title": "Heartbeat lost",
        "unit": "seconds",
        "help": "no heartbeat for longer than this",
        "default": 60,
        "min": 5,
        "max": 86400,
        "open": False,
    }
    for body, message in [
        ({"alerts": {"member.heartbeat_lost": {"threshold": 3}}}, "must be 5-86400 seconds"),
        ({"alerts": {"member.cpu": {"enabled": True}}}, "unknown member alert kind"),
        ({"alerts": {"member.rejected": {"threshold": 5, "x": 1}}}, "Extra inputs"),
        ({"alerts": {"member.rejected": {"threshold": "many"}}}, "valid integer"),
    ]:
        answer = app_env.client.put(url, json=body)
        assert answer.status_code == 422, body
        assert message in answer.json()["detail"], answer.json()
    changed = app_env.client.put(
        url, json={"alerts": {"member.haproxy_down": {"threshold": 30, "email": False}}}
    )
    assert changed.status_code == 200
    after = changed.json()["alerts"]["member.haproxy_down"]
    assert (after["threshold"], after["email"], after["enabled"]) == (30, False, True)
    audit = app_env.client.get("/api/audit").json()["items"]
    assert audit[0]["action"] == "member.alerts.update"
    assert audit[0]["detail"]["after"]["member.haproxy_down"]["threshold"] == 30
    viewer = app_env.as_role("viewer")
    assert app_env.client.put(url, json={"alerts": {}}, headers=viewer).status_code == 403
    assert app_env.client.get("/api/pools/1/members/9/alerts").status_code == 404
    history = app_env.client.get(f"{url}/history").json()
    assert history == {"items": [], "total": 0}
