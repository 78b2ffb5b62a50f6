"""The pool Overview (traffic-flow diagram, KPI tiles, Make active, Cut DNS to standby) and the
pool Settings tab, through the real web routes; DNS is a real PowerDNS server."""

from __future__ import annotations

import re

import pytest

from serverctl.domain.principal import SYSTEM
from support.util import wait_until
from support.webui import heartbeat, login

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def pool(app_env):
    """Pool `edge` with edge-1 (active) and edge-2; their secrets for heartbeats."""
    state = app_env.state
    created = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    one = state.pools.add_member(SYSTEM, created["id"], "edge-1", [EDGE_1])
    two = state.pools.add_member(SYSTEM, created["id"], "edge-2", [EDGE_2])
    return {"id": created["id"], "secrets": {"edge-1": one.secret, "edge-2": two.secret}}


def _beat(env, pool, *hostnames):
    for name in hostnames:
        heartbeat(env, pool["secrets"][name], name, EDGE_1 if name == "edge-1" else EDGE_2)


def _link(env, pool, pdns, ttl=30):
    account = env.state.dns_accounts.create(SYSTEM, "pdns", "powerdns", pdns.powerdns_config())
    env.state.pool_dns.link(
        SYSTEM, pool["id"], provider_id=account["id"], zone=pdns.zone, label="lb", ttl=ttl
    )


def _active_node(html):
    """The member id of the diagram's active node."""
    found = re.search(
        r'<g class="node member [a-z]+" data-member-id="(\d+)" data-role="active"', html
    )
    return int(found.group(1)) if found else None


def test_overview_draws_the_traffic_flow_with_the_active_member(app_env, pool):
    login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1")
    page = app_env.client.get("/pools/1")
    assert page.status_code == 200
    assert "<svg" in page.text and 'data-role="dns"' in page.text
    assert _active_node(page.text) == 1
    assert re.search(r'data-member-id="1" data-role="active" data-state="healthy"', page.text)
    assert re.search(r'data-member-id="2" data-role="standby" data-state="pending"', page.text)
    assert 'class="name">edge-1<title>' in page.text and 'class="name">edge-2<title>' in page.text
    assert "DNS not linked" in page.text
    assert re.search(r'data-kpi="healthy"><span>Healthy members</span><strong>1 / 2', page.text)
    assert re.search(r'data-kpi="ready">.*?<strong>0 / 1</strong>', page.text, re.S)
    # The live partial polled every 2 s carries the same diagram, and the tab dots.
    live = app_env.client.get("/pools/1/cards", headers={"HX-Request": "true"})
    assert _active_node(live.text) == 1 and 'hx-swap-oob="true"' in live.text
    # Tab bar: Overview, members, then the pool tools (Disaster Recovery: 2+ HAProxy members).
    tabs = re.search(r'<div class="tab-group tools">(.*?)</div>', page.text, re.S).group(1)
    assert re.findall(r">([A-Za-z ]+)</a>", tabs) == [
        "Disaster Recovery",
        "Monitoring",
        "Settings",
        "Managed DNS",
    ]


def test_kpis_count_cron_jobs_and_the_incident_shows(app_env, pool):
    state = app_env.state
    state.schedules.create(SYSTEM, 1, "haproxy.reload", "0 3 * * *")
    disabled = state.schedules.create(SYSTEM, 1, "haproxy.reload", "0 4 * * *")
    state.schedules.set_enabled(SYSTEM, 1, disabled["id"], False)
    state.pools.set_failover(SYSTEM, 1, automatic=True)
    heartbeat(app_env, pool["secrets"]["edge-1"], "edge-1", EDGE_1, haproxy_active=False)
    state.failover.evaluate()
    login(app_env, "val", "viewer")
    page = app_env.client.get("/pools/1")
    assert re.search(r'data-kpi="cron"><span>Cron jobs</span><strong>1</strong>', page.text)
    assert 'id="incident"' in page.text and "HAProxy is not running" in page.text
    assert re.search(r'data-member-id="1" data-role="active" data-state="unhealthy"', page.text)


def test_generic_linux_pools_show_no_traffic_flow(app_env):
    app_env.state.pools.create_pool(SYSTEM, "hosts", "linux")
    login(app_env)
    page = app_env.client.get("/pools/1")
    assert "<svg" not in page.text and 'id="dns-line"' in page.text


def test_make_active_and_cut_dns_are_refused_without_dns(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1", "edge-2")
    made = app_env.client.post("/pools/1/members/2/activate", data={"csrf_token": csrf})
    assert made.status_code == 409
    assert "DNS is not connected for pool &#39;edge&#39;" in made.text
    assert 'id="action-error"' in made.text
    assert _active_node(made.text) == 1
    cut = app_env.client.post("/pools/1/cutover", data={"csrf_token": csrf})
    assert cut.status_code == 409 and "DNS is not connected" in cut.text
    assert app_env.state.pools.get_pool(SYSTEM, 1)["active_member_id"] == 1


def test_cut_dns_without_a_ready_standby_says_so(app_env, pool, pdns):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1")
    _link(app_env, pool, pdns)
    cut = app_env.client.post("/pools/1/cutover", data={"csrf_token": csrf})
    assert cut.status_code == 409
    assert "no standby of pool &#39;edge&#39; is failover-ready" in cut.text
    # Make active on a standby that never sent a heartbeat names the reason too.
    made = app_env.client.post("/pools/1/members/2/activate", data={"csrf_token": csrf})
    assert made.status_code == 409
    assert "edge-2 has reported no public IPv4 address yet" in made.text


def test_make_active_moves_the_active_role_and_the_record(app_env, pool, pdns):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1", "edge-2")
    _link(app_env, pool, pdns)
    wait_until(lambda: pdns.query_a("lb") == [EDGE_1], 10, what="the first publication")
    before = app_env.client.get("/pools/1")
    assert 'data-action="make-active"' in before.text and 'data-action="publish"' in before.text
    assert "failover-ready" in before.text
    assert 'class="kind">PowerDNS · pdns</text>' in before.text  # the DNS node: kind and name
    assert 'data-fqdn="lb.demo.example"' in before.text

    made = app_env.client.post(
        "/pools/1/members/2/activate", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert made.status_code == 303
    assert made.headers["location"] == "/pools/1?done=activated&member=2"
    page = app_env.client.get(made.headers["location"])
    assert _active_node(page.text) == 2
    assert "edge-2 is now the active member" in page.text
    assert re.search(r'data-member-id="1" data-role="standby"', page.text)
    wait_until(lambda: pdns.query_a("lb") == [EDGE_2], 10, what="the record to move")

    def propagated():
        live = app_env.client.get("/pools/1/cards").text
        return "propagated in" in live and live

    live = wait_until(propagated, 10, what="the Overview to say propagated")
    assert _active_node(live) == 2
    last = re.search(r'data-kpi="last-failover">(.*?)</div>', live, re.S).group(1)
    assert "edge-1 → edge-2" in last and "manual" in last
    assert 'text-anchor="middle">A 127.0.0.3</text>' in live  # the arrow from DNS


def test_publish_again_on_the_active_member(app_env, pool, pdns):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1")
    _link(app_env, pool, pdns)
    again = app_env.client.post(
        "/pools/1/members/1/activate", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert again.headers["location"] == "/pools/1?done=republished&member=1"
    page = app_env.client.get(again.headers["location"])
    assert "The A record was published again for edge-1." in page.text
    assert _active_node(page.text) == 1


def test_cut_dns_to_standby_promotes_the_ready_standby(app_env, pool, pdns):
    csrf = login(app_env, "ops", "operator")
    _beat(app_env, pool, "edge-1", "edge-2")
    _link(app_env, pool, pdns)
    cut = app_env.client.post("/pools/1/cutover", data={"csrf_token": csrf})
    assert cut.status_code == 200
    assert "Cut DNS to standby: edge-2 is now active (was edge-1)." in cut.text
    assert _active_node(cut.text) == 2
    wait_until(lambda: pdns.query_a("lb") == [EDGE_2], 10, what="the record to move")


def test_viewers_see_the_overview_without_action_buttons(app_env, pool):
    csrf = login(app_env, "val", "viewer")
    page = app_env.client.get("/pools/1")
    assert _active_node(page.text) == 1
    for button in ('data-action="make-active"', 'id="cut-dns"', 'id="add-member"'):
        assert button not in page.text
    refused = app_env.client.post("/pools/1/members/2/activate", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert app_env.client.post("/pools/1/cutover", data={}).status_code == 403  # no CSRF


# -- Settings tab ---------------------------------------------------------------------------------


def test_settings_save_failover_and_recipients_and_show_the_worst_case(app_env, pool, pdns):
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/settings")
    assert "Worst-case failover time" in page.text
    assert "the record's TTL, once DNS is linked" in page.text
    _link(app_env, pool, pdns, ttl=45)
    saved = app_env.client.post(
        "/pools/1/settings",
        data={
            "csrf_token": csrf,
            "delay_s": "20",
            "automatic": "on",
            "haproxy_monitored": "on",
            "cooldown_s": "600",
            "recipients": "ops@example.com, oncall@example.com\nlead@example.com",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    failover = app_env.state.pools.get_pool(SYSTEM, 1)["failover"]
    assert (failover["automatic"], failover["delay_s"], failover["cooldown_s"]) == (True, 20, 600)
    assert failover["haproxy_monitored"] is True
    alerts = app_env.state.alerts.pool_alerts(SYSTEM, 1)
    assert alerts["recipients"] == ["ops@example.com", "oncall@example.com", "lead@example.com"]
    # 20 s delay + 1 s evaluation + 45 s TTL, on the Settings tab and on the Overview.
    assert '<output id="worst-case-total">66</output> s' in saved.text
    overview = app_env.client.get("/pools/1")
    assert re.search(r'data-kpi="worst-case">.*?<strong>66 s</strong>', overview.text, re.S)
    assert "automatic failover on" in overview.text


def test_settings_errors_are_shown_and_save_nothing(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    bad_mail = app_env.client.post(
        "/pools/1/settings",
        data={"csrf_token": csrf, "delay_s": "40", "automatic": "on", "recipients": "not-mail"},
    )
    assert bad_mail.status_code == 422
    assert "&#39;not-mail&#39; is not an email address" in bad_mail.text
    assert 'value="40"' in bad_mail.text  # what was typed stays in the form
    bad_cooldown = app_env.client.post(
        "/pools/1/settings", data={"csrf_token": csrf, "delay_s": "30", "cooldown_s": "7200"}
    )
    assert bad_cooldown.status_code == 422 and "0-3600" in bad_cooldown.text
    not_a_number = app_env.client.post(
        "/pools/1/settings", data={"csrf_token": csrf, "delay_s": "soon"}
    )
    assert not_a_number.status_code == 422 and "whole number of seconds" in not_a_number.text
    failover = app_env.state.pools.get_pool(SYSTEM, 1)["failover"]
    assert (failover["automatic"], failover["delay_s"], failover["cooldown_s"]) == (False, 30, 300)
    assert app_env.state.alerts.pool_alerts(SYSTEM, 1)["recipients"] == []


def test_viewers_see_settings_read_only(app_env, pool):
    csrf = login(app_env, "val", "viewer")
    page = app_env.client.get("/pools/1/settings")
    assert "<fieldset disabled>" in page.text and "Delete pool" not in page.text
    refused = app_env.client.post("/pools/1/settings", data={"csrf_token": csrf, "delay_s": "20"})
    assert refused.status_code == 403
