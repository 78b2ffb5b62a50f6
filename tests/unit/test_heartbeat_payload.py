import json
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverctl.domain.heartbeat import MAX_BODY_BYTES, BadPayload, _loads, parse_heartbeat
from serverctl.strict_json import loads_strict

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
    # A key the control plane does not check yet (domain/enrichment.py checks the known ones).
    payload = parse_heartbeat(_raw(haproxy={"monitored": True, "active": True, "later": []}))
    assert payload.haproxy.model_dump()["later"] == []


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


# -- the fast decoder and the shortcuts of the hot path: same answers as the slow ways --------
# `loads_strict` (with NULs replaced, as agent bodies have them) is the reference: the fast
# decoder must accept exactly what it accepts and give the same objects; everything it does not
# take is left to `loads_strict` to refuse and word.

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(_json_values)
def test_decoder_gives_the_reference_objects(value):
    raw = json.dumps(value).encode()
    assert repr(_loads(raw)) == repr(
        loads_strict(raw, nul="replace")
    )  # int stays int, 1.0 stays float


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"1e400",
        b'"\\ud800"',
        b"\xef\xbb\xbf{}",
        '{"a": "\u00e9"}'.encode("utf-16"),
        b"123456789012345678901234567890",
        b'{"a": 1, "a": 2}',
        b"[" * 5000,
        b'{"a": "x\\u0000"}',
        b'{"k\\u0000": 1}',
        b'["\\\\u0000"]',  # an escaped backslash, then the text u0000: no NUL, taken
    ],
)
def test_bodies_the_fast_decoder_leaves_alone_get_the_reference_answer(raw):
    try:
        expected = repr(loads_strict(raw, nul="replace"))
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)) as caught:
            _loads(raw)
        assert str(caught.value) == str(exc)
    else:
        assert repr(_loads(raw)) == expected


def test_a_nul_in_an_agent_body_becomes_the_replacement_character() -> None:
    """An agent's report is kept (no text column can hold a NUL); an operator's body with one
    is refused. An escaped backslash followed by the text u0000 is no NUL."""
    assert _loads(b'{"a": "x\\u0000", "k\\u0000": [["\\u0000"]]}') == {
        "a": "x\ufffd",
        "k\ufffd": [["\ufffd"]],
    }
    with pytest.raises(ValueError, match="NUL character"):
        loads_strict(b'{"a": "x\\u0000"}')
    assert _loads(b'["\\\\u0000"]') == loads_strict(b'["\\\\u0000"]') == ["\\u0000"]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_decoder_accepts_and_refuses_what_the_reference_does(raw):
    try:
        expected = repr(loads_strict(raw, nul="replace"))
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            _loads(raw)
    else:
        assert repr(_loads(raw)) == expected


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    st.dictionaries(
        # Keys outside the checked enrichment (domain/enrichment.py), so any value is kept.
        st.sampled_from(["listeners", "future", "x"]),
        _json_values,
    ),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, "systemd"]),
)
def test_haproxy_block_as_dict_is_model_dump_without_nones(extra, active, source):
    block = parse_heartbeat(
        _raw(haproxy={"monitored": True, "active": active, "source": source, **extra})
    ).haproxy
    assert block.as_dict() == block.model_dump(exclude_none=True)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.integers(min_value=0, max_value=300).map(str), min_size=3, max_size=5).map(".".join)
    | st.text(alphabet="0123456789.x ", max_size=18)
)
def test_ip_field_accepts_exactly_what_ipaddress_accepts(text):
    try:
        expected = str(IPv4Address(text))
    except ValueError:
        with pytest.raises(BadPayload):
            parse_heartbeat(_raw(ip=text))
    else:
        assert parse_heartbeat(_raw(ip=text)).ip == expected


def test_ip_written_with_leading_zeros_is_refused():
    with pytest.raises(BadPayload, match="not an IPv4 address"):
        parse_heartbeat(_raw(ip="192.168.001.1"))
