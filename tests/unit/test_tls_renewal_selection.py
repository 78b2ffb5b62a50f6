"""The automatic renewal's rules as plain functions: which names are ordered again, the
back-off after failures, one renewal per certificate serial, and what waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from serverctl.domain.tls_renewal import (
    Candidate,
    PastJob,
    backoff,
    candidate_of,
    failure_streak,
    next_key,
    renewal_names,
    why_not,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FQDN = "lb.demo.example"


def _job(job_id, state, hours_ago=None, key=None):
    finished = NOW - timedelta(hours=hours_ago) if hours_ago is not None else None
    return PastJob(job_id, state, finished, key)


def _candidate(serial="0A"):
    return Candidate(7, "edge-1", serial, [FQDN], 10)


def test_names_keep_the_certificates_names_in_the_zone_with_the_fqdn_first():
    sans = ["www.demo.example", FQDN, "WWW.demo.example.", "*.demo.example", "x.other.example"]
    assert renewal_names(sans, FQDN, "demo.example") == [FQDN, "www.demo.example"]
    assert renewal_names([], FQDN, "demo.example") == [FQDN]
    many = [f"n{i}.demo.example" for i in range(20)]
    assert len(renewal_names(many, FQDN, "demo.example")) == 10


@pytest.mark.parametrize(
    ("streak", "hours"), [(0, 0), (1, 6), (2, 12), (3, 24), (4, 48), (5, 48), (40, 48)]
)
def test_back_off_is_6_hours_doubling_at_most_48(streak, hours):
    assert backoff(streak) == timedelta(hours=hours)


def test_the_failure_streak_ends_at_a_completed_job_and_skips_cancelled_ones():
    jobs = [
        _job(1, "failed", 100),
        _job(2, "completed", 90),
        _job(3, "failed", 20),
        _job(4, "cancelled", 15),
        _job(5, "timed_out", 10),
    ]
    assert failure_streak(jobs) == (2, NOW - timedelta(hours=10))
    assert failure_streak([_job(1, "completed", 1)]) == (0, None)


def test_a_job_in_flight_holds_the_renewal():
    assert "pending or running" in why_not(_candidate(), [_job(1, "pending")], NOW)
    assert "pending or running" in why_not(_candidate(), [_job(1, "running")], NOW)


def test_one_renewal_per_serial():
    done = [_job(1, "completed", 1, "tls-renew:7:0A")]
    assert "renewed already" in why_not(_candidate("0A"), done, NOW)
    assert why_not(_candidate("0B"), done, NOW) is None
    retried = [_job(2, "completed", 1, "tls-renew:7:0A:retry1"), _job(1, "failed", 9)]
    assert "renewed already" in why_not(_candidate("0A"), retried, NOW)
    # A key of another serial that starts alike is not this one's.
    assert why_not(_candidate("0A"), [_job(1, "completed", 1, "tls-renew:7:0AB")], NOW) is None


def test_failures_back_off_and_then_retry_with_the_next_key():
    one = [_job(1, "failed", 5, "tls-renew:7:0A")]
    assert "backing off after 1 failed" in why_not(_candidate(), one, NOW)
    later = [_job(1, "failed", 7, "tls-renew:7:0A")]
    assert why_not(_candidate(), later, NOW) is None
    assert next_key(_candidate(), later) == "tls-renew:7:0A:retry1"
    two = [_job(2, "timed_out", 11, "tls-renew:7:0A:retry1"), *later]
    assert "backing off after 2 failed" in why_not(_candidate(), two, NOW)
    assert why_not(_candidate(), [_job(2, "failed", 13), *later], NOW) is None
    assert next_key(_candidate(), []) == "tls-renew:7:0A"


def test_only_due_failover_certificates_are_candidates():
    view = {
        "member_id": 7,
        "hostname": "edge-1",
        "status": "expiring",
        "days_left": 10,
        "serial": "0A",
        "sans": [FQDN, "www.demo.example"],
        "not_after": NOW + timedelta(days=10),
    }
    found = candidate_of(view, FQDN, "demo.example")
    assert found == Candidate(7, "edge-1", "0A", [FQDN, "www.demo.example"], 10)
    for status in ("critical", "expired"):
        assert candidate_of({**view, "status": status}, FQDN, "demo.example") is not None
    for status in ("ok", "error"):
        assert candidate_of({**view, "status": status}, FQDN, "demo.example") is None
    assert candidate_of(None, FQDN, "demo.example") is None
    no_serial = candidate_of({**view, "serial": None}, FQDN, "demo.example")
    assert no_serial is not None and no_serial.serial.startswith("exp")
