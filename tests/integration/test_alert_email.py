"""Alert email against a real SMTP server (aiosmtpd): settings, test emails, delivery."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import text

from serverctl.db.types import utcnow
from serverctl.domain.alert_delivery import MAX_ATTEMPTS
from serverctl.domain.mailer import Mailer
from serverctl.domain.principal import SYSTEM
from serverctl.domain.smtp_settings import NOT_CONFIGURED
from support.smtp import SmtpServer
from support.tls import make_ca_and_server_cert
from support.util import free_port, wait_until

PASSWORD = "s3cret-smtp-pa55word"


def _pool(env, recipients=("ops@example.com", "oncall@example.com")):
    pool = env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    env.state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=list(recipients))
    return pool


def _alert_row(env, alert_id):
    return next(a for a in env.state.alerts.recent(1) if a["id"] == alert_id)


# -- settings -------------------------------------------------------------------------------------


def test_smtp_password_is_stored_encrypted_and_never_returned_or_audited(app_env, smtp_server):
    body = {**smtp_server.settings(), "username": "alerts", "password": PASSWORD}
    saved = app_env.client.put("/api/settings/smtp", json=body)
    assert saved.status_code == 200, saved.text
    answer = app_env.client.get("/api/settings/smtp").json()
    assert answer["password_set"] is True and answer["configured"] is True
    assert answer["username"] == "alerts" and answer["port"] == smtp_server.port
    assert PASSWORD not in saved.text and "password" not in saved.json()
    with app_env.state.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT key, value, secrets_encrypted FROM app_settings")).all()
        audit = conn.execute(text("SELECT action, detail FROM audit_log")).all()
    assert [r.key for r in rows] == ["smtp"]
    assert PASSWORD not in rows[0].value and PASSWORD not in rows[0].secrets_encrypted
    assert app_env.state.box.decrypt_json(rows[0].secrets_encrypted) == {"password": PASSWORD}
    entry = next(a for a in audit if a.action == "settings.smtp.update")
    assert PASSWORD not in entry.detail and '"password":"set"' in entry.detail


def test_an_empty_password_keeps_the_stored_one(app_env, tmp_path):
    with SmtpServer(user="alerts", password=PASSWORD) as smtp:
        app_env.client.put("/api/settings/smtp", json=smtp.settings())
        kept = {**smtp.settings(), "password": "", "from_address": "noc@example.com"}
        assert app_env.client.put("/api/settings/smtp", json=kept).json()["password_set"]
        sent = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
        assert sent.json()["ok"] is True, sent.json()
        assert smtp.wait_for(1)[0].login == "alerts"
        assert smtp.messages[0].mail_from == "noc@example.com"


def test_only_admins_change_smtp_settings_and_operators_may_test(app_env, smtp_server):
    operator = app_env.as_role("operator")
    answer = app_env.client.put("/api/settings/smtp", json=smtp_server.settings(), headers=operator)
    assert answer.status_code == 403
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    viewer = app_env.as_role("viewer")
    assert app_env.client.get("/api/settings/smtp", headers=viewer).status_code == 200
    test = {"to": ["ops@example.com"]}
    assert (
        app_env.client.post("/api/settings/smtp/test", json=test, headers=viewer).status_code == 403
    )
    assert app_env.client.post("/api/settings/smtp/test", json=test, headers=operator).json()["ok"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": 0}, "port must be 1-65535"),
        ({"security": "ssl"}, "security"),
        ({"host": "not a host"}, "is not a host name or IP address"),
        ({"from_address": "nobody"}, "is not an email address"),
        ({"smtp_host": "x"}, "smtp_host: Extra inputs are not permitted"),
        ({"password": "two\nlines", "username": "u"}, "password must be one line"),
    ],
)
def test_bad_smtp_settings_are_refused_with_a_clear_message(app_env, change, message):
    body = {"host": "smtp.example.com", "port": 587, "from_address": "a@example.com", **change}
    answer = app_env.client.put("/api/settings/smtp", json=body)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]
    assert app_env.client.get("/api/settings/smtp").json()["configured"] is False


# -- test emails ----------------------------------------------------------------------------------


def test_test_email_arrives_at_the_smtp_server(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    answer = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert answer.json() == {
        "ok": True,
        "detail": "test email accepted by the SMTP server for ops@example.com",
    }
    message = smtp_server.wait_for(1)[0]
    assert message.rcpt_tos == ["ops@example.com"]
    assert "ServerCTL test email" in message.subject
    assert "sent by token:tests" in message.body


def test_starttls_with_login_delivers_and_a_wrong_password_is_named(app_env, tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    app_env.state.smtp.mailer = Mailer(timeout=5, cafile=str(ca))
    with SmtpServer(mode="starttls", tls=(cert, key), user="alerts", password=PASSWORD) as smtp:
        app_env.client.put("/api/settings/smtp", json=smtp.settings())
        ok = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
        assert ok.json()["ok"] is True, ok.json()
        assert smtp.wait_for(1)[0].login == "alerts"
        wrong = {**smtp.settings(), "password": "not-the-password"}
        app_env.client.put("/api/settings/smtp", json=wrong)
        bad = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert bad.json()["ok"] is False
    assert bad.json()["detail"].startswith("SMTP server refused the login of user 'alerts'")
    assert "not-the-password" not in bad.text


def test_untrusted_tls_certificate_is_a_tls_error(app_env, tmp_path):
    _, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    with SmtpServer(mode="tls", tls=(cert, key)) as smtp:
        app_env.client.put("/api/settings/smtp", json=smtp.settings())
        answer = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert answer.json()["ok"] is False
    assert answer.json()["detail"].startswith(f"TLS error with 127.0.0.1:{smtp.port}")


def test_unreachable_smtp_server_says_it_cannot_reach_it(app_env):
    port = free_port()
    body = {"host": "127.0.0.1", "port": port, "security": "none", "from_address": "a@example.com"}
    app_env.client.put("/api/settings/smtp", json=body)
    answer = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert answer.json() == {
        "ok": False,
        "detail": f"cannot reach 127.0.0.1:{port}: Connection refused",
    }


def test_test_email_without_smtp_settings_says_where_to_set_them(app_env):
    answer = app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert answer.json() == {"ok": False, "detail": NOT_CONFIGURED}


def test_pool_test_email_goes_to_the_pool_recipients(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    empty = app_env.client.post(f"/api/pools/{pool['id']}/alerts/test").json()
    assert empty == {
        "ok": False,
        "detail": "pool edge has no alert recipients: add some and save first",
    }
    app_env.client.put(
        f"/api/pools/{pool['id']}/alerts",
        json={"recipients": ["ops@example.com", "oncall@example.com"]},
    )
    assert app_env.client.post(f"/api/pools/{pool['id']}/alerts/test").json()["ok"] is True
    message = smtp_server.wait_for(1)[0]
    assert message.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert message.subject.startswith("[edge] ")


def test_nothing_secret_reaches_the_logs(app_env, caplog):
    caplog.set_level(logging.DEBUG)
    with SmtpServer(user="alerts", password=PASSWORD) as smtp:
        app_env.client.put("/api/settings/smtp", json=smtp.settings())
        app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
        wrong = {**smtp.settings(), "password": "wrong-" + PASSWORD}
        app_env.client.put("/api/settings/smtp", json=wrong)
        app_env.client.post("/api/settings/smtp/test", json={"to": "ops@example.com"})
    assert PASSWORD not in caplog.text
    assert "refused the login" in caplog.text


# -- delivery of alerts ---------------------------------------------------------------------------


def test_failover_promoted_alert_reaches_the_pool_recipients(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    pool = _pool(app_env)
    alert_id = app_env.state.alerts.raise_alert(
        pool["id"],
        "failover.promoted",
        "[edge] failover: edge-2 is now active",
        "Automatic failover promoted edge-2 (203.0.113.12) because edge-1 was unhealthy.",
    )
    message = smtp_server.wait_for(1, timeout=3)[0]
    assert message.rcpt_tos == ["ops@example.com", "oncall@example.com"]
    assert message.subject == "[edge] failover: edge-2 is now active"
    assert "Automatic failover promoted edge-2" in message.body
    assert "Pool: edge" in message.body and "failover.promoted" in message.body
    assert "https://cp.example.net/pools/1/monitoring" in message.body
    row = wait_until(
        lambda: (a := _alert_row(app_env, alert_id))["email_state"] == "sent" and a,
        3,
        what="the alert marked sent",
    )
    assert row["email_error"] is None


def test_a_pool_alert_kind_turned_off_is_recorded_but_not_emailed(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    pool = _pool(app_env)
    app_env.client.put(
        f"/api/pools/{pool['id']}/alerts", json={"email_on": {"failover.cooldown": False}}
    )
    alert_id = app_env.state.alerts.raise_alert(pool["id"], "failover.cooldown", "held", "held")
    assert _alert_row(app_env, alert_id)["email_state"] == "none"
    history = app_env.client.get(f"/api/pools/{pool['id']}/alerts/history").json()
    assert [a["kind"] for a in history["items"]] == ["failover.cooldown"]
    assert history["items"][0]["title"] == "Automatic failover held back by the cool-down"


def test_alert_email_without_smtp_fails_saying_smtp_is_not_configured(app_env):
    pool = _pool(app_env)
    alert_id = app_env.state.alerts.raise_alert(pool["id"], "dns.failing", "dns", "failing")
    row = wait_until(
        lambda: (a := _alert_row(app_env, alert_id))["email_state"] == "failed" and a,
        3,
        what="the alert marked failed",
    )
    assert row["email_error"] == "SMTP is not configured (Settings → Email)"


def test_a_failing_email_is_retried_with_backoff_then_given_up(state):
    port = free_port()
    state.smtp.set(
        SYSTEM, host="127.0.0.1", port=port, security="none", from_address="a@example.com"
    )
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=["ops@example.com"])
    alert_id = state.alerts.raise_alert(pool["id"], "failover.no_standby", "none", "none")
    now = utcnow()
    assert state.delivery.run_once(now) == 0
    row = state.alerts.recent(pool["id"])[0]
    assert row["email_state"] == "pending"
    assert row["email_error"].startswith(f"try 1 of {MAX_ATTEMPTS} failed, next in 10 s: cannot")
    state.delivery.run_once(now + timedelta(seconds=5))  # not due yet: no new try
    assert state.alerts.recent(pool["id"])[0]["email_error"].startswith("try 1 of")
    for seconds in (11, 80, 400):
        state.delivery.run_once(now + timedelta(seconds=seconds))
    row = state.alerts.recent(pool["id"])[0]
    assert row["id"] == alert_id and row["email_state"] == "failed"
    assert row["email_error"] == (
        f"cannot reach 127.0.0.1:{port}: Connection refused (gave up after {MAX_ATTEMPTS} tries)"
    )


def test_a_retried_email_is_sent_once_the_server_answers(state):
    state.smtp.set(
        SYSTEM, host="127.0.0.1", port=free_port(), security="none", from_address="a@example.com"
    )
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=["ops@example.com"])
    state.alerts.raise_alert(pool["id"], "dns.failing", "[edge] DNS update keeps failing", "x")
    now = utcnow()
    state.delivery.run_once(now)
    with SmtpServer() as smtp:
        state.smtp.set(SYSTEM, **smtp.settings())
        assert state.delivery.run_once(now + timedelta(seconds=11)) == 1
        assert smtp.wait_for(1)[0].subject == "[edge] DNS update keeps failing"
    row = state.alerts.recent(pool["id"])[0]
    assert (row["email_state"], row["email_error"]) == ("sent", None)


def test_the_monitor_loop_raises_a_member_alert_and_it_is_emailed(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    pool = _pool(app_env, recipients=["ops@example.com"])
    created = app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"])
    app_env.state.live.members[created.member["id"]].last_seen = utcnow() - timedelta(minutes=5)
    message = smtp_server.wait_for(1, timeout=6)[0]
    assert message.subject == "[edge] edge-1: heartbeat lost"
    assert "Member: edge-1" in message.body
    history = app_env.client.get(f"/api/pools/{pool['id']}/members/1/alerts/history").json()
    assert [a["kind"] for a in history["items"]] == ["member.heartbeat_lost"]
    assert history["items"][0]["hostname"] == "edge-1"
