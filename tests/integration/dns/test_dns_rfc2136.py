"""The RFC 2136 provider against a real PowerDNS server taking signed dynamic updates: the
shared contract, then the TSIG diagnoses and what the server answers after an update."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import pytest

from integration.dns.provider_contract import Build, ProviderContract, building
from serverctl.dns import registry
from serverctl.dns.base import DNSProvider
from serverctl.errors import ProviderAuthError, ProviderUnreachable, ValidationError
from support.powerdns import PowerDNS, free_dns_port


@pytest.fixture
def build() -> Iterator[Build]:
    yield from building("rfc2136")


def _random_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def zone(pdns_server: PowerDNS) -> str:
    return pdns_server.zone


@pytest.fixture
def provider(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    return build(**pdns_server.rfc2136_config())


@pytest.fixture
def bad_auth(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    return build(**{**pdns_server.rfc2136_config(), "tsig_secret": _random_secret()})


@pytest.fixture
def unreachable(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    config = {**pdns_server.rfc2136_config(), "port": free_dns_port(), "timeout": 1}
    return build(**config)


class TestRFC2136Contract(ProviderContract):
    pass


def test_an_update_is_answered_by_the_server_and_seen_through_its_api(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    provider.set_a(zone, "lb", "192.0.2.10", 60)
    assert pdns_server.query_a("lb") == ["192.0.2.10"]
    stored = pdns_server.api("GET", f"/zones/{zone}.?rrset_name=lb.{zone}.&rrset_type=A")
    [rrset] = [s for s in stored["rrsets"] if s["type"] == "A"]
    assert rrset["ttl"] == 60
    assert [r["content"] for r in rrset["records"]] == ["192.0.2.10"]


def test_txt_values_with_spaces_and_quotes_round_trip(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    value = 'v=spf1 include:"mail.example.net" -all \\ with spaces'
    provider.set_txt(zone, "_spf", value, 60)
    record = provider.get_txt(zone, "_spf")
    assert record is not None and record.values == (value,)
    assert pdns_server.query("_spf", "TXT") == [value]
    long_value = "k=" + "y" * 400  # more than one 255-byte string
    provider.set_txt(zone, "long", long_value, 60)
    assert pdns_server.query("long", "TXT") == [long_value]


def test_an_unsigned_update_is_refused_with_a_tsig_diagnosis(
    pdns_server: PowerDNS, zone: str, build: Build
):
    config = pdns_server.rfc2136_config()
    del config["tsig_key_name"], config["tsig_secret"]
    provider = build(**config)
    result = provider.check(zone)
    assert not result.ok
    assert "refused the unsigned update" in result.detail
    assert "tsig_key_name" in result.detail
    with pytest.raises(ProviderAuthError, match="unsigned"):
        provider.set_a(zone, "lb", "192.0.2.10", 60)
    assert pdns_server.query_a("lb") == []


def test_a_known_key_the_zone_does_not_allow_is_refused(
    pdns_server: PowerDNS, zone: str, build: Build
):
    secret = _random_secret()
    key = {"name": "other-key", "algorithm": "hmac-sha256", "key": secret}
    pdns_server.api("POST", "/tsigkeys", key)
    provider = build(
        **{**pdns_server.rfc2136_config(), "tsig_key_name": "other-key", "tsig_secret": secret}
    )
    with pytest.raises(ProviderAuthError, match="allow dynamic updates for this key"):
        provider.set_a(zone, "lb", "192.0.2.10", 60)
    assert not provider.check(zone).ok


def test_a_wrong_algorithm_is_a_key_error(pdns_server: PowerDNS, zone: str, build: Build):
    provider = build(**{**pdns_server.rfc2136_config(), "tsig_algorithm": "hmac-sha512"})
    result = provider.check(zone)
    assert not result.ok
    assert "tsig_algorithm" in result.detail


def test_nameservers_and_zones_come_from_the_settings(
    pdns_server: PowerDNS, zone: str, build: Build
):
    provider = build(**pdns_server.rfc2136_config())
    assert provider.nameservers(zone) == [("127.0.0.1", pdns_server.dns_port)]
    assert provider.zones() == [zone]
    config = pdns_server.rfc2136_config()
    del config["zone"]
    no_zone = build(**config)
    assert no_zone.zones() == []
    result = no_zone.check()
    assert result.ok, result.detail
    assert "serverctl-test" in result.detail


def test_a_silent_udp_port_fails_within_the_timeout(pdns_server: PowerDNS, zone: str, build: Build):
    config = {**pdns_server.rfc2136_config(), "port": free_dns_port(), "tcp": False}
    provider = build(**{**config, "timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(ProviderUnreachable, match="did not answer in 0.5 s|cannot reach"):
        provider.get_a(zone, "lb")
    assert time.monotonic() - started < 2


def test_settings_are_checked_and_the_secret_stays_out_of_repr():
    base = {"server": "192.0.2.53", "tsig_key_name": "k", "tsig_secret": _random_secret()}
    with pytest.raises(ValidationError, match="base64"):
        registry.build("rfc2136", {**base, "tsig_secret": "not base64!"})
    with pytest.raises(ValidationError, match="together"):
        registry.build("rfc2136", {"server": "192.0.2.53", "tsig_key_name": "k"})
    with pytest.raises(ValidationError, match="tsig_algorithm"):
        registry.build("rfc2136", {**base, "tsig_algorithm": "hmac-sha3"})
    with pytest.raises(ValidationError, match="zone"):
        registry.build("rfc2136", {**base, "zone": "not a zone"})
    provider = registry.build("rfc2136", {**base, "zone": "Demo.Example."})
    assert provider.zones() == ["demo.example"]
    assert base["tsig_secret"] not in repr(provider.config)
    assert provider.secret_fields == {"tsig_secret"}
