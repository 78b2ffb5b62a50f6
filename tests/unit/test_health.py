from datetime import UTC, datetime, timedelta

from serverctl.domain.health import evaluate

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
RUNNING = {"monitored": True, "active": True, "source": "systemd"}


def _eval(age_s: float | None, *, delay: int = 30, monitored: bool = True, haproxy=RUNNING):
    last_seen = None if age_s is None else NOW - timedelta(seconds=age_s)
    return evaluate(
        last_seen=last_seen, now=NOW, delay_s=delay, haproxy_monitored=monitored, haproxy=haproxy
    )


def test_member_without_heartbeat_is_pending():
    health = _eval(None)
    assert health.state == "pending"
    assert health.heartbeat_age_s is None


def test_recent_heartbeat_with_running_haproxy_is_healthy():
    health = _eval(0.8)
    assert (health.state, health.reason) == ("healthy", None)
    assert health.heartbeat_age_s == 0.8


def test_heartbeat_older_than_failover_delay_is_unhealthy_with_reason():
    health = _eval(31, delay=30)
    assert health.state == "unhealthy"
    assert "no heartbeat for 31 s" in (health.reason or "")
    assert "failover delay 30 s" in (health.reason or "")


def test_heartbeat_exactly_at_the_delay_is_still_healthy():
    assert _eval(30, delay=30).state == "healthy"


def test_monitored_haproxy_reported_inactive_is_unhealthy():
    health = _eval(1, haproxy={"monitored": True, "active": False, "source": "systemd"})
    assert health.state == "unhealthy"
    assert "HAProxy is not running (systemd reports inactive)" == health.reason


def test_monitored_haproxy_the_agent_cannot_see_is_unhealthy():
    health = _eval(1, haproxy={"monitored": False, "source": "none"})
    assert health.state == "unhealthy"
    assert "cannot see it" in (health.reason or "")


def test_inactive_haproxy_is_ignored_when_the_pool_does_not_monitor_it():
    health = _eval(1, monitored=False, haproxy={"monitored": True, "active": False})
    assert health.state == "healthy"


def test_silence_wins_over_haproxy_state():
    health = _eval(200, delay=120, haproxy={"monitored": True, "active": False})
    assert "no heartbeat" in (health.reason or "")
