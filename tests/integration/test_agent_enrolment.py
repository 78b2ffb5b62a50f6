"""The real agent zipapp enrolling and heartbeating against a real `serverctl serve` process,
with a real haproxy whose pidfile the agent watches. Loopback aliases stand in for hosts:
127.0.0.2 is the member's address, 127.0.0.3 a host it does not know."""

from __future__ import annotations

import stat
import time

import httpx2 as httpx
import pytest

from support.agent import Agent, download_zipapp
from support.haproxy import HAProxy
from support.util import free_port, wait_until

MEMBER_IP = "127.0.0.2"
STRANGER_IP = "127.0.0.3"


@pytest.fixture
def haproxy(tmp_path):
    proxy = HAProxy("edge-1", tmp_path / "haproxy", f"127.0.0.2:{free_port('127.0.0.2')}")
    proxy.start()
    yield proxy
    proxy.kill()


@pytest.fixture
def pool(server):
    with server.api() as api:
        made = api.post("/api/pools", json={"name": "production-edge"}).json()
        api.put(f"/api/pools/{made['id']}/failover", json={"delay_s": 10})
        member = api.post(
            f"/api/pools/{made['id']}/members",
            json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
        ).json()
    return {"pool": made, "member": member}


@pytest.fixture
def agent(server, tmp_path, haproxy):
    pyz = download_zipapp(server.url, tmp_path / "balctl.pyz")
    made = Agent(pyz, tmp_path / "host", env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile)})
    yield made
    made.stop()


def _member(server, pool):
    with server.api() as api:
        url = f"/api/pools/{pool['pool']['id']}/members/{pool['member']['id']}"
        return api.get(url).json()


def _state(server, pool):
    return _member(server, pool)["health"]["state"]


def _enrol_and_start(server, pool, agent):
    enrolled = agent.enrol(server.url, pool["member"]["secret"], "edge-1", "--source-ip", MEMBER_IP)
    assert enrolled.returncode == 0, enrolled.stderr
    agent.start()
    wait_until(lambda: _state(server, pool) == "healthy", 5, what="a healthy member")


def test_agent_enrols_turns_healthy_within_3s_and_unhealthy_after_the_delay(server, pool, agent):
    enrolled = agent.enrol(server.url, pool["member"]["secret"], "edge-1", "--source-ip", MEMBER_IP)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled edge-1" in enrolled.stdout
    assert stat.S_IMODE(agent.agent_env.stat().st_mode) == 0o600
    assert pool["member"]["secret"] not in enrolled.stdout + enrolled.stderr

    started = time.monotonic()
    agent.start()
    wait_until(lambda: _state(server, pool) == "healthy", 3, what="a healthy member")
    assert time.monotonic() - started < 3
    member = _member(server, pool)
    assert member["heartbeat"]["ip"] == MEMBER_IP
    reported = dict(member["heartbeat"]["haproxy"])
    # The backup scope's inventory (docs/backups.md); this host's root holds no HAProxy files.
    assert reported.pop("backup_files")["files"] == []
    assert reported == {
        "monitored": True,
        "active": True,
        "source": "pidfile",
        "admin_socket_configured": False,
    }
    assert member["enrolled_at"] is not None

    agent.stop()
    stopped = time.monotonic()
    time.sleep(5)
    assert _state(server, pool) == "healthy", "unhealthy before the failover delay passed"
    wait_until(
        lambda: _state(server, pool) == "unhealthy",
        10,
        interval=0.25,
        what="the member to turn unhealthy",
    )
    # The last heartbeat went out up to one interval before the stop.
    assert 9 <= time.monotonic() - stopped < 13
    health = _member(server, pool)["health"]
    assert health["heartbeat_age_s"] > 10
    assert "no heartbeat for" in health["reason"]


def test_haproxy_dying_turns_the_member_unhealthy(server, pool, agent, haproxy):
    _enrol_and_start(server, pool, agent)
    haproxy.kill()
    wait_until(lambda: _state(server, pool) == "unhealthy", 5, what="HAProxy down to show")
    assert _member(server, pool)["health"]["reason"] == (
        "HAProxy is not running (pidfile reports inactive)"
    )


def test_enrolment_with_an_unknown_secret_is_refused(server, pool, agent):
    refused = agent.enrol(server.url, "x" * 48, "edge-1", "--source-ip", MEMBER_IP)
    assert refused.returncode == 2
    assert "unknown or revoked enrolment secret" in refused.stderr
    assert not agent.agent_env.exists()


def test_enrolment_from_an_address_not_allowed_is_refused_and_shown(server, pool, agent):
    refused = agent.enrol(
        server.url, pool["member"]["secret"], "edge-1", "--source-ip", STRANGER_IP
    )
    assert refused.returncode == 2
    assert f"source IP {STRANGER_IP} is not allowed for member edge-1" in refused.stderr
    rejection = _member(server, pool)["last_rejection"]
    assert (rejection["status"], rejection["source_ip"]) == (403, STRANGER_IP)


def test_enrolment_with_another_hostname_is_refused(server, pool, agent):
    refused = agent.enrol(server.url, pool["member"]["secret"], "edge-9", "--source-ip", MEMBER_IP)
    assert refused.returncode == 2
    assert "does not match the enrolled hostname 'edge-1'" in refused.stderr


def _heartbeat(server, key, source_ip, hostname="edge-1", body=None):
    transport = httpx.HTTPTransport(local_address=source_ip)
    with httpx.Client(transport=transport, base_url=server.url, timeout=5) as client:
        payload = (
            body
            if body is not None
            else {
                "ip": source_ip,
                "hostname": hostname,
                "version": "0.1.0",
                "haproxy": {"monitored": False, "source": "none"},
            }
        )
        return client.post(
            "/api/agents/heartbeat", json=payload, headers={"Authorization": f"Bearer {key}"}
        )


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("bad token", 401, "unknown or revoked enrolment secret"),
        ("bad source ip", 403, f"source IP {STRANGER_IP} is not allowed for member edge-1"),
        ("bad hostname", 401, "hostname 'edge-2' does not match the enrolled hostname 'edge-1'"),
        ("bad body", 422, "invalid heartbeat: ip"),
        ("not json", 400, "body is not valid JSON"),
    ],
)
def test_each_heartbeat_rejection_has_its_documented_status(server, pool, case, status, reason):
    key = pool["member"]["secret"]
    if case == "bad token":
        answer = _heartbeat(server, "y" * 48, MEMBER_IP)
    elif case == "bad source ip":
        answer = _heartbeat(server, key, STRANGER_IP)
    elif case == "bad hostname":
        answer = _heartbeat(server, key, MEMBER_IP, hostname="edge-2")
    elif case == "bad body":
        answer = _heartbeat(
            server,
            key,
            MEMBER_IP,
            body={"ip": "2001:db8::1", "hostname": "edge-1", "version": "1", "haproxy": {}},
        )
    else:
        transport = httpx.HTTPTransport(local_address=MEMBER_IP)
        with httpx.Client(transport=transport, base_url=server.url) as client:
            answer = client.post(
                "/api/agents/heartbeat",
                content=b"{not json",
                headers={"Authorization": f"Bearer {key}"},
            )
    assert answer.status_code == status
    assert answer.json()["detail"].startswith(reason)
    if case != "bad token":
        shown = _member(server, pool)["last_rejection"]
        assert shown["status"] == status and shown["reason"].startswith(reason)
    assert _member(server, pool)["health"]["state"] == "pending"


def test_oversized_heartbeat_is_refused_without_a_5xx(server, pool):
    body = {
        "ip": MEMBER_IP,
        "hostname": "edge-1",
        "version": "1",
        "haproxy": {"monitored": False, "pad": "x" * 300_000},
    }
    answer = _heartbeat(server, pool["member"]["secret"], MEMBER_IP, body=body)
    assert answer.status_code == 413


def test_forged_forwarding_header_from_an_untrusted_peer_is_ignored(server, pool):
    key = pool["member"]["secret"]
    transport = httpx.HTTPTransport(local_address=STRANGER_IP)
    with httpx.Client(transport=transport, base_url=server.url) as client:
        answer = client.post(
            "/api/agents/heartbeat",
            json={
                "ip": MEMBER_IP,
                "hostname": "edge-1",
                "version": "1",
                "haproxy": {"monitored": False},
            },
            headers={
                "Authorization": f"Bearer {key}",
                "CF-Connecting-IP": MEMBER_IP,
                "X-Forwarded-For": MEMBER_IP,
                "X-Real-IP": MEMBER_IP,
            },
        )
    assert answer.status_code == 403


def test_revoked_secret_stops_the_running_agent_with_a_reason(server, pool, agent):
    _enrol_and_start(server, pool, agent)
    with server.api() as api:
        url = f"/api/pools/{pool['pool']['id']}/members/{pool['member']['id']}/rotate-secret"
        assert api.post(url).status_code == 200
    wait_until(
        lambda: (
            (_member(server, pool)["last_rejection"] or {}).get("reason")
            == "enrolment secret was revoked"
        ),
        5,
        what="the revoked secret to be shown",
    )
    assert _member(server, pool)["last_rejection"]["status"] == 401
    wait_until(
        lambda: "(401): enrolment secret was revoked" in agent.log(),
        5,
        what="the agent to log the refusal",
    )
    assert agent.process is not None and agent.process.poll() is None, "the loop must live on"


def test_deleted_member_secret_is_refused(server, pool):
    key = pool["member"]["secret"]
    assert _heartbeat(server, key, MEMBER_IP).status_code == 200
    with server.api() as api:
        api.delete(f"/api/pools/{pool['pool']['id']}/members/{pool['member']['id']}")
    assert _heartbeat(server, key, MEMBER_IP).status_code == 401
