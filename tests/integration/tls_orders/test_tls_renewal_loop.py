"""Automatic renewal end to end on the in-process app with its renewal loop running every 0.3 s,
real Pebble, real PowerDNS, a real SMTP server: a member reporting a failover certificate with
10 days left gets a tls.acme_issue job, whose order really runs; a failing order (the pool's DNS
provider refuses) raises `tls.certificate_failed`, emailed and shown on the Overview, and is not
retried before its back-off; a later successful job resolves the alert. The test speaks the
agent's side (heartbeats, the CSR, the completion) as the real agent does."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from integration.tls_orders.test_tls_order_endpoints import _final, _leaf, csr_and_key
from integration.tls_orders.tls_orders_kit import FQDN
from integration.tls_orders.tls_renewal_kit import CERTS, app_env_with, stand_in, tls_jobs
from serverctl.db.models import Alert, Job
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from serverctl.domain.tls_renewal import ALERT_KIND
from support.standin_agent import reported_cert
from support.util import wait_until

PEM = f"{CERTS}/{FQDN}.pem"


@pytest.fixture
def app_env(tmp_path):
    yield from app_env_with(tmp_path, 0.3)


@pytest.fixture
def edge1(world):
    return stand_in(world, world.member_id, world.secret, "edge-1", "127.0.0.2")


def _queued(world, count: int = 1) -> Job:
    def found():
        jobs = tls_jobs(world.env, world.member_id)
        return jobs[count - 1] if len(jobs) >= count else None

    job: Job = wait_until(found, 15, interval=0.1, what="the renewal loop to queue a job")
    return job


def _run_order(world, edge1, job: Job) -> dict:
    """The agent's side of the job: claim it, send a CSR for its names, wait for the order."""
    claimed = edge1.claim()
    assert claimed["id"] == job.id and claimed["type"] == "tls.acme_issue"
    request, _ = csr_and_key(*claimed["params"]["names"])
    sent = world.order(job.id, request)
    assert sent.status_code == 202, sent.text
    return _final(world, job.id)


def _alerts(world) -> list[Alert]:
    with world.env.state.db.session() as s:
        rows = list(s.scalars(select(Alert).where(Alert.kind == ALERT_KIND).order_by(Alert.id)))
        s.expunge_all()
        return rows


def _overview(world) -> str:
    web = TestClient(world.env.client.app)
    name = f"viewer{time.monotonic_ns()}"
    _, password = world.env.state.operators.create_user(SYSTEM, name, "viewer")
    assert web.post("/login", data={"name": name, "password": password}).status_code == 200
    page = web.get(f"/pools/{world.pool_id}")
    assert page.status_code == 200, page.text
    return page.text


def test_the_loop_renews_a_certificate_with_10_days_left_through_a_real_order(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 10, FQDN, "www.demo.example")])
    job = _queued(world)
    assert job.params == {"fqdn": FQDN, "names": [FQDN, "www.demo.example"], "force": False}
    assert job.source == "renewal" and job.enqueued_by == "system:tls-renewal"
    assert job.idempotency_key == f"tls-renew:{world.member_id}:0A1B2C"

    final = _run_order(world, edge1, job)
    assert final["state"] == "valid", final
    leaf = _leaf(final["chain"])
    edge1.complete(job.id, summary=f"installed {PEM}", result={"serial": f"{leaf.serial_number:X}"})
    # The agent reports the new certificate; the loop leaves it alone from then on.
    days = (leaf.not_valid_after_utc.timestamp() - time.time()) / 86_400
    edge1.heartbeat(
        certificates=[
            reported_cert(PEM, days, FQDN, "www.demo.example", serial=f"{leaf.serial_number:X}")
        ]
    )
    time.sleep(1.5)  # several rounds
    assert [j.id for j in tls_jobs(world.env)] == [job.id]
    assert _alerts(world) == []


def test_a_failed_order_alerts_by_email_and_on_the_overview_until_a_job_completes(
    world, edge1, pdns, smtp_server
):
    env = world.env
    assert env.client.put("/api/settings/smtp", json=smtp_server.settings()).status_code == 200
    env.state.alerts.set_pool_alerts(SYSTEM, world.pool_id, recipients=["ops@example.com"])
    broken = env.state.dns_accounts.create(
        SYSTEM, "pdns-broken", "powerdns", {**pdns.powerdns_config(), "api_key": "not-the-key"}
    )
    relinked = env.client.put(
        f"/api/pools/{world.pool_id}/dns",
        json={"provider_id": broken["id"], "zone": pdns.zone, "label": "lb", "ttl": 60},
    )
    assert relinked.status_code == 200, relinked.text

    # 20 days: inside the renewal window (30) but not the expiry alert's (14), so the only
    # email is the failed order's (with 10 the expiry alert's may come first).
    edge1.heartbeat(certificates=[reported_cert(PEM, 20, FQDN)])
    job = _queued(world)
    final = _run_order(world, edge1, job)
    assert final["state"] == "failed", final
    # What the agent reports: the order's error in its summary.
    edge1.complete(job.id, "failed", f"the certificate order failed: {final['error']}")

    [mail] = smtp_server.wait_for(1, timeout=15)
    assert "[edge] TLS certificate order for edge-1 failed" in mail.subject
    assert final["error"][:60] in mail.body and "DNS provider" in mail.body
    assert "What to do" in mail.body and "Settings" in mail.body
    assert "not-the-key" not in mail.body
    [alert] = _alerts(world)
    assert alert.member_id == world.member_id and alert.resolved_at is None
    assert alert.message.startswith(f"the certificate order failed: {final['error'][:40]}")

    page = _overview(world)
    assert f'id="certificate-order-failed-{world.member_id}"' in page
    assert "last order failed" in page

    # Never a loop: no new order within the back-off, and one open alert per member.
    time.sleep(1.5)
    assert [j.id for j in tls_jobs(env)] == [job.id]
    assert len(_alerts(world)) == 1

    # The provider is fixed and the operator runs a forced renewal: it completes, and the
    # alert is resolved (the Overview no longer shows it).
    env.client.put(
        f"/api/pools/{world.pool_id}/dns",
        json={"provider_id": world.provider_id, "zone": pdns.zone, "label": "lb", "ttl": 60},
    )
    forced = world.queue(job_type="tls.acme_renew_force")
    claimed = edge1.claim()
    assert claimed["id"] == forced
    request, _ = csr_and_key(FQDN)
    assert world.order(forced, request).status_code == 202
    assert _final(world, forced)["state"] == "valid"
    edge1.complete(forced, summary=f"installed {PEM}")
    [alert] = _alerts(world)
    assert alert.resolved_at is not None
    assert 'id="certificate-order-failed-' not in _overview(world)


def test_a_job_that_times_out_alerts_through_the_sweep(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 10, FQDN)])
    job = _queued(world)
    assert edge1.claim()["id"] == job.id
    with world.env.state.db.session() as s:
        s.execute(
            update(Job).where(Job.id == job.id).values(started_at=utcnow() - timedelta(hours=1))
        )
    assert world.env.state.jobs.reap() == 1  # no completion: no hook ran
    alert = wait_until(lambda: next(iter(_alerts(world)), None), 10, what="the sweep's alert")
    assert alert.message.startswith("no result from the agent within 900 s")
    assert "timed out" in alert.message
