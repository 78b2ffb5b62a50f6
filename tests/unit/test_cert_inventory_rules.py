"""The certificate inventory: the heartbeat's `haproxy.certificates` shape, and the days left and
status the control plane derives from `not_after` (serverctl.domain.certificates)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from serverctl.domain.certificates import (
    days_left,
    entry_view,
    failover_path,
    from_member_views,
    status_of,
)
from serverctl.domain.heartbeat import BadPayload, parse_heartbeat

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = 86_400
GOOD_CERT = {
    "path": "/etc/haproxy/certs/lb.example.com.pem",
    "subject": "CN=lb.example.com",
    "sans": ["lb.example.com", "www.example.com"],
    "issuer": "CN=R11, O=Let's Encrypt, C=US",
    "not_after": int(NOW.timestamp()) + 80 * DAY,
    "serial": "04A1B2",
    "referenced": True,
}
UNREADABLE = {"path": "/etc/haproxy/certs/broken.pem", "referenced": False, "error": "no cert"}


def _heartbeat(certificates):
    body = {
        "ip": "203.0.113.10",
        "hostname": "edge-1",
        "version": "0.1.0",
        "haproxy": {"monitored": True, "active": True, "certificates": certificates},
    }
    return json.dumps(body).encode()


def test_a_heartbeat_with_good_certificates_is_accepted_and_kept():
    payload = parse_heartbeat(_heartbeat([GOOD_CERT, UNREADABLE]))
    assert payload.haproxy.as_dict()["certificates"] == [GOOD_CERT, UNREADABLE]


def test_an_empty_list_is_accepted():
    assert parse_heartbeat(_heartbeat([])).haproxy.as_dict()["certificates"] == []


@pytest.mark.parametrize(
    ("certificates", "fragment"),
    [
        ([{**GOOD_CERT, "not_after": "2027-01-01"}], "haproxy.certificates[0].not_after"),
        ([{**GOOD_CERT, "referenced": "yes"}], "haproxy.certificates[0].referenced"),
        ([{k: v for k, v in GOOD_CERT.items() if k != "path"}], "missing required field `path`"),
        ([{k: v for k, v in GOOD_CERT.items() if k != "referenced"}], "`referenced`"),
        ([GOOD_CERT, {**GOOD_CERT, "sans": "lb.example.com"}], "haproxy.certificates[1].sans"),
        ([{**GOOD_CERT, "sans": ["x"] * 101}], "haproxy.certificates[0].sans"),
        ([{**GOOD_CERT, "subject": "x" * 2000}], "haproxy.certificates[0].subject"),
        ([{**UNREADABLE, "error": 7}], "haproxy.certificates[0].error"),
        ([GOOD_CERT] * 101, "haproxy.certificates"),
        ({"path": "/x"}, "haproxy.certificates"),
        (["/etc/haproxy/certs/a.pem"], "haproxy.certificates[0]"),
    ],
)
def test_a_bad_certificates_entry_is_refused_naming_the_field(certificates, fragment):
    with pytest.raises(BadPayload) as caught:
        parse_heartbeat(_heartbeat(certificates))
    assert caught.value.status_code == 422
    assert fragment in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("left", "days", "status"),
    [
        (timedelta(days=80), 80, "ok"),
        (timedelta(days=30), 30, "ok"),
        (timedelta(days=30) - timedelta(seconds=1), 29, "expiring"),
        (timedelta(days=7, hours=1), 7, "expiring"),
        (timedelta(days=6, hours=23), 6, "critical"),
        (timedelta(hours=2), 0, "critical"),
        (timedelta(0), 0, "expired"),
        (-timedelta(hours=1), 0, "expired"),
        (-timedelta(days=3, hours=1), -3, "expired"),
    ],
)
def test_days_left_rounds_toward_zero_and_the_status_follows_the_windows(left, days, status):
    not_after = int((NOW + left).timestamp())
    assert days_left(not_after, NOW) == days
    assert status_of(not_after, NOW) == status


def test_an_entry_view_has_the_expiry_as_utc_and_marks_the_failover_certificate():
    path = failover_path("lb.example.com")
    assert path == "/etc/haproxy/certs/lb.example.com.pem"
    view = entry_view(GOOD_CERT, NOW, path, member_id=3, hostname="edge-1")
    assert view["not_after"] == NOW + timedelta(days=80)
    assert (view["days_left"], view["status"], view["failover_cert"]) == (80, "ok", True)
    assert (view["member_id"], view["hostname"]) == (3, "edge-1")
    assert "error" not in view
    assert entry_view(GOOD_CERT, NOW, None)["failover_cert"] is False


def test_an_unreadable_file_has_status_error_and_its_reason():
    view = entry_view(UNREADABLE, NOW, None)
    assert (view["status"], view["error"], view["days_left"], view["not_after"]) == (
        "error",
        "no cert",
        None,
        None,
    )


def _member(member_id, hostname, certificates=None):
    haproxy = {"monitored": True, "active": True}
    if certificates is not None:
        haproxy["certificates"] = certificates
    return {"id": member_id, "hostname": hostname, "heartbeat": {"haproxy": haproxy}}


def test_pool_warnings_count_only_loaded_or_failover_certificates():
    soon = int((NOW + timedelta(days=3)).timestamp())
    lying = {**GOOD_CERT, "path": "/etc/haproxy/certs/old.pem", "referenced": False}
    members = [
        _member(1, "edge-1", [{**GOOD_CERT, "not_after": soon, "referenced": False}]),
        _member(2, "edge-2", [GOOD_CERT, {**lying, "not_after": soon - 10 * DAY}]),
        _member(3, "edge-3"),
        {"id": 4, "hostname": "edge-4", "heartbeat": None},
    ]
    dns = {"linked": True, "fqdn": "lb.example.com"}
    inventory = from_member_views(7, members, dns, NOW)
    assert [c["hostname"] for c in inventory.warnings] == ["edge-1"]
    assert inventory.worst == "critical"
    assert [m.reporting for m in inventory.members] == [True, True, False, False]
    answer = inventory.as_dict()
    assert answer["fqdn"] == "lb.example.com" and len(answer["items"]) == 3
    assert [m["failover_days_left"] for m in answer["members"]] == [3, 80, None, None]
    # Without a DNS link no file is the failover certificate: only loaded ones are watched.
    unlinked = from_member_views(7, members, {"linked": False}, NOW)
    assert unlinked.fqdn is None and unlinked.warnings == []
