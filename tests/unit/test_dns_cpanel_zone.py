"""cPanel/WHM zones: reading a parse_dns_zone payload and planning one serial-checked change."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from serverctl.dns.cpanel import Change, Zone, ZoneLine, next_change, parse_zone
from serverctl.errors import ProviderError

ZONE = "example.com"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _record(index: int, dname: str, rtype: str, ttl: object, *data: str) -> dict[str, object]:
    return {
        "line_index": index,
        "type": "record",
        "record_type": rtype,
        "ttl": ttl,
        "dname_b64": _b64(dname),
        "data_b64": [_b64(d) for d in data],
    }


SOA = _record(3, "example.com.", "SOA", 86400, "ns1.", "host.", "2024060107", "1", "2", "3", "4")


def test_payload_gives_serial_and_absolute_names():
    payload = [
        {"line_index": 0, "type": "comment", "text_b64": _b64("; Zone file")},
        {"line_index": 2, "type": "control", "text_b64": _b64("$TTL 14400")},
        SOA,
        _record(10, "www", "A", "14400", "192.0.2.1"),  # relative, TTL as a string
        _record(11, "lb.example.com.", "A", 60, "192.0.2.2"),  # absolute
        _record(12, "@", "TXT", 300, "part one ", "part two"),
        _record(13, "", "TXT", 300, "same owner as before"),
        _record(14, "*.dev", "A", 60, "192.0.2.3"),  # a wildcard is a name like any other
    ]
    zone = parse_zone(ZONE, payload)
    assert zone.serial == 2024060107
    assert [(r.index, r.name, r.type, r.ttl, r.value) for r in zone.records[1:]] == [
        (10, "www.example.com", "A", 14400, "192.0.2.1"),
        (11, "lb.example.com", "A", 60, "192.0.2.2"),
        (12, "example.com", "TXT", 300, "part one part two"),
        (13, "example.com", "TXT", 300, "same owner as before"),
        (14, "*.dev.example.com", "A", 60, "192.0.2.3"),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [_record(1, "www", "A", 60, "192.0.2.1")],  # no SOA
        [SOA, {**_record(4, "www", "A", 60, "x"), "dname_b64": "***"}],
        [SOA, _record(4, "www", "A", "soon", "192.0.2.1")],
    ],
)
def test_unusable_payload_is_a_provider_error(payload: object):
    with pytest.raises(ProviderError):
        parse_zone(ZONE, payload)


def _zone(*lines: ZoneLine) -> Zone:
    return Zone(1, lines)


def _a(index: int, value: str, ttl: int = 60, name: str = "lb.example.com") -> ZoneLine:
    return ZoneLine(index, name, "A", ttl, (value,))


def _item(change: Change | None) -> tuple[str, Any]:
    assert change is not None
    if change.action == "remove":
        return change.action, int(change.argument)
    return change.action, json.loads(change.argument)


FQDN = "lb.example.com"


def test_missing_record_is_added_with_absolute_name_and_ttl():
    assert _item(next_change(_zone(), FQDN, "A", ("192.0.2.9",), 60, True)) == (
        "add",
        {"dname": "lb.example.com.", "ttl": 60, "record_type": "A", "data": ["192.0.2.9"]},
    )


def test_other_address_is_edited_in_place():
    action, item = _item(
        next_change(_zone(_a(7, "192.0.2.1")), FQDN, "A", ("192.0.2.9",), 60, True)
    )
    assert action == "edit"
    assert item == {
        "line_index": 7,
        "dname": "lb.example.com.",
        "ttl": 60,
        "record_type": "A",
        "data": ["192.0.2.9"],
    }


def test_ttl_change_is_an_edit():
    action, item = _item(
        next_change(_zone(_a(7, "192.0.2.9", 300)), FQDN, "A", ("192.0.2.9",), 60, True)
    )
    assert (action, item["ttl"], item["line_index"]) == ("edit", 60, 7)


def test_duplicates_are_removed_once_the_value_is_there():
    zone = _zone(_a(7, "192.0.2.1"), _a(8, "192.0.2.9"), _a(9, "192.0.2.9"))
    assert _item(next_change(zone, FQDN, "A", ("192.0.2.9",), 60, True)) == ("remove", 7)


def test_txt_value_is_added_before_the_old_one_is_removed():
    old = ZoneLine(4, FQDN, "TXT", 60, ("old",))
    assert _item(next_change(_zone(old), FQDN, "TXT", ("new",), 60, False))[0] == "add"
    both = _zone(old, ZoneLine(5, FQDN, "TXT", 60, ("new",)))
    assert _item(next_change(both, FQDN, "TXT", ("new",), 60, False)) == ("remove", 4)


def test_long_txt_value_is_sent_as_character_strings():
    _, item = _item(next_change(_zone(), FQDN, "TXT", ("x" * 600,), 60, False))
    assert [len(s) for s in item["data"]] == [255, 255, 90]


def test_settled_rrset_needs_no_change():
    zone = _zone(_a(7, "192.0.2.9"), _a(8, "192.0.2.9", name="other.example.com"))
    assert next_change(zone, FQDN, "A", ("192.0.2.9",), 60, True) is None
    assert next_change(_zone(), FQDN, "A", (), 0, False) is None


def test_delete_removes_every_record_of_the_type_only():
    zone = _zone(_a(7, "192.0.2.1"), ZoneLine(8, FQDN, "TXT", 60, ("keep",)))
    assert _item(next_change(zone, FQDN, "A", (), 0, False)) == ("remove", 7)
