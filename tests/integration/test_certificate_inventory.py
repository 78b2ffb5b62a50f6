"""The certificate inventory on the control plane: `GET /api/pools/{id}/certificates` on a real
`serverctl serve` fed by stand-in agents, the Overview's Certificates card and the member's
Status tab, and the `member.certificate_expiring` alert and its email (real SMTP server).
DNS is a real PowerDNS server (the failover FQDN comes from the pool's DNS link)."""

from __future__ import annotations

import collections.abc
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest

from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from support.powerdns import PowerDNS
from support.server import serverctl_cli, start_server, stop_process
from support.standin_agent import StandInAgent, reported_cert
from support.webui import heartbeat, login

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
DAY = 86_400
CERTS = "/etc/haproxy/certs"


# -- the API on a real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("certs")
    with PowerDNS(root / "pdns") as pdns:
        cp = start_server(root / "cp")
        clients = [
            httpx.Client(
                base_url=cp.url, timeout=10, transport=httpx.HTTPTransport(local_address=ip)
            )
            for ip in (EDGE_1, EDGE_2)
        ]
        api = cp.api()
        try:
            pool = api.post("/api/pools", json={"name": "edge", "template": "haproxy"}).json()
            agents = []
            for (hostname, ip), client in zip(
                (("edge-1", EDGE_1), ("edge-2", EDGE_2)), clients, strict=True
            ):
                made = api.post(
                    f"/api/pools/{pool['id']}/members",
                    json={"hostname": hostname, "allowed_ips": [ip]},
                ).json()
                agent = StandInAgent(client, made["secret"], hostname, ip, member_id=made["id"])
                agent.heartbeat()
                agents.append(agent)
            provider = api.post(
                "/api/dns-providers",
                json={"name": "pdns", "kind": "powerdns", "config": pdns.powerdns_config()},
            ).json()
            linked = api.put(
                f"/api/pools/{pool['id']}/dns",
                json={"provider_id": provider["id"], "zone": pdns.zone, "label": "lb", "ttl": 30},
            )
            assert linked.status_code == 200, linked.text
            yield {"cp": cp, "api": api, "pool": pool, "agents": agents, "fqdn": f"lb.{pdns.zone}"}
        finally:
            api.close()
            for client in clients:
                client.close()
            stop_process(cp.process)


def _get(world: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return world["api"].get(f"/api/pools/{world['pool']['id']}/certificates", headers=headers)


def test_the_api_lists_every_members_certificates_with_days_left(world):
    fqdn = world["fqdn"]
    failover = f"{CERTS}/{fqdn}.pem"
    one, two = world["agents"]
    one.heartbeat(
        certificates=[
            reported_cert(failover, 10.5, fqdn, "www." + fqdn.split(".", 1)[1]),
            {"path": f"{CERTS}/broken.pem", "referenced": False, "error": "not a certificate"},
        ]
    )
    two.heartbeat(certificates=[reported_cert(failover, 80.5, fqdn)])
    answer = _get(world)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["pool_id"], body["fqdn"], body["failover_path"]) == (
        world["pool"]["id"],
        fqdn,
        failover,
    )
    assert body["total"] == 3
    first, broken, other = body["items"]
    assert first["hostname"] == "edge-1" and first["member_id"] == one.member_id
    assert (first["days_left"], first["status"], first["failover_cert"]) == (10, "expiring", True)
    assert first["sans"] == [fqdn, "www." + fqdn.split(".", 1)[1]]
    assert first["issuer"] == "CN=Pebble Intermediate CA" and first["serial"] == "0A1B2C"
    assert first["referenced"] is True and "error" not in first
    expiry = datetime.fromisoformat(first["not_after"].replace("Z", "+00:00"))
    assert expiry.tzinfo is not None and expiry.utcoffset() == timedelta(0)
    assert abs(expiry.timestamp() - (time.time() + 10.5 * DAY)) < 60
    assert broken == {
        "member_id": one.member_id,
        "hostname": "edge-1",
        "path": f"{CERTS}/broken.pem",
        "subject": None,
        "sans": [],
        "issuer": None,
        "not_after": None,
        "days_left": None,
        "serial": None,
        "referenced": False,
        "status": "error",
        "failover_cert": False,
        "error": "not a certificate",
    }
    assert (other["hostname"], other["days_left"], other["status"]) == ("edge-2", 80, "ok")
    assert [(m["hostname"], m["reporting"], m["failover_days_left"]) for m in body["members"]] == [
        ("edge-1", True, 10),
        ("edge-2", True, 80),
    ]


def test_unknown_pool_is_404_and_a_viewer_may_read(world):
    missing = world["api"].get("/api/pools/999/certificates")
    assert missing.status_code == 404 and "pool" in missing.json()["detail"]
    made = serverctl_cli(
        "tokens",
        "create",
        "--name",
        "cert-viewer",
        "--role",
        "viewer",
        data_dir=world["cp"].data_dir,
    )
    assert made.returncode == 0, made.stderr
    viewer = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    assert _get(world, viewer).status_code == 200
    assert (
        world["api"]
        .get(
            f"/api/pools/{world['pool']['id']}/certificates", headers={"Authorization": "Bearer x"}
        )
        .status_code
        == 401
    )


def test_a_heartbeat_with_a_bad_certificates_entry_is_refused_naming_the_field(world):
    agent = world["agents"][1]
    bad = [reported_cert(f"{CERTS}/a.pem", 5, "a.example.com", not_after="2027-01-01")]
    answer = agent.send_heartbeat(certificates=bad)
    assert answer.status_code == 422
    assert "haproxy.certificates[0].not_after" in answer.json()["detail"]


def test_the_list_stands_between_the_beats_that_carry_it(world):
    agent = world["agents"][1]
    agent.heartbeat(
        certificates=[reported_cert(f"{CERTS}/{world['fqdn']}.pem", 50.5, world["fqdn"])]
    )
    agent.heartbeat()  # the next beats leave the key out
    items = _get(world).json()["items"]
    assert [i["days_left"] for i in items if i["hostname"] == "edge-2"] == [50]


# -- the pages ------------------------------------------------------------------------------------

HOSTILE = "<script>cert()</script>.example.com"


@pytest.fixture
def web_pool(app_env, pdns):
    state = app_env.state
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    one = state.pools.add_member(SYSTEM, pool["id"], "edge-1", [EDGE_1])
    two = state.pools.add_member(SYSTEM, pool["id"], "edge-2", [EDGE_2])
    account = state.dns_accounts.create(SYSTEM, "pdns", "powerdns", pdns.powerdns_config())
    state.pool_dns.link(
        SYSTEM, pool["id"], provider_id=account["id"], zone=pdns.zone, label="lb", ttl=30
    )
    fqdn = f"lb.{pdns.zone}"
    failover = f"{CERTS}/{fqdn}.pem"
    heartbeat(
        app_env,
        one.secret,
        "edge-1",
        EDGE_1,
        certificates=[
            reported_cert(failover, 3.5, fqdn, HOSTILE),
            reported_cert(f"{CERTS}/old.pem", -40, "old.example.com", referenced=False),
        ],
    )
    heartbeat(
        app_env, two.secret, "edge-2", EDGE_2, certificates=[reported_cert(failover, 60.5, fqdn)]
    )
    return {"id": pool["id"], "fqdn": fqdn, "members": (one.member["id"], two.member["id"])}


def test_overview_warns_and_shows_each_members_failover_certificate(app_env, web_pool):
    login(app_env, "viewer-1", "viewer")
    page = app_env.client.get(f"/pools/{web_pool['id']}")
    assert page.status_code == 200
    html = page.text
    assert "<script>cert()" not in html
    banner = re.search(
        r'<p class="error" role="alert" id="certificate-warning"(.*?)</p>', html, re.S
    )
    assert banner, html
    # Only the loaded certificate counts: the expired file nobody loads is listed, not warned of.
    assert "1 TLS certificate needs renewing" in banner.group(1)
    assert "&lt;script&gt;cert()&lt;/script&gt;.example.com" in banner.group(1)
    assert "Let's Encrypt (failover / HAProxy)" in banner.group(1)
    assert "tls.acme_renew_force" in banner.group(1)
    card = re.search(r'<section class="card" id="certificates">(.*?)</section>', html, re.S)
    assert card and f"/etc/haproxy/certs/{web_pool['fqdn']}.pem" in card.group(1)
    one, two = web_pool["members"]
    row1 = re.search(rf'<tr data-member-id="{one}" data-status="critical">(.*?)</tr>', html, re.S)
    row2 = re.search(rf'<tr data-member-id="{two}" data-status="ok">(.*?)</tr>', html, re.S)
    assert row1 and re.search(r'class="days-left"><strong>3 days</strong>', row1.group(1))
    assert row2 and '<td class="days-left">60 days</td>' in row2.group(1)


def test_overview_without_certificates_shows_no_banner(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "plain", "haproxy")
    login(app_env, "viewer-2", "viewer")
    html = app_env.client.get(f"/pools/{pool['id']}").text
    assert 'id="certificate-warning"' not in html and 'id="certificates"' not in html


def test_status_tab_lists_the_members_certificates_escaped(app_env, web_pool):
    login(app_env, "viewer-3", "viewer")
    one, two = web_pool["members"]
    html = app_env.client.get(f"/pools/{web_pool['id']}/members/{one}/status").text
    assert "<script>cert()" not in html
    table = re.search(r'<table class="list" id="certificates-table">(.*?)</table>', html, re.S)
    assert table, html
    rows = re.findall(
        r'<tr data-path="([^"]+)" data-status="([a-z]+)">(.*?)</tr>', table.group(1), re.S
    )
    assert [(path, status) for path, status, _ in rows] == [
        (f"{CERTS}/{web_pool['fqdn']}.pem", "critical"),
        (f"{CERTS}/old.pem", "expired"),
    ]
    assert "&lt;script&gt;cert()&lt;/script&gt;.example.com" in rows[0][2]
    assert (
        "failover certificate" in rows[0][2] and '<td class="days-left">3 days</td>' in rows[0][2]
    )
    assert '<td class="days-left">expired 40 days ago</td>' in rows[1][2]
    # A member whose agent never reported certificates says so.
    pool = app_env.state.pools.create_pool(SYSTEM, "bare", "haproxy")
    bare = app_env.state.pools.add_member(SYSTEM, pool["id"], "bare-1", ["127.0.0.9"])
    page = app_env.client.get(f"/pools/{pool['id']}/members/{bare.member['id']}/status").text
    assert "The agent has not reported any certificate" in page


# -- the alert ------------------------------------------------------------------------------------


def _report(state, member_id: int, at: datetime, certificates: list[dict]) -> None:
    live = state.live.members[member_id]
    haproxy = {"monitored": True, "active": True, "source": "systemd"}
    state.live.record_heartbeat(
        live,
        now=at,
        ip="127.0.0.2",
        version="1.0",
        haproxy={**haproxy, "certificates": certificates},
    )


def _expiring(state, pool_id: int) -> list[dict]:
    return [a for a in state.alerts.recent(pool_id) if a["kind"] == "member.certificate_expiring"]


def test_an_expiring_certificate_alerts_once_and_resolves_when_renewed(state):
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=["ops@example.com"])
    member = state.pools.add_member(SYSTEM, pool["id"], "edge-1", [EDGE_1]).member
    t0 = utcnow()
    path = f"{CERTS}/lb.example.com.pem"
    _report(state, member["id"], t0, [reported_cert(path, 20, "lb.example.com")])
    assert state.monitors.run_once(t0) == []
    # 13.5 days left: under the default 14.
    _report(
        state, member["id"], t0, [reported_cert(path, 13.5, "lb.example.com", "www.example.com")]
    )
    assert len(state.monitors.run_once(t0)) == 1
    assert state.monitors.run_once(t0 + timedelta(seconds=2)) == []
    [alert] = _expiring(state, pool["id"])
    assert alert["subject"] == "[edge] edge-1: TLS certificate expires in 13 days"
    assert path in alert["message"] and "lb.example.com, www.example.com" in alert["message"]
    expiry = datetime.fromtimestamp(int(time.time() + 13.5 * DAY), UTC)
    assert f"expires on {expiry:%Y-%m-%d}" in alert["message"]
    assert "Let's Encrypt (failover / HAProxy)" in alert["message"]
    assert "tls.acme_renew_force" in alert["message"]
    assert alert["email_state"] == "pending" and alert["resolved_at"] is None
    # Renewed: the agent reports the new one.
    _report(state, member["id"], t0, [reported_cert(path, 89, "lb.example.com", "www.example.com")])
    state.monitors.run_once(t0 + timedelta(seconds=4))
    assert _expiring(state, pool["id"])[0]["resolved_at"] is not None


def test_the_threshold_is_the_members_own_and_unloaded_files_are_ignored(state):
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    member = state.pools.add_member(SYSTEM, pool["id"], "edge-1", [EDGE_1]).member
    t0 = utcnow()
    lying = reported_cert(f"{CERTS}/old.pem", -3, "old.example.com", referenced=False)
    _report(state, member["id"], t0, [lying, reported_cert(f"{CERTS}/a.pem", 20, "a.example.com")])
    assert state.monitors.run_once(t0) == []
    state.alerts.set_member_alerts(
        SYSTEM, pool["id"], member["id"], {"member.certificate_expiring": {"threshold": 21}}
    )
    assert len(state.monitors.run_once(t0)) == 1
    [alert] = _expiring(state, pool["id"])
    assert "old.pem" not in alert["message"] and "threshold 21 days" in alert["message"]
    with pytest.raises(Exception, match="must be 1-60 days"):
        state.alerts.set_member_alerts(
            SYSTEM, pool["id"], member["id"], {"member.certificate_expiring": {"threshold": 61}}
        )


def test_the_expiry_alert_is_emailed(app_env, smtp_server):
    app_env.client.put("/api/settings/smtp", json=smtp_server.settings())
    state = app_env.state
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    state.alerts.set_pool_alerts(SYSTEM, pool["id"], recipients=["ops@example.com"])
    made = state.pools.add_member(SYSTEM, pool["id"], "edge-1", [EDGE_1])
    expired = reported_cert(f"{CERTS}/shop.pem", -1.5, "shop.example.com")
    heartbeat(app_env, made.secret, "edge-1", EDGE_1, certificates=[expired])
    message = smtp_server.wait_for(1, timeout=6)[0]
    assert message.subject == "[edge] edge-1: TLS certificate has expired"
    assert "/etc/haproxy/certs/shop.pem (shop.example.com) expired on" in message.body
    assert "tls.acme_renew_force" in message.body
