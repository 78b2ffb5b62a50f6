"""The automatic renewal's choices on the real app and database (its loop held back: rounds are
run by the test): which failover certificates are renewed, with which names and key, one
member per pool per round, and when it waits (a job in flight, a failure's back-off, the CA's
rate limit, the duplicate-certificate limit). Real PowerDNS and Pebble are the pool's provider
and CA; no order runs here (test_tls_renewal_loop.py runs them)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from integration.tls_orders.tls_orders_kit import FQDN
from integration.tls_orders.tls_renewal_kit import (
    CERTS,
    add_member,
    app_env_with,
    stand_in,
    tls_jobs,
)
from serverctl.db.models import AppSetting, AuditEntry, Job, TlsOrder
from serverctl.db.types import utcnow
from serverctl.domain.catalogue import JobState
from support.standin_agent import reported_cert

PEM = f"{CERTS}/{FQDN}.pem"


@pytest.fixture
def app_env(tmp_path):
    # A day between the loop's own rounds: every round here is the test's.
    yield from app_env_with(tmp_path, 86_400)


@pytest.fixture
def edge1(world):
    return stand_in(world, world.member_id, world.secret, "edge-1", "127.0.0.2")


def _finish(env, job_id: int, state: str, ago: timedelta, summary: str = "x") -> None:
    with env.state.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=state, finished_at=utcnow() - ago, summary=summary)
        )


def test_a_certificate_within_30_days_is_renewed_with_its_names_once_per_serial(world, edge1):
    edge1.heartbeat(
        certificates=[
            reported_cert(PEM, 10.5, "www.demo.example", FQDN, "*.demo.example", "other.example"),
            reported_cert(
                f"{CERTS}/old.pem", 3, "old.demo.example"
            ),  # not the failover certificate
        ]
    )
    queued = world.env.state.tls_renewal.renew_due()
    assert len(queued) == 1
    job = world.api.get(f"/api/jobs/{queued[0]}").json()
    assert job["type"] == "tls.acme_issue" and job["state"] == "pending"
    # The FQDN first, the recipe's extra name kept, the wildcard and the foreign name dropped.
    assert job["params"] == {"fqdn": FQDN, "names": [FQDN, "www.demo.example"], "force": False}
    assert job["idempotency_key"] == f"tls-renew:{world.member_id}:0A1B2C"
    assert (job["source"], job["enqueued_by"]) == ("renewal", "system:tls-renewal")
    with world.env.state.db.session() as s:
        audited = s.scalars(select(AuditEntry).where(AuditEntry.action == "job.enqueue")).all()
        assert [a.actor for a in audited] == ["system:tls-renewal"]

    # Pending: not again. Completed but the old serial still reported: not again either.
    assert world.env.state.tls_renewal.renew_due() == []
    _finish(world.env, queued[0], JobState.COMPLETED, timedelta(minutes=1))
    assert world.env.state.tls_renewal.renew_due() == []
    # The renewed certificate (a new serial, 89 days): nothing to do.
    edge1.heartbeat(certificates=[reported_cert(PEM, 89, FQDN, "www.demo.example", serial="0B")])
    assert world.env.state.tls_renewal.renew_due() == []
    # That one in its window later on: a new renewal for the new serial.
    edge1.heartbeat(certificates=[reported_cert(PEM, 29.5, FQDN, serial="0B")])
    again = world.env.state.tls_renewal.renew_due()
    assert len(again) == 1
    assert world.api.get(f"/api/jobs/{again[0]}").json()["idempotency_key"] == (
        f"tls-renew:{world.member_id}:0B"
    )


def test_only_due_failover_certificates_are_renewed(world, edge1):
    renewal = world.env.state.tls_renewal
    edge1.heartbeat(certificates=[reported_cert(PEM, 30.5, FQDN)])  # 30 days left: not yet
    assert renewal.renew_due() == []
    edge1.heartbeat(
        certificates=[reported_cert(f"{CERTS}/other.pem", 2, FQDN)]
    )  # not the failover file
    assert renewal.renew_due() == []
    edge1.heartbeat(certificates=[{"path": PEM, "referenced": True, "error": "not a certificate"}])
    assert renewal.renew_due() == []
    edge1.heartbeat(certificates=[reported_cert(PEM, -2, FQDN)])  # expired: renewed too
    assert len(renewal.renew_due()) == 1


def test_a_member_that_never_had_the_certificate_is_left_to_the_recipe(world, edge1):
    edge1.heartbeat(certificates=[])
    other = add_member(world, "edge-2", "127.0.0.3")
    other.heartbeat()  # an agent reporting no certificates at all
    assert world.env.state.tls_renewal.renew_due() == []
    assert tls_jobs(world.env) == []


def test_one_member_per_pool_per_round_the_most_urgent_first(world, edge1):
    edge2 = add_member(world, "edge-2", "127.0.0.3")
    edge3 = add_member(world, "edge-3", "127.0.0.4")
    edge1.heartbeat(certificates=[reported_cert(PEM, 20, FQDN, serial="01")])
    edge2.heartbeat(certificates=[reported_cert(PEM, 5, FQDN, serial="02")])
    edge3.heartbeat(certificates=[reported_cert(PEM, 60, FQDN, serial="03")])
    renewal = world.env.state.tls_renewal
    first = renewal.renew_due()
    assert [j.member_id for j in tls_jobs(world.env)] == [edge2.member_id]
    second = renewal.renew_due()  # edge-2's job is still pending: edge-1's turn
    assert [j.member_id for j in tls_jobs(world.env)] == [edge2.member_id, edge1.member_id]
    assert len(first) == len(second) == 1
    assert renewal.renew_due() == []  # both in flight; edge-3 is not due


def test_a_failure_backs_off_6_hours_doubling_and_retries_with_a_new_key(world, edge1):
    renewal = world.env.state.tls_renewal
    edge1.heartbeat(certificates=[reported_cert(PEM, 12, FQDN)])
    [first] = renewal.renew_due()
    _finish(world.env, first, JobState.FAILED, timedelta(hours=5, minutes=50))
    assert renewal.renew_due() == []  # within 6 h of the failure
    _finish(world.env, first, JobState.FAILED, timedelta(hours=6, minutes=5))
    [second] = renewal.renew_due()
    key = world.api.get(f"/api/jobs/{second}").json()["idempotency_key"]
    assert key == f"tls-renew:{world.member_id}:0A1B2C:retry1"
    # Two failures in a row: 12 hours.
    _finish(world.env, second, JobState.TIMED_OUT, timedelta(hours=11))
    assert renewal.renew_due() == []
    _finish(world.env, second, JobState.TIMED_OUT, timedelta(hours=12, minutes=5))
    [third] = renewal.renew_due()
    assert world.api.get(f"/api/jobs/{third}").json()["idempotency_key"].endswith(":retry2")


def test_an_operators_failed_job_counts_for_the_back_off(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 12, FQDN)])
    mine = world.queue(job_type="tls.acme_renew_force")
    _finish(world.env, mine, JobState.FAILED, timedelta(hours=1))
    assert world.env.state.tls_renewal.renew_due() == []


def test_nothing_is_queued_while_the_ca_rate_limits_the_name_set(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 12, FQDN)])
    job_id = world.queue()
    _finish(world.env, job_id, JobState.FAILED, timedelta(days=3))
    with world.env.state.db.session() as s:
        world.add_order(
            s,
            job_id,
            "failed",
            csr_sha256="0" * 64,
            error="too many certificates already issued [rateLimited]",
            retry_at=utcnow() + timedelta(hours=3),
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    renewal = world.env.state.tls_renewal
    assert renewal.renew_due() == []
    with world.env.state.db.session() as s:
        s.execute(update(TlsOrder).values(retry_at=utcnow() - timedelta(seconds=1)))
    assert len(renewal.renew_due()) == 1


def test_nothing_is_queued_past_the_duplicate_certificate_limit(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 12, FQDN)])
    job_ids = [world.queue() for _ in range(5)]
    with world.env.state.db.session() as s:
        for i, job_id in enumerate(job_ids):
            s.execute(update(Job).where(Job.id == job_id).values(state="completed"))
            world.add_order(
                s,
                job_id,
                "valid",
                csr_sha256=f"{i}" * 64,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
    assert world.env.state.tls_renewal.renew_due() == []


def test_no_renewal_without_acme_settings(world, edge1):
    edge1.heartbeat(certificates=[reported_cert(PEM, 12, FQDN)])
    with world.env.state.db.session() as s:
        s.execute(delete(AppSetting).where(AppSetting.key == "acme"))
    assert world.env.state.tls_renewal.renew_due() == []
