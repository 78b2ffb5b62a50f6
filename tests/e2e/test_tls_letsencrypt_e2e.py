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
import ssl

import pytest
from cryptography import x509

from support.letsencrypt_rig import FQDN, LetsEncryptRig
from support.util import wait_until


@pytest.fixture
def rig(tmp_path):
    with LetsEncryptRig(tmp_path) as built:
        yield built


def _tls(rig: LetsEncryptRig, bind: str) -> ssl.SSLSocket:
    """A TLS connection that trusts only Pebble's issuing root and checks the failover name."""
    context = ssl.create_default_context(cadata=rig.pebble.issuing_root())
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


def _renew(rig: LetsEncryptRig) -> dict:
    return rig.wait_job(rig.queue("tls.acme_renew_force", {"fqdn": FQDN, "names": [FQDN]}))


def test_letsencrypt_recipe_issue_serve_renew_and_a_dns_failure(rig):
    api, pdns, pem, recipes = rig.api, rig.pdns, rig.pem, rig.recipes
    recipe = rig.recipe()
    assert recipe["unavailable"] is None
    assert f"ssl crt /etc/haproxy/certs/{FQDN}.pem" in recipe["note"]

    # 1. The recipe: order, install; the configuration does not reference the file yet.
    run_id = api.post(f"{recipes}/letsencrypt/apply", json={}).json()["job_id"]
    run = rig.wait_job(run_id)
    assert run["state"] == "completed", run
    result = run["result"]
    assert result["path"] == f"/etc/haproxy/certs/{FQDN}.pem"
    assert (result["names"], result["referenced"], result["reloaded"]) == ([FQDN], False, False)
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []
    first_serial = result["serial"]

    # The operator's one-time step: the TLS bind, validated and reloaded (through jobs).
    tls_bind = rig.add_tls_bind()
    with _tls(rig, tls_bind) as conn:  # verifies the chain to Pebble's root and the name
        assert _serial(conn) == int(first_serial, 16)
        assert _echoes(conn, b"hello over TLS\n")
    # The recipe's completion state: the agent reports the PEM as referenced.
    wait_until(
        lambda: rig.recipe()["completed"] is True,
        30,
        interval=0.3,
        what="the recipe's completion state (the configuration references the PEM)",
    )

    # The same recipe again: the installed certificate is kept, nothing is ordered.
    again = rig.wait_job(api.post(f"{recipes}/letsencrypt/apply", json={}).json()["job_id"])
    assert again["state"] == "completed" and again["result"]["ordered"] is False

    # 2. Renewal while a connection is open: it keeps working; a new one gets the new serial.
    with _tls(rig, tls_bind) as old:
        assert _echoes(old, b"before\n")
        renewed = _renew(rig)
        assert renewed["state"] == "completed", renewed
        assert renewed["result"]["reloaded"] is True
        assert int(renewed["result"]["serial"], 16) != int(first_serial, 16)
        assert _echoes(old, b"after the reload\n"), "the open connection was dropped"
        assert _serial(old) == int(first_serial, 16)
    with _tls(rig, tls_bind) as new:
        assert _serial(new) == int(renewed["result"]["serial"], 16)
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []

    # 3. The pool's DNS provider fails (its API key is wrong): a clean failure.
    before = pem.read_bytes()
    broken = rig.add_provider("pdns-broken", {**pdns.powerdns_config(), "api_key": "not-the-key"})
    rig.link_dns(broken["id"])  # answers 200
    failed = _renew(rig)
    assert failed["state"] == "failed", failed
    assert "the certificate order failed" in failed["summary"]
    assert "DNS provider" in failed["summary"], failed["summary"]
    assert pem.read_bytes() == before, "the old PEM stays in place"
    assert pdns.query(f"_acme-challenge.{FQDN}", "TXT") == []
    with _tls(rig, tls_bind) as conn:
        assert _serial(conn) == int(renewed["result"]["serial"], 16)
        assert "not-the-key" not in failed["summary"] + (failed["output"] or "")
