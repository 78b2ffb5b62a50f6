"""The contract every DNS provider keeps, run against each provider's real or emulated service.

A provider's test module subclasses `ProviderContract` and supplies the fixtures:
  provider      a provider with working credentials for `zone`
  zone          a zone the credentials may edit (apex, no trailing dot)
  bad_auth      the same provider with wrong credentials
  unreachable   the same provider pointed at a port where nothing listens
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from serverctl.dns import registry
from serverctl.dns.base import DNSProvider
from serverctl.errors import ProviderAuthError, ProviderUnreachable, ValidationError, ZoneNotFound

Build = Callable[..., DNSProvider]


def building(kind: str) -> Iterator[Build]:
    """For a module's `build` fixture: builds `kind` providers from settings (keyword
    arguments), each closed after the test."""
    made: list[DNSProvider] = []

    def _build(**config: object) -> DNSProvider:
        made.append(registry.build(kind, config, timeout=5))
        return made[-1]

    yield _build
    for provider in made:
        provider.close()


class ProviderContract:
    def test_check_passes_with_good_credentials_and_zone(self, provider: DNSProvider, zone: str):
        result = provider.check(zone)
        assert result.ok, result.detail
        assert zone in result.detail

    def test_zones_lists_the_zone(self, provider: DNSProvider, zone: str):
        assert zone in provider.zones()

    def test_missing_a_record_reads_as_none(self, provider: DNSProvider, zone: str):
        assert provider.get_a(zone, "nothing-here") is None

    def test_set_a_creates_then_replaces_the_record(self, provider: DNSProvider, zone: str):
        provider.set_a(zone, "lb", "192.0.2.10", 60)
        first = provider.get_a(zone, "lb")
        assert first is not None
        assert first.name == f"lb.{zone}"
        assert first.values == ("192.0.2.10",)
        assert first.ttl == 60
        provider.set_a(zone, f"lb.{zone}", "198.51.100.7", 120)
        second = provider.get_a(zone, "lb")
        assert second is not None
        assert second.values == ("198.51.100.7",)
        assert second.ttl == 120

    def test_set_a_refuses_a_non_ipv4_address(self, provider: DNSProvider, zone: str):
        with pytest.raises(ValidationError):
            provider.set_a(zone, "lb", "2001:db8::1", 60)

    def test_txt_values_are_added_and_removed_one_by_one(self, provider: DNSProvider, zone: str):
        name = "_acme-challenge.lb"
        provider.set_txt(zone, name, "token-one", 60)
        provider.set_txt(zone, name, "token-two", 60)
        provider.set_txt(zone, name, "token-two", 60)  # idempotent
        record = provider.get_txt(zone, name)
        assert record is not None
        assert sorted(record.values) == ["token-one", "token-two"]
        provider.delete_txt(zone, name, "token-one")
        record = provider.get_txt(zone, name)
        assert record is not None
        assert record.values == ("token-two",)
        provider.delete_txt(zone, name, "token-two")
        assert provider.get_txt(zone, name) is None
        provider.delete_txt(zone, name, "token-two")  # nothing left: no error

    def test_bad_credentials_are_diagnosed(self, bad_auth: DNSProvider, zone: str):
        result = bad_auth.check(zone)
        assert not result.ok
        assert any(word in result.detail.lower() for word in ("credential", "token", "key", "auth"))
        with pytest.raises(ProviderAuthError):
            bad_auth.get_a(zone, "lb")

    def test_missing_zone_is_diagnosed(self, provider: DNSProvider):
        result = provider.check("no-such-zone.example")
        assert not result.ok
        assert "no-such-zone.example" in result.detail
        with pytest.raises(ZoneNotFound):
            provider.set_a("no-such-zone.example", "lb", "192.0.2.1", 60)

    def test_unreachable_server_is_diagnosed(self, unreachable: DNSProvider, zone: str):
        result = unreachable.check(zone)
        assert not result.ok
        assert any(
            word in result.detail.lower() for word in ("reach", "refused", "timed out", "answer")
        )
        with pytest.raises(ProviderUnreachable):
            unreachable.get_a(zone, "lb")
