"""The words the pool pages use for the DNS state, and the worst-case failover time."""

from __future__ import annotations

from datetime import UTC, datetime

from serverctl.web.pool_summary import WorstCase, dns_summary, is_ready

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _update(**changes):
    update = {
        "address": "192.0.2.10",
        "state": "applied",
        "attempts": 1,
        "last_error": None,
        "applied_at": NOW,
        "propagated_at": None,
        "propagation_s": None,
        "propagation": None,
    }
    return {**update, **changes}


def test_dns_not_linked():
    assert dns_summary({"linked": False}).text == "DNS not linked"


def test_dns_linked_with_nothing_published_yet():
    summary = dns_summary({"linked": True, "update": None})
    assert summary.tone == "wait" and "nothing published yet" in summary.text


def test_a_pending_update_shows_its_attempts_and_last_error():
    summary = dns_summary(
        {"linked": True, "update": _update(state="pending", attempts=3, last_error="HTTP 500")}
    )
    assert (summary.tone, summary.text) == ("bad", "DNS update pending")
    assert summary.detail == "A 192.0.2.10: 3 attempts; last error: HTTP 500"
    first = dns_summary({"linked": True, "update": _update(state="pending", attempts=0)})
    assert first.tone == "wait" and first.detail == "A 192.0.2.10: 0 attempts"


def test_applied_then_propagated():
    applied = dns_summary({"linked": True, "update": _update()})
    assert (applied.tone, applied.text) == ("wait", "applied, checking propagation")
    done = dns_summary(
        {
            "linked": True,
            "update": _update(propagated_at=NOW, propagation_s=1.234, propagation="answered"),
        }
    )
    assert (done.tone, done.text) == ("ok", "propagated in 1.2 s")


def test_worst_case_is_delay_plus_evaluation_plus_ttl():
    assert WorstCase(30, 1, 60).total_s == 91
    assert WorstCase(30, 1, None).total_s is None


def test_a_ready_standby_is_healthy_with_an_ipv4():
    member = {
        "role": "standby",
        "health": {"state": "healthy"},
        "heartbeat": {"ip": "192.0.2.3"},
    }
    assert is_ready(member)
    assert not is_ready({**member, "role": "active"})
    assert not is_ready({**member, "health": {"state": "pending"}})
    assert not is_ready({**member, "heartbeat": None})
