"""The web UI through its real routes: login, CSRF, roles, escaping."""

from __future__ import annotations

import re

from serverctl.domain.principal import SYSTEM


def _login(env, name="webadmin", role="admin"):
    env.client.headers.pop("Authorization", None)
    _, password = env.state.operators.create_user(SYSTEM, name, role)
    answer = env.client.post(
        "/login", data={"name": name, "password": password}, follow_redirects=False
    )
    assert answer.status_code == 303
    page = env.client.get("/pools")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    return csrf.group(1)


def test_pages_redirect_to_login_without_a_session(app_env):
    app_env.client.headers.pop("Authorization")
    answer = app_env.client.get("/pools/1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/pools/1"


def test_wrong_password_shows_an_error_and_sets_no_cookie(app_env):
    app_env.client.headers.pop("Authorization")
    app_env.state.operators.create_user(SYSTEM, "amy", "admin", "a-long-password")
    answer = app_env.client.post("/login", data={"name": "amy", "password": "wrong-password"})
    assert answer.status_code == 401
    assert "wrong user name or password" in answer.text
    assert "serverctl_session" not in answer.cookies


def test_login_never_redirects_off_site(app_env):
    app_env.client.headers.pop("Authorization")
    _, password = app_env.state.operators.create_user(SYSTEM, "bob", "admin")
    answer = app_env.client.post(
        "/login",
        data={"name": "bob", "password": password, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/pools"


def test_session_cookie_is_http_only(app_env):
    app_env.client.headers.pop("Authorization")
    _, password = app_env.state.operators.create_user(SYSTEM, "cat", "admin")
    answer = app_env.client.post(
        "/login", data={"name": "cat", "password": password}, follow_redirects=False
    )
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_form_posts_without_the_csrf_token_are_refused_and_change_nothing(app_env):
    _login(app_env)
    answer = app_env.client.post("/pools", data={"name": "sneaky", "template": "haproxy"})
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert app_env.state.pools.list_pools(SYSTEM) == []


def test_create_pool_and_member_from_the_ui_shows_the_install_command_once(app_env):
    csrf = _login(app_env)
    created = app_env.client.post(
        "/pools",
        data={"name": "production-edge", "template": "haproxy", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert created.status_code == 303
    pool_url = created.headers["location"].split("?")[0]
    overview = app_env.client.get(created.headers["location"])
    assert "setup-banner" in overview.text
    added = app_env.client.post(
        f"{pool_url}/members",
        data={
            "hostname": "edge-1",
            "allowed_ips": "203.0.113.10, 203.0.113.11",
            "csrf_token": csrf,
        },
    )
    assert added.status_code == 201
    command = re.search(r'id="install-command-text">([^<]+)<', added.text).group(1)
    assert "--hostname edge-1" in command and "will not be shown again" in added.text
    secret = re.search(r"--key (\S+)", command).group(1)
    assert secret not in app_env.client.get(pool_url).text
    member = app_env.state.pools.list_members(SYSTEM, 1)[0]
    assert member["allowed_ips"] == ["203.0.113.10", "203.0.113.11"]


def test_bad_member_input_in_the_ui_is_shown_and_keeps_the_form(app_env):
    csrf = _login(app_env)
    app_env.client.post("/pools", data={"name": "edge", "csrf_token": csrf})
    answer = app_env.client.post(
        "/pools/1/members",
        data={"hostname": "edge-1", "allowed_ips": "not-an-ip", "csrf_token": csrf},
    )
    assert answer.status_code == 422
    assert "is not an IP address" in answer.text
    assert 'value="edge-1"' in answer.text


def test_viewer_sees_no_change_forms_and_is_refused_if_it_posts(app_env):
    app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    csrf = _login(app_env, "vera", "viewer")
    page = app_env.client.get("/pools/1")
    assert "Add member" not in page.text
    answer = app_env.client.post(
        "/pools/1/members",
        data={"hostname": "edge-1", "allowed_ips": "203.0.113.10", "csrf_token": csrf},
    )
    assert answer.status_code == 403
    assert app_env.state.pools.list_members(SYSTEM, 1) == []


def test_markup_in_names_is_escaped(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["203.0.113.10"])
    app_env.state.operators.create_token(SYSTEM, "<script>alert(1)</script>", "viewer")
    _login(app_env)
    page = app_env.client.get("/admin")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_logout_ends_the_session(app_env):
    csrf = _login(app_env)
    answer = app_env.client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.headers["location"] == "/login"
    assert app_env.client.get("/pools", follow_redirects=False).status_code == 303


def test_settings_form_saves_failover_settings_and_shows_errors(app_env):
    csrf = _login(app_env)
    app_env.client.post("/pools", data={"name": "edge", "csrf_token": csrf})
    saved = app_env.client.post("/pools/1/settings", data={"delay_s": "12", "csrf_token": csrf})
    assert "Saved." in saved.text
    failover = app_env.state.pools.get_pool(SYSTEM, 1)["failover"]
    assert (failover["delay_s"], failover["haproxy_monitored"]) == (12, False)
    bad = app_env.client.post("/pools/1/settings", data={"delay_s": "500", "csrf_token": csrf})
    assert bad.status_code == 422 and "10-120" in bad.text


def test_htmx_poll_after_logout_sends_the_browser_to_login(app_env):
    app_env.client.headers.pop("Authorization")
    answer = app_env.client.get("/pools/1/cards", headers={"HX-Request": "true"})
    assert answer.status_code == 204
    assert answer.headers["HX-Redirect"].startswith("/login")
