"""The PowerDNS provider against a real pdns_server: the shared contract, then what is
particular to PowerDNS (the DNS port answers API changes, TXT quoting, error mapping)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.dns.provider_contract import Build, ProviderContract, building
from serverctl.dns import registry
from serverctl.dns.base import DNSProvider
from serverctl.errors import ProviderError, ValidationError
from support.powerdns import PowerDNS
from support.util import free_port


@pytest.fixture
def build() -> Iterator[Build]:
    yield from building("powerdns")


@pytest.fixture
def zone(pdns_server: PowerDNS) -> str:
    return pdns_server.zone


@pytest.fixture
def provider(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    return build(**pdns_server.powerdns_config())


@pytest.fixture
def bad_auth(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    return build(**{**pdns_server.powerdns_config(), "api_key": "not-the-key"})


@pytest.fixture
def unreachable(pdns_server: PowerDNS, build: Build) -> DNSProvider:
    return build(api_url=f"http://127.0.0.1:{free_port()}", api_key="any")


class TestPowerDNSContract(ProviderContract):
    pass


def test_an_a_record_set_through_the_api_is_answered_at_once_by_the_dns_port(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    provider.set_a(zone, "lb", "192.0.2.10", 60)
    assert pdns_server.query_a("lb") == ["192.0.2.10"]
    provider.set_a(zone, "lb", "198.51.100.7", 60)  # no cache: the new answer straight away
    assert pdns_server.query_a("lb") == ["198.51.100.7"]


def test_txt_values_are_quoted_for_powerdns_and_read_back_unquoted(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    value = 'v=spf1 include:"mail.example.net" -all \\ with spaces'
    provider.set_txt(zone, "_spf", value, 60)
    record = provider.get_txt(zone, "_spf")
    assert record is not None and record.values == (value,)
    assert pdns_server.query("_spf", "TXT") == [value]
    stored = pdns_server.api("GET", f"/zones/{zone}.?rrset_name=_spf.{zone}.&rrset_type=TXT")
    [content] = [r["content"] for s in stored["rrsets"] if s["type"] == "TXT" for r in s["records"]]
    assert content == '"v=spf1 include:\\"mail.example.net\\" -all \\\\ with spaces"'


def test_a_txt_value_longer_than_255_bytes_is_split_and_joined_again(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    value = "k=" + "x" * 400
    provider.set_txt(zone, "long", value, 60)
    record = provider.get_txt(zone, "long")
    assert record is not None and record.values == (value,)
    assert pdns_server.query("long", "TXT") == [value]


def test_nameservers_is_the_dns_listener_when_configured(
    pdns_server: PowerDNS, zone: str, build: Build
):
    with_ns = build(**pdns_server.powerdns_config())
    assert with_ns.nameservers(zone) == [("127.0.0.1", pdns_server.dns_port)]
    without = build(api_url=pdns_server.api_url, api_key=pdns_server.api_key)
    assert without.nameservers(zone) == []


def test_a_powerdns_error_is_reported_with_its_own_message(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    cname = {"name": f"alias.{zone}.", "type": "CNAME", "ttl": 60, "changetype": "REPLACE"}
    cname["records"] = [{"content": f"lb.{zone}.", "disabled": False}]
    pdns_server.api("PATCH", f"/zones/{zone}.", {"rrsets": [cname]})
    with pytest.raises(ProviderError, match="PowerDNS answered HTTP 422: .*(CNAME|onflict)"):
        provider.set_a(zone, "alias", "192.0.2.1", 60)


def test_a_wrong_server_id_is_diagnosed(pdns_server: PowerDNS, zone: str, build: Build):
    provider = build(**{**pdns_server.powerdns_config(), "server_id": "elsewhere"})
    result = provider.check(zone)
    assert not result.ok
    assert "server_id" in result.detail


def test_a_stopped_server_is_unreachable_and_serves_again_after_a_restart(
    provider: DNSProvider, pdns_server: PowerDNS, zone: str
):
    provider.set_a(zone, "lb", "192.0.2.10", 60)
    pdns_server.stop()
    result = provider.check(zone)
    assert not result.ok and "cannot reach" in result.detail
    pdns_server.start()
    assert provider.check(zone).ok
    assert pdns_server.query_a("lb") == ["192.0.2.10"]


def test_settings_are_checked_and_the_api_key_stays_out_of_repr():
    with pytest.raises(ValidationError, match="api_url"):
        registry.build("powerdns", {"api_url": "ns1:8081", "api_key": "k"})
    with pytest.raises(ValidationError, match="nameserver"):
        registry.build("powerdns", {"api_url": "http://ns1", "api_key": "k", "nameserver": "a:0"})
    with pytest.raises(ValidationError, match="apikey: Extra inputs"):
        registry.build("powerdns", {"api_url": "http://ns1", "api_key": "k", "apikey": "k"})
    provider = registry.build("powerdns", {"api_url": "http://ns1:8081/api/v1/", "api_key": "s3"})
    assert provider.config.model_dump()["api_url"] == "http://ns1:8081"
    assert "s3" not in repr(provider.config)
    assert provider.secret_fields == {"api_key"}
