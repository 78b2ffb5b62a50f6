import json

import pytest

from serverctl.domain.heartbeat import MAX_BODY_BYTES, BadPayload, parse_heartbeat

GOOD = {
    "ip": "203.0.113.10",
    "hostname": "edge-1",
    "version": "0.1.0",
    "haproxy": {"monitored": True, "active": True, "source": "systemd"},
}


def _raw(**changes):
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_valid_heartbeat_is_parsed():
    payload = parse_heartbeat(_raw())
    assert payload.ip == "203.0.113.10"
    assert payload.haproxy.active is True


def test_extra_haproxy_fields_are_kept_for_later_enrichment():
    payload = parse_heartbeat(_raw(haproxy={"monitored": True, "active": True, "topology": []}))
    assert payload.haproxy.model_dump()["topology"] == []


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"ip": "2001:db8::1"}, "not an IPv4 address"),
        ({"ip": "300.1.1.1"}, "not an IPv4 address"),
        ({"ip": 3232235777}, "ip"),
        ({"hostname": 7}, "hostname"),
        ({"hostname": "x" * 300}, "hostname"),
        ({"version": ...}, "version"),
        ({"haproxy": {"monitored": "yes"}}, "haproxy.monitored"),
        ({"haproxy": "up"}, "haproxy"),
    ],
)
def test_invalid_fields_are_refused_with_the_field_named(changes, fragment):
    with pytest.raises(BadPayload) as caught:
        parse_heartbeat(_raw(**changes))
    assert caught.value.status_code == 422
    assert fragment in caught.value.message


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"[" * 100_000])
def test_bodies_that_are_not_json_are_refused_with_400(raw):
    with pytest.raises(BadPayload) as caught:
        parse_heartbeat(raw)
    assert caught.value.status_code == 400


def test_json_that_is_not_an_object_is_refused():
    with pytest.raises(BadPayload):
        parse_heartbeat(b"[1, 2, 3]")


def test_oversized_body_is_refused_with_413():
    with pytest.raises(BadPayload) as caught:
        parse_heartbeat(b" " * (MAX_BODY_BYTES + 1))
    assert caught.value.status_code == 413
