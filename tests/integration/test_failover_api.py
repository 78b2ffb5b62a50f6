"""Managed DNS, cutover and failover through the REST API, against a real `serverctl serve`
and a real PowerDNS server; members are simulated by heartbeats sent from their own loopback
addresses, so each rule is pinned without waiting for real agents."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx2 as httpx
import pytest

from support.server import start_server, stop_process
from support.util import wait_until

EDGE_1, EDGE_2, EDGE_3 = "127.0.0.2", "127.0.0.3", "127.0.0.4"


class Beater:
    """Heartbeats of one member from its own address, with a HAProxy state to report."""

    def __init__(self, url: str, secret: str, hostname: str, ip: str) -> None:
        self.url, self.secret, self.hostname, self.ip = url, secret, hostname, ip
        self.haproxy_active = True
        self.declared_ip = ip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> httpx.Response:
        transport = httpx.HTTPTransport(local_address=self.ip)
        with httpx.Client(transport=transport, base_url=self.url, timeout=5) as client:
            return client.post(
                "/api/agents/heartbeat",
                json={
                    "ip": self.declared_ip,
                    "hostname": self.hostname,
                    "version": "0.1.0",
                    "haproxy": {
                        "monitored": True,
                        "active": self.haproxy_active,
                        "source": "pidfile",
                    },
                },
                headers={"Authorization": f"Bearer {self.secret}"},
            )

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.beat()
                self._stop.wait(0.3)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def cp(tmp_path):
    server = start_server(tmp_path / "cp")
    yield server
    stop_process(server.process)


@pytest.fixture
def world(cp, pdns):
    api = cp.api()
    pool = api.post("/api/pools", json={"name": "edge"}).json()
    beaters = []
    for hostname, ip in (("edge-1", EDGE_1), ("edge-2", EDGE_2)):
        member = api.post(
            f"/api/pools/{pool['id']}/members", json={"hostname": hostname, "allowed_ips": [ip]}
        ).json()
        beater = Beater(cp.url, member["secret"], hostname, ip)
        beater.member_id = member["id"]
        beater.start()
        beaters.append(beater)
    provider = api.post(
        "/api/dns-providers",
        json={"name": "pdns", "kind": "powerdns", "config": pdns.powerdns_config()},
    ).json()
    url = f"/api/pools/{pool['id']}"
    wait_until(lambda: api.get(url).json()["healthy_count"] == 2, 10, what="two healthy members")
    yield {
        "api": api,
        "pool": pool,
        "url": url,
        "beaters": beaters,
        "provider": provider,
        "pdns": pdns,
        "cp": cp,
    }
    for beater in beaters:
        beater.stop()
    api.close()


def _link(world, **extra):
    body = {
        "provider_id": world["provider"]["id"],
        "zone": world["pdns"].zone,
        "label": "lb",
        "ttl": 30,
        **extra,
    }
    return world["api"].put(f"{world['url']}/dns", json=body)


def _answer(world):
    return sorted(world["pdns"].query_a(f"lb.{world['pdns'].zone}"))


def test_provider_secrets_are_encrypted_and_never_returned(world, cp):
    api, provider = world["api"], world["provider"]
    key = world["pdns"].api_key
    assert provider["kind"] == "powerdns" and provider["name"] == "pdns"
    assert provider["settings"]["server_id"] == "localhost"
    assert "api_key" not in provider["settings"]
    listed = api.get("/api/dns-providers").json()
    assert [p["name"] for p in listed["items"]] == ["pdns"]
    assert key not in api.get("/api/dns-providers").text
    assert key not in api.get(f"/api/dns-providers/{provider['id']}").text
    with sqlite3.connect(cp.data_dir / "serverctl.db") as db:
        dump = "\n".join(db.iterdump())
    assert key not in dump
    assert key not in cp.log()
    assert (cp.data_dir / "secret.key").stat().st_mode & 0o777 == 0o600


def test_provider_test_says_what_is_wrong(world):
    api = world["api"]
    ok = api.post(
        f"/api/dns-providers/{world['provider']['id']}/test", json={"zone": "demo.example"}
    )
    assert ok.json()["ok"] is True
    bad = api.post(
        "/api/dns-providers",
        json={
            "name": "wrong-key",
            "kind": "powerdns",
            "config": {**world["pdns"].powerdns_config(), "api_key": "nope"},
        },
    ).json()
    answer = api.post(f"/api/dns-providers/{bad['id']}/test").json()
    assert answer["ok"] is False and "key" in answer["detail"].lower()
    missing = api.post(
        f"/api/dns-providers/{world['provider']['id']}/test", json={"zone": "absent.example"}
    ).json()
    assert missing["ok"] is False and "absent.example" in missing["detail"]


def test_bad_provider_bodies_are_refused_with_422(world):
    api = world["api"]
    for body, words in (
        ({"name": "x", "kind": "bind9", "config": {}}, "unknown DNS provider kind"),
        ({"name": "x", "kind": "powerdns", "config": {"api_url": "http://127.0.0.1:1"}}, "api_key"),
        (
            {
                "name": "x",
                "kind": "powerdns",
                "config": {**world["pdns"].powerdns_config(), "colour": "red"},
            },
            "colour",
        ),
    ):
        answer = api.post("/api/dns-providers", json=body)
        assert answer.status_code == 422, body
        assert words in answer.json()["detail"]
    duplicate = api.post(
        "/api/dns-providers",
        json={"name": "pdns", "kind": "powerdns", "config": world["pdns"].powerdns_config()},
    )
    assert duplicate.status_code == 409


def test_linking_dns_publishes_the_active_member_at_once(world):
    linked = _link(world)
    assert linked.status_code == 200, linked.text
    assert linked.json()["update"]["state"] == "applied"
    assert _answer(world) == [EDGE_1]
    view = world["api"].get(f"{world['url']}/dns").json()
    assert view["fqdn"] == f"lb.{world['pdns'].zone}"
    assert view["current"]["target"] == EDGE_1
    assert view["current"]["matches_active"] is True
    wait_until(
        lambda: world["api"].get(f"{world['url']}/dns").json()["update"]["propagated_at"],
        10,
        what="propagation to be confirmed",
    )


def test_proxied_is_refused_where_the_provider_cannot_proxy(world):
    answer = _link(world, proxied=True)
    assert answer.status_code == 422
    assert "proxied" in answer.json()["detail"]


def test_make_active_and_cutover_move_the_record(world):
    api, url = world["api"], world["url"]
    edge_1, edge_2 = (b.member_id for b in world["beaters"])
    refused = api.post(f"{url}/members/{edge_2}/activate")
    assert refused.status_code == 409 and "DNS is not connected" in refused.json()["detail"]
    _link(world)
    moved = api.post(f"{url}/members/{edge_2}/activate")
    assert moved.status_code == 200, moved.text
    assert moved.json()["dns"]["state"] == "applied"
    assert _answer(world) == [EDGE_2]
    assert api.get(url).json()["active_member_id"] == edge_2
    again = api.post(f"{url}/members/{edge_2}/activate")
    assert again.status_code == 200 and again.json()["event_id"] is None
    back = api.post(f"{url}/cutover")
    assert back.status_code == 200, back.text
    assert _answer(world) == [EDGE_1]
    events = api.get(f"{url}/events").json()["items"]
    assert [(e["trigger"], e["from"]["hostname"], e["to"]["hostname"]) for e in events] == [
        ("cutover", "edge-2", "edge-1"),
        ("manual", "edge-1", "edge-2"),
    ]
    assert events[0]["dns"]["state"] == "applied"


def test_cutover_needs_a_ready_standby(world):
    api, url = world["api"], world["url"]
    _link(world)
    world["beaters"][1].haproxy_active = False
    wait_until(lambda: api.get(url).json()["healthy_count"] == 1, 5, what="edge-2 unhealthy")
    refused = api.post(f"{url}/cutover")
    assert refused.status_code == 409
    assert "no standby" in refused.json()["detail"]
    not_ready = api.post(f"{url}/members/{world['beaters'][1].member_id}/activate")
    assert not_ready.status_code == 409 and "not failover-ready" in not_ready.json()["detail"]
    assert _answer(world) == [EDGE_1]


def test_deleting_the_active_member_is_refused_while_dns_points_at_it(world):
    api, url = world["api"], world["url"]
    _link(world)
    edge_1 = world["beaters"][0].member_id
    refused = api.delete(f"{url}/members/{edge_1}")
    assert refused.status_code == 409 and "make another member active first" in refused.text


def test_automatic_failover_promotes_once_and_honours_the_cooldown(world):
    api, url = world["api"], world["url"]
    _link(world)
    api.put(f"{url}/failover", json={"automatic": True, "cooldown_s": 600})
    edge_1, edge_2 = world["beaters"]
    edge_1.haproxy_active = False
    started = time.monotonic()
    wait_until(lambda: _answer(world) == [EDGE_2], 10, interval=0.05, what="DNS to move")
    assert time.monotonic() - started < 10
    event = api.get(f"{url}/events").json()["items"][0]
    assert event["trigger"] == "automatic"
    assert (event["from"]["hostname"], event["to"]["hostname"]) == ("edge-1", "edge-2")
    assert "HAProxy is not running" in event["reason"]
    # edge-1 returns: it stays a standby.
    edge_1.haproxy_active = True
    wait_until(lambda: api.get(url).json()["healthy_count"] == 2, 5, what="edge-1 back")
    assert api.get(url).json()["active_member_id"] == edge_2.member_id
    # The new active fails inside the cool-down: no second promotion.
    edge_2.haproxy_active = False
    time.sleep(3)
    assert len(api.get(f"{url}/events").json()["items"]) == 1
    assert _answer(world) == [EDGE_2]
    # Manual cutovers do not start the cool-down, and are still allowed.
    assert api.post(f"{url}/cutover").status_code == 200
    assert _answer(world) == [EDGE_1]


def test_no_ready_standby_means_no_promotion(world):
    api, url = world["api"], world["url"]
    _link(world)
    api.put(f"{url}/failover", json={"automatic": True})
    edge_1, edge_2 = world["beaters"]
    edge_2.haproxy_active = False
    wait_until(lambda: api.get(url).json()["healthy_count"] == 1, 5, what="edge-2 unhealthy")
    edge_1.haproxy_active = False
    time.sleep(3)
    assert api.get(f"{url}/events").json()["items"] == []
    assert _answer(world) == [EDGE_1]
    # The standby recovers: now it is promoted.
    edge_2.haproxy_active = True
    wait_until(lambda: _answer(world) == [EDGE_2], 10, what="promotion once a standby is ready")


def test_a_dns_outage_during_failover_is_retried_and_applied_once_back(world):
    api, url, pdns = world["api"], world["url"], world["pdns"]
    _link(world)
    api.put(f"{url}/failover", json={"automatic": True})
    pdns.stop()
    world["beaters"][0].haproxy_active = False

    def pending():
        update = api.get(f"{url}/dns").json()["update"]
        return update if update["state"] == "pending" and update["attempts"] >= 2 else None

    update = wait_until(pending, 15, what="a failing, retried DNS update")
    assert update["address"] == EDGE_2 and "cannot reach" in update["last_error"]
    assert api.get(url).json()["active_member_id"] == world["beaters"][1].member_id
    pdns.start()
    wait_until(lambda: _answer(world) == [EDGE_2], 20, interval=0.2, what="the retried update")
    events = api.get(f"{url}/events").json()["items"]
    assert len(events) == 1 and events[0]["dns"]["state"] == "applied"


def test_dynamic_dns_follows_the_active_members_new_address(world, cp):
    api, url = world["api"], world["url"]
    _link(world, ddns=True)
    edge_1 = world["beaters"][0]
    edge_1.stop()
    edge_1.ip = edge_1.declared_ip = EDGE_3
    assert edge_1.beat().status_code == 200
    wait_until(lambda: _answer(world) == [EDGE_3], 10, what="DDNS to move the record")
    member = api.get(f"{url}/members/{edge_1.member_id}").json()
    assert member["allowed_ips"] == [EDGE_3]
    actions = [e["action"] for e in api.get("/api/audit").json()["items"]]
    assert "member.allowed_ips.follow" in actions and "pool.dns.ddns" in actions


def test_without_ddns_a_new_address_is_refused(world):
    _link(world)
    edge_1 = world["beaters"][0]
    edge_1.stop()
    edge_1.ip = edge_1.declared_ip = EDGE_3
    assert edge_1.beat().status_code == 403
    assert _answer(world) == [EDGE_1]
