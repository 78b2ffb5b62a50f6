"""The `letsencrypt` recipe through the whole chain: a real `serverctl serve`, a real PowerDNS
(the pool's DNS provider and the zone's authoritative server), a real Pebble checking DNS-01 on
it, the real agent, a real haproxy and openssl.

1. The recipe (REST) installs the PEM; the operator's one-time step adds the TLS bind; haproxy
   serves the certificate, which verifies against Pebble's root for the failover name; the
   `_acme-challenge` TXT record is gone.
2. `tls.acme_renew_force` while a TLS connection is open: the connection keeps working after the
   reload, a new connection gets the new serial.
3. The pool's DNS provider fails (wrong API key): the job fails with the provider's message, the
   old PEM stays, no TXT record is left.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from support.agent import Agent, download_zipapp
from support.haproxy import HAProxy
from support.pebble import Pebble
from support.powerdns import PowerDNS
from support.server import start_server, stop_process
from support.util import free_port, wait_until

MEMBER_IP = "127.0.0.2"
FQDN = "lb.demo.example"
ECHO_FRONTEND = """
frontend tls
    mode tcp
    bind {bind} ssl crt {pem}
    default_backend echo

backend echo
    mode tcp
    server echo {echo}
"""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except OSError:
            pass  # haproxy hung up (a health check, a reload)


@pytest.fixture
def echo() -> Iterator[str]:
    """A plain TCP echo server: the backend behind the TLS bind (TCP mode, so a reload leaves
    an open connection alone, as with any long-lived client)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def world(tmp_path: Path, echo: str):
    with PowerDNS(tmp_path / "pdns") as pdns, Pebble(tmp_path / "pebble", pdns.nameserver) as ca:
        server = start_server(tmp_path / "cp")
        api = server.api()
        root = tmp_path / "host"
        haproxy = HAProxy("edge-1", root, f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
        haproxy.start()
        agent = None
        try:
            settings = api.put(
                "/api/settings/acme",
                json={
                    "directory_url": ca.directory_url,
                    "email": "ops@demo.example",
                    "ca_bundle": ca.ca_bundle_pem,
                },
            )
            assert settings.status_code == 200, settings.text
            provider = api.post(
                "/api/dns-providers",
                json={"name": "pdns", "kind": "powerdns", "config": pdns.powerdns_config()},
            ).json()
            pool = api.post("/api/pools", json={"name": "edge"}).json()
            member = api.post(
                f"/api/pools/{pool['id']}/members",
                json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
            ).json()
            linked = api.put(
                f"/api/pools/{pool['id']}/dns",
                json={"provider_id": provider["id"], "zone": pdns.zone, "label": "lb", "ttl": 60},
            )
            assert linked.status_code == 200, linked.text
            pyz = download_zipapp(server.url, tmp_path / "balctl.pyz")
            agent = Agent(
                pyz,
                root,
                env={
                    "BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile),
                    "BALCTL_STATS_INTERVAL_S": "1",
                },
            )
            enrolled = agent.enrol(server.url, member["secret"], "edge-1", "--source-ip", MEMBER_IP)
            assert enrolled.returncode == 0, enrolled.stderr
            agent.start()
            url = f"/api/pools/{pool['id']}/members/{member['id']}"
            wait_until(
                lambda: api.get(url).json()["health"]["state"] == "healthy", 15, what="healthy"
            )
            yield {
                "api": api,
                "url": url,
                "pool": pool,
                "pdns": pdns,
                "pebble": ca,
                "haproxy": haproxy,
                "agent": agent,
                "server": server,
                "pem": root / "etc/haproxy/certs" / f"{FQDN}.pem",
                "echo": echo,
            }
        finally:
            if agent is not None:
                agent.stop()
            haproxy.kill()
            api.close()
            stop_process(server.process)


def _wait_job(world, job_id: int, timeout: float = 120) -> dict:
    api = world["api"]

    def done():
        job = api.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] not in ("pending", "running") else None

    try:
        return wait_until(done, timeout, interval=0.5, what=f"job {job_id} to finish")
    except AssertionError:
        raise AssertionError(
            f"{world['agent'].log()[-3000:]}\n--- serverctl\n{world['server'].log()[-3000:]}"
        ) from None


def _tls(world, bind: str) -> ssl.SSLSocket:
    """A TLS connection that trusts only Pebble's issuing root and checks the failover name."""
    context = ssl.create_default_context(cadata=world["pebble"].issuing_root())
    host, port = bind.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    return context.wrap_socket(raw, server_hostname=FQDN)


def _serial(conn: ssl.SSLSocket) -> int:
    der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _echoes(conn: ssl.SSLSocket, text: bytes) -> bool:
    conn.sendall(text)
    received = b""
    while len(received) < len(text):
        chunk = conn.recv(4096)
        if not chunk:
            return False
        received += chunk
    return received == text


def _recipe(api, recipes: str) -> dict:
    return next(r for r in api.get(recipes).json()["items"] if r["id"] == "letsencrypt")


def _renew(world, job_type: str = "tls.acme_renew_force") -> dict:
    answer = world["api"].post(
        f"{world['url']}/jobs",
        json={"type": job_type, "params": {"fqdn": FQDN, "names": [FQDN]}},
    )
    assert answer.status_code == 202, answer.text
    return _wait_job(world, answer.json()["job_id"])


def test_letsencrypt_recipe_issue_serve_renew_and_a_dns_failure(world):
    api, pdns, haproxy, pem = world["api"], world["pdns"], world["haproxy"], world["pem"]
    recipes = f"{world['url']}/recipes"
    recipe = next(r for r in api.get(recipes).json()["items"] if r["id"] == "letsencrypt")
    assert recipe["unavailable"] is None
    assert f"ssl crt /etc/haproxy/certs/{FQDN}.pem" in recipe["note"]

    # 1. The recipe: order, install; the configuration does not reference the file yet.
    run_id = api.post(f"{recipes}/letsencrypt/apply", json={}).json()["job_id"]
    run = _wait_job(world, run_id)
    assert run["state"] == "completed", run
    result = run["result"]
    assert result["path"] == f"/etc/haproxy/certs/{FQDN}.pem"
    assert (result["names"], result["referenced"], result["reloaded"]) == ([FQDN], False, False)
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []
    first_serial = result["serial"]

    # The operator's one-time step: the TLS bind, validated and reloaded (through jobs).
    tls_bind = f"{MEMBER_IP}:{free_port(MEMBER_IP)}"
    with haproxy.config.open("a") as config:
        config.write(ECHO_FRONTEND.format(bind=tls_bind, pem=pem, echo=world["echo"]))
    for step in ("haproxy.validate", "haproxy.reload"):
        job_id = api.post(f"{world['url']}/jobs", json={"type": step}).json()["job_id"]
        assert _wait_job(world, job_id)["state"] == "completed"
    with _tls(world, tls_bind) as conn:  # verifies the chain to Pebble's root and the name
        assert _serial(conn) == int(first_serial, 16)
        assert _echoes(conn, b"hello over TLS\n")
    # The recipe's completion state: the agent reports the PEM as referenced.
    wait_until(
        lambda: _recipe(api, recipes)["completed"] is True,
        30,
        interval=0.3,
        what="the recipe's completion state (the configuration references the PEM)",
    )

    # The same recipe again: the installed certificate is kept, nothing is ordered.
    again = _wait_job(world, api.post(f"{recipes}/letsencrypt/apply", json={}).json()["job_id"])
    assert again["state"] == "completed" and again["result"]["ordered"] is False

    # 2. Renewal while a connection is open: it keeps working; a new one gets the new serial.
    with _tls(world, tls_bind) as old:
        assert _echoes(old, b"before\n")
        renewed = _renew(world)
        assert renewed["state"] == "completed", renewed
        assert renewed["result"]["reloaded"] is True
        assert int(renewed["result"]["serial"], 16) != int(first_serial, 16)
        assert _echoes(old, b"after the reload\n"), "the open connection was dropped"
        assert _serial(old) == int(first_serial, 16)
    with _tls(world, tls_bind) as new:
        assert _serial(new) == int(renewed["result"]["serial"], 16)
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []

    # 3. The pool's DNS provider fails (its API key is wrong): a clean failure.
    before = pem.read_bytes()
    broken = api.post(
        "/api/dns-providers",
        json={
            "name": "pdns-broken",
            "kind": "powerdns",
            "config": {**pdns.powerdns_config(), "api_key": "not-the-key"},
        },
    ).json()
    relinked = api.put(
        f"/api/pools/{world['pool']['id']}/dns",
        json={"provider_id": broken["id"], "zone": pdns.zone, "label": "lb", "ttl": 60},
    )
    assert relinked.status_code == 200, relinked.text
    failed = _renew(world)
    assert failed["state"] == "failed", failed
    assert "the certificate order failed" in failed["summary"]
    assert "DNS provider" in failed["summary"], failed["summary"]
    assert pem.read_bytes() == before, "the old PEM stays in place"
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []
    with _tls(world, tls_bind) as conn:
        assert _serial(conn) == int(renewed["result"]["serial"], 16)
        assert "not-the-key" not in failed["summary"] + (failed["output"] or "")
