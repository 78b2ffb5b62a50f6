"""The Monitoring pages: the pool's tab, a member's sub-tab and Settings → Email."""

from __future__ import annotations

import re

import pytest

from serverctl.domain.principal import SYSTEM

PASSWORD = "web-smtp-pa55word"


def _login(env, role="operator", name=None):
    env.client.headers.pop("Authorization", None)
    name = name or f"{role}-user"
    _, password = env.state.operators.create_user(SYSTEM, name, role)
    env.client.post("/login", data={"name": name, "password": password})
    page = env.client.get("/pools")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


@pytest.fixture
def pool(app_env):
    created = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    app_env.state.pools.add_member(SYSTEM, created["id"], "edge-1", ["127.0.0.2"])
    return created


def test_pool_monitoring_tab_saves_recipients_and_alert_kinds(app_env, pool):
    csrf = _login(app_env)
    page = app_env.client.get("/pools/1/monitoring")
    assert page.status_code == 200
    assert "Settings → Email" in page.text and "No alerts yet." in page.text
    saved = app_env.client.post(
        "/pools/1/monitoring",
        data={
            "recipients": "ops@example.com\noncall@example.com",
            "email_failover.promoted": "on",
            "email_dns.failing": "on",
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/pools/1/monitoring?saved=1"
    settings = app_env.state.alerts.pool_alerts(SYSTEM, 1)
    assert settings["recipients"] == ["ops@example.com", "oncall@example.com"]
    assert settings["email_on"]["failover.promoted"] is True
    assert settings["email_on"]["failover.cooldown"] is False
    page = app_env.client.get(saved.headers["location"])
    assert "Saved." in page.text and "oncall@example.com" in page.text


def test_a_bad_recipient_is_shown_and_the_form_kept(app_env, pool):
    csrf = _login(app_env)
    answer = app_env.client.post(
        "/pools/1/monitoring",
        data={"recipients": "ops@example.com, not-an-address", "csrf_token": csrf},
    )
    assert answer.status_code == 422
    assert "&#39;not-an-address&#39; is not an email address" in answer.text
    assert "ops@example.com, not-an-address" in answer.text
    assert app_env.state.alerts.pool_alerts(SYSTEM, 1)["recipients"] == []


def test_send_test_email_button_shows_the_result(app_env, pool, smtp_server):
    app_env.state.smtp.set(SYSTEM, **smtp_server.settings())
    app_env.state.alerts.set_pool_alerts(SYSTEM, 1, recipients=["ops@example.com"])
    csrf = _login(app_env)
    answer = app_env.client.post(
        "/pools/1/monitoring/test", data={"csrf_token": csrf}, headers={"HX-Request": "true"}
    )
    assert answer.status_code == 200
    assert answer.text.startswith('<p class="ok" id="send-result" data-ok="true"')
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["ops@example.com"]
    # Without HTMX the whole page comes back with the result on it.
    page = app_env.client.post("/pools/1/monitoring/test", data={"csrf_token": csrf})
    assert "<html" in page.text and 'data-ok="true"' in page.text


def test_pool_history_lists_member_and_pool_alerts(app_env, pool):
    app_env.state.alerts.raise_alert(1, "failover.no_standby", "[edge] no standby", "nothing")
    app_env.state.alerts.raise_alert(
        1, "member.heartbeat_lost", "[edge] edge-1: heartbeat lost", "<b>gone</b>", member_id=1
    )
    _login(app_env, "viewer")
    page = app_env.client.get("/pools/1/monitoring")
    assert "[edge] no standby" in page.text and "[edge] edge-1: heartbeat lost" in page.text
    assert "&lt;b&gt;gone&lt;/b&gt;" in page.text
    assert "Send test email" not in page.text and ">Save<" not in page.text
    member_page = app_env.client.get("/pools/1/members/1/monitoring")
    assert "[edge] edge-1: heartbeat lost" in member_page.text
    assert "[edge] no standby" not in member_page.text


def test_member_monitoring_subtab_saves_thresholds(app_env, pool):
    csrf = _login(app_env)
    page = app_env.client.get("/pools/1/members/1/monitoring")
    assert page.status_code == 200
    assert 'href="/pools/1/members/1/monitoring" class="current"' in page.text
    assert 'name="threshold_member.heartbeat_lost"' in page.text
    assert "Monitoring</a>" in app_env.client.get("/pools/1/members/1/jobs").text
    saved = app_env.client.post(
        "/pools/1/members/1/monitoring",
        data={
            "enabled_member.heartbeat_lost": "on",
            "threshold_member.heartbeat_lost": "30",
            "email_member.heartbeat_lost": "on",
            "enabled_member.haproxy_down": "on",
            "threshold_member.haproxy_down": "10",
            "threshold_member.rejected": "5",
            "email_member.rejected": "on",
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303
    alerts = app_env.state.alerts.member_alerts(SYSTEM, 1, 1)["alerts"]
    assert alerts["member.heartbeat_lost"]["threshold"] == 30
    assert alerts["member.haproxy_down"]["email"] is False
    assert alerts["member.rejected"]["enabled"] is False


@pytest.mark.parametrize(
    ("value", "message"),
    [("2", "must be 5-86400 seconds, not 2"), ("soon", "threshold &#39;soon&#39; is not")],
)
def test_member_monitoring_refuses_a_bad_threshold(app_env, pool, value, message):
    csrf = _login(app_env)
    answer = app_env.client.post(
        "/pools/1/members/1/monitoring",
        data={"threshold_member.heartbeat_lost": value, "csrf_token": csrf},
    )
    assert answer.status_code == 422
    assert message in answer.text
    assert (
        app_env.state.alerts.member_alerts(SYSTEM, 1, 1)["alerts"]["member.heartbeat_lost"][
            "threshold"
        ]
        == 60
    )


def test_email_settings_page_saves_and_never_shows_the_password(app_env, smtp_server):
    csrf = _login(app_env, "admin")
    page = app_env.client.get("/settings/email")
    assert page.status_code == 200 and "Not configured yet" in page.text
    body = {**smtp_server.settings(), "password": PASSWORD, "username": "alerts"}
    saved = app_env.client.post(
        "/settings/email", data={**body, "csrf_token": csrf}, follow_redirects=False
    )
    assert saved.status_code == 303
    page = app_env.client.get(saved.headers["location"])
    assert "Saved." in page.text and "a password is set" in page.text
    assert PASSWORD not in page.text
    stored = app_env.state.smtp.load()
    assert stored is not None and stored.password == PASSWORD and stored.username == "alerts"
    # Saving again with the password box empty keeps it.
    app_env.client.post("/settings/email", data={**body, "password": "", "csrf_token": csrf})
    assert app_env.state.smtp.load().password == PASSWORD


def test_email_settings_errors_are_shown_with_the_form(app_env):
    csrf = _login(app_env, "admin")
    answer = app_env.client.post(
        "/settings/email",
        data={
            "host": "smtp.example.com",
            "port": "abc",
            "from_address": "a@example.com",
            "csrf_token": csrf,
        },
    )
    assert answer.status_code == 422
    assert "port &#39;abc&#39; is not a number" in answer.text
    assert 'value="smtp.example.com"' in answer.text


def test_operators_see_email_settings_but_only_admins_save(app_env, smtp_server):
    app_env.state.smtp.set(SYSTEM, **smtp_server.settings())
    csrf = _login(app_env, "operator")
    page = app_env.client.get("/settings/email")
    assert "Only admins change the SMTP server." in page.text
    refused = app_env.client.post(
        "/settings/email",
        data={
            "host": "evil.example.com",
            "port": "25",
            "security": "none",
            "from_address": "x@example.com",
            "csrf_token": csrf,
        },
    )
    assert refused.status_code == 403
    assert app_env.state.smtp.load().host == "127.0.0.1"
    tested = app_env.client.post(
        "/settings/email/test",
        data={"to": "me@example.com", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert 'data-ok="true"' in tested.text
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["me@example.com"]


def test_monitoring_forms_need_the_csrf_token(app_env, pool):
    _login(app_env, "admin")
    assert (
        app_env.client.post("/pools/1/monitoring", data={"recipients": "a@b.co"}).status_code == 403
    )
    assert app_env.client.post("/settings/email", data={"host": "x"}).status_code == 403
