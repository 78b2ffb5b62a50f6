"""The agents' certificate order endpoints and the order worker, against the real app (its
worker thread), real Pebble and real PowerDNS: refusals, idempotency, a replaced CSR, and a
real order from pending to valid with the TXT record gone afterwards."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from integration.tls_orders.tls_orders_kit import FQDN, make_pool
from serverctl.db.models import TlsOrder
from support.util import wait_until

ORDER = "/api/agents/tls/order"


def csr_and_key(*names: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def csr(*names: str) -> str:
    return csr_and_key(*names)[0]


def _final(world, job_id: int, timeout: float = 60) -> dict:
    def done():
        answer = world.status(job_id)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return body if body["state"] != "pending" else None

    return wait_until(done, timeout, interval=0.2, what="the order to finish")


def _leaf(chain: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain.encode())[0]


# -- refusals ------------------------------------------------------------------------------------


def test_agent_authentication_is_checked_like_every_agent_request(world):
    job_id = world.queue()
    world.claim()
    body = {"hostname": "edge-1", "job_id": job_id, "csr": csr(FQDN)}
    no_secret = world.agent.post(ORDER, json=body)
    assert no_secret.status_code == 401 and "bearer" in no_secret.json()["detail"]
    assert world.post(ORDER, body, secret="wrong").status_code == 401
    wrong_host = world.order(job_id, body["csr"], hostname="edge-2")
    assert wrong_host.status_code == 401 and "does not match" in wrong_host.json()["detail"]
    from fastapi.testclient import TestClient

    stranger = TestClient(world.env.client.app, client=("127.0.0.9", 50000))
    refused = stranger.post(ORDER, json=body, headers={"Authorization": f"Bearer {world.secret}"})
    stranger.close()
    assert refused.status_code == 403 and "127.0.0.9" in refused.json()["detail"]
    huge = world.post(ORDER, {**body, "csr": "x" * 70_000})
    assert huge.status_code == 413
    no_host = world.post(ORDER, {"job_id": job_id, "csr": body["csr"]})
    assert no_host.status_code == 422 and "hostname" in no_host.json()["detail"]
    assert world.status(job_id).status_code == 404, "nothing was ordered"


def test_only_this_members_running_certificate_job_takes_an_order(world):
    reload_id = world.api.post(
        f"/api/pools/{world.pool_id}/members/{world.member_id}/jobs",
        json={"type": "haproxy.reload"},
    ).json()["job_id"]
    world.claim()
    other = world.order(reload_id, csr(FQDN))
    assert other.status_code == 404 and "not a certificate job" in other.json()["detail"]
    assert world.order(999_999, csr(FQDN)).status_code == 404
    world.env.state.jobs.complete(world.member_id, reload_id, "completed", "ok", None, None)

    job_id = world.queue()  # pending: not claimed yet
    pending = world.order(job_id, csr(FQDN))
    assert pending.status_code == 409 and "pending" in pending.json()["detail"]

    # Another member's job is not found for this one.
    pool_id, member_id, _ = make_pool(world.env, "other")
    theirs = world.api.post(
        f"/api/pools/{pool_id}/members/{member_id}/jobs",
        json={"type": "tls.acme_issue", "params": {"fqdn": FQDN, "names": [FQDN]}},
    ).json()["job_id"]
    world.env.state.jobs.claim(member_id)
    assert world.order(theirs, csr(FQDN)).status_code == 404


def test_the_csr_must_be_readable_signed_and_name_exactly_the_jobs_names(world):
    job_id = world.queue([FQDN, "www.demo.example"])
    world.claim()
    cases = [
        ("not a csr", "not a PEM certificate request"),
        (csr(FQDN), "orders exactly"),
        (csr(FQDN, "www.demo.example", "api.demo.example"), "orders exactly"),
        (csr(FQDN, "www.elsewhere.example"), "outside the zone"),
    ]
    for text, fragment in cases:
        answer = world.order(job_id, text)
        assert answer.status_code == 422, answer.text
        assert fragment in answer.json()["detail"]
    assert world.status(job_id).status_code == 404


# -- real orders --------------------------------------------------------------------------------


def test_an_order_goes_pending_then_valid_and_leaves_no_txt(world, pebble, pdns):
    job_id = world.queue([FQDN, "www.demo.example"])
    world.claim()
    text, key = csr_and_key(FQDN, "www.demo.example")
    first = world.order(job_id, text)
    assert (first.status_code, first.json()) == (202, {"state": "pending"})
    final = _final(world, job_id)
    assert final["state"] == "valid", final
    certs = x509.load_pem_x509_certificates(final["chain"].encode())
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([x509.load_pem_x509_certificate(pebble.issuing_root().encode())]))
        .time(datetime.datetime.now(datetime.UTC))
        .build_server_verifier(verification.DNSName("www.demo.example"))
    )
    verifier.verify(certs[0], certs[1:])
    assert certs[0].public_key() == key.public_key()
    for name in (FQDN, "www.demo.example"):
        assert pdns.query(f"_acme-challenge.{name}", "TXT") == []

    # The same CSR again (a retried POST) changes nothing: the same answer, the same chain.
    again = world.order(job_id, text)
    assert again.status_code == 202 and again.json() == final
    # A new CSR for a finished order is refused: the job must run again.
    late = world.order(job_id, csr(FQDN, "www.demo.example"))
    assert late.status_code == 409 and "already ended (valid)" in late.json()["detail"]

    audit = world.api.get("/api/audit").json()["items"]
    issued = [e for e in audit if e["action"] == "tls.certificate.issue"]
    assert len(issued) == 1
    detail = issued[0]["detail"]
    assert detail["serial"] == f"{certs[0].serial_number:x}"
    assert sorted(detail["names"]) == [FQDN, "www.demo.example"]
    assert "BEGIN" not in str(detail), "no chain or key in the audit log"


def test_a_new_csr_for_the_same_job_replaces_the_unfinished_order(world):
    job_id = world.queue()
    world.claim()
    first, _ = csr_and_key(FQDN)
    second, key = csr_and_key(FQDN)
    assert world.order(job_id, first).status_code == 202
    # The agent restarted and made a new key: its CSR replaces the first, pending or running.
    assert world.order(job_id, second).json() == {"state": "pending"}
    final = _final(world, job_id)
    assert final["state"] == "valid", final
    assert _leaf(final["chain"]).public_key() == key.public_key()
    with world.env.state.db.session() as s:
        rows = list(s.scalars(select(TlsOrder).where(TlsOrder.job_id == job_id)))
        assert len(rows) == 1 and rows[0].state == "valid"
