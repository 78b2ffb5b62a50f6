"""The Cloudflare provider against the Cloudflare API emulator: the shared contract, then what
only Cloudflare has (proxied records, its error envelope, pagination, token permissions)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from integration.dns.provider_contract import ProviderContract
from serverctl.dns.cloudflare import CloudflareProvider
from serverctl.dns.registry import build
from serverctl.errors import (
    ProviderAuthError,
    ProviderError,
    RateLimited,
    ValidationError,
)
from support.cloudflare_emulator import ACCOUNT_ID, TOKEN, CloudflareEmulator
from support.util import free_port

ZONE = "example.com"


@pytest.fixture
def emulator() -> Iterator[CloudflareEmulator]:
    with CloudflareEmulator(zones=(ZONE, "example.org")) as emu:
        yield emu


def _provider(api_base: str, token: str = TOKEN) -> CloudflareProvider:
    settings = {"api_token": token, "account_id": ACCOUNT_ID, "api_base": api_base}
    provider = build("cloudflare", dict(settings), timeout=5.0)
    assert isinstance(provider, CloudflareProvider)
    return provider


@pytest.fixture
def provider(emulator: CloudflareEmulator) -> Iterator[CloudflareProvider]:
    provider = _provider(emulator.api_base)
    yield provider
    provider.close()


@pytest.fixture
def zone() -> str:
    return ZONE


@pytest.fixture
def bad_auth(emulator: CloudflareEmulator) -> Iterator[CloudflareProvider]:
    provider = _provider(emulator.api_base, token="not-the-right-token")
    yield provider
    provider.close()


@pytest.fixture
def unreachable() -> Iterator[CloudflareProvider]:
    provider = _provider(f"http://127.0.0.1:{free_port()}/client/v4")
    yield provider
    provider.close()


class TestCloudflareContract(ProviderContract):
    pass


# -- proxied records ----------------------------------------------------------------------------


def test_proxied_flag_round_trips_with_the_automatic_ttl(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    provider.set_a(ZONE, "lb", "192.0.2.10", 300, proxied=True)
    record = provider.get_a(ZONE, "lb")
    assert record is not None
    assert record.proxied is True
    assert record.ttl == 1  # Cloudflare's "automatic": the only TTL a proxied record has
    sent = [r.body for r in emulator.requests if r.method in ("POST", "PUT")]
    assert sent[-1] == {
        "type": "A",
        "name": "lb.example.com",
        "content": "192.0.2.10",
        "ttl": 1,
        "proxied": True,
    }

    provider.set_a(ZONE, "lb", "192.0.2.10", 300, proxied=False)
    record = provider.get_a(ZONE, "lb")
    assert record is not None
    assert (record.proxied, record.ttl) == (False, 300)


def test_proxied_record_logs_that_the_asked_ttl_is_not_used(
    provider: CloudflareProvider, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        provider.set_a(ZONE, "lb", "192.0.2.10", 300, proxied=True)
    assert "asked TTL 300 is not used" in caplog.text


def test_dns_only_record_reads_back_as_not_proxied(provider: CloudflareProvider):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    record = provider.get_a(ZONE, "lb")
    assert record is not None
    assert record.proxied is False


# -- how records are changed --------------------------------------------------------------------


def test_ttl_is_always_sent(provider: CloudflareProvider, emulator: CloudflareEmulator):
    provider.set_a(ZONE, "lb", "192.0.2.10", 120)
    provider.set_a(ZONE, "lb", "192.0.2.11", 120)
    provider.set_txt(ZONE, "_acme-challenge.lb", "abc", 60)
    writes = [r for r in emulator.requests if r.method in ("POST", "PUT")]
    assert len(writes) == 3
    assert all(isinstance(r.body["ttl"], int) for r in writes)
    assert all(r.headers["content-type"] == "application/json" for r in writes)


def test_a_record_is_updated_in_place_and_duplicates_are_deleted(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    first = emulator.add_record(ZONE, type="A", name="lb.example.com", content="192.0.2.1", ttl=60)
    emulator.add_record(ZONE, type="A", name="lb.example.com", content="192.0.2.2", ttl=60)
    provider.set_a(ZONE, "lb", "198.51.100.9", 60)
    left = emulator.records_of(ZONE, "lb.example.com")
    assert [(r["content"], r["ttl"]) for r in left] == [("198.51.100.9", 60)]
    methods = [r.method for r in emulator.requests if r.method != "GET"]
    assert methods == ["PUT", "DELETE"]
    assert left[0]["id"] == first["id"]


def test_unchanged_a_record_is_not_written_again(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    before = len(emulator.requests)
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    assert all(r.method == "GET" for r in emulator.requests[before:])


def test_txt_values_are_sent_quoted_and_read_back_bare(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    value = "lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM"
    provider.set_txt(ZONE, "_acme-challenge.lb", value, 60)
    stored = emulator.records_of(ZONE, "_acme-challenge.lb.example.com")
    assert [r["content"] for r in stored] == [f'"{value}"']
    record = provider.get_txt(ZONE, "_acme-challenge.lb")
    assert record is not None
    assert record.values == (value,)


def test_bare_txt_made_elsewhere_is_read_and_removed(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    emulator.add_record(
        ZONE, type="TXT", name="_acme-challenge.example.com", content="bare", ttl=60
    )
    record = provider.get_txt(ZONE, "_acme-challenge")
    assert record is not None
    assert record.values == ("bare",)
    provider.delete_txt(ZONE, "_acme-challenge", "bare")
    assert emulator.records_of(ZONE, "_acme-challenge.example.com") == []


def test_txt_change_never_touches_the_other_value(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    provider.set_txt(ZONE, "_acme-challenge", "one", 60)
    kept = emulator.records_of(ZONE, "_acme-challenge.example.com")[0]
    provider.set_txt(ZONE, "_acme-challenge", "two", 60)
    provider.delete_txt(ZONE, "_acme-challenge", "two")
    assert emulator.records_of(ZONE, "_acme-challenge.example.com") == [kept]


# -- errors -------------------------------------------------------------------------------------


def test_rate_limit_gives_retry_after_from_the_header(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    emulator.fail_next(1, status=429, retry_after=17)
    with pytest.raises(RateLimited) as caught:
        provider.get_a(ZONE, "lb")
    assert caught.value.retry_after == 17
    assert "throttling" in caught.value.message
    assert provider.get_a(ZONE, "lb") is None  # the next request goes through


def test_rate_limit_in_check_is_reported(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    emulator.fail_next(1, status=429, retry_after=5)
    result = provider.check(ZONE)
    assert not result.ok
    assert "rate limit" in result.detail


def test_server_error_carries_cloudflare_message(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    emulator.fail_next(1, status=502)
    with pytest.raises(ProviderError) as caught:
        provider.get_a(ZONE, "lb")
    assert type(caught.value) is not ProviderAuthError
    assert "HTTP 502" in caught.value.message
    assert "An unknown error has occurred" in caught.value.message


def test_error_envelope_message_reaches_the_exception(provider: CloudflareProvider):
    # Cloudflare refuses TTLs below 60 (other than 1) on ordinary plans.
    with pytest.raises(ProviderError) as caught:
        provider.set_a(ZONE, "lb", "192.0.2.10", 30)
    assert "TTL must be between 60 and 86400 seconds, or 1 for Automatic." in caught.value.message
    assert "9021" in caught.value.message


def test_bad_token_message_is_cloudflares(bad_auth: CloudflareProvider):
    result = bad_auth.check(ZONE)
    assert result.detail == "Cloudflare refused the API token: Invalid API Token (1000)"


def test_token_is_never_in_messages_or_logs(
    bad_auth: CloudflareProvider, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.DEBUG):
        result = bad_auth.check(ZONE)
        with pytest.raises(ProviderAuthError) as caught:
            bad_auth.set_a(ZONE, "lb", "192.0.2.1", 60)
    for text in (result.detail, caught.value.message, caplog.text, repr(bad_auth.config)):
        assert "not-the-right-token" not in text


# -- tokens and permissions ---------------------------------------------------------------------


def test_token_without_dns_edit_permission_is_diagnosed(emulator: CloudflareEmulator):
    emulator.add_token("read-only-token", frozenset({"zone:read", "dns:read"}))
    provider = _provider(emulator.api_base, token="read-only-token")
    try:
        result = provider.check(ZONE)
        assert not result.ok
        assert "no permission to edit DNS records" in result.detail
        assert "Zone / DNS / Edit" in result.detail
        assert provider.get_a(ZONE, "lb") is None  # reading still works
        with pytest.raises(ProviderAuthError):
            provider.set_a(ZONE, "lb", "192.0.2.1", 60)
    finally:
        provider.close()
    assert emulator.records_of(ZONE, "lb.example.com") == []


def test_edit_probe_changes_nothing(provider: CloudflareProvider, emulator: CloudflareEmulator):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    before = emulator.records_of(ZONE)
    assert provider.check(ZONE).ok
    assert emulator.records_of(ZONE) == before


def test_token_without_dns_read_permission_is_diagnosed(emulator: CloudflareEmulator):
    emulator.add_token("zone-only-token", frozenset({"zone:read"}))
    provider = _provider(emulator.api_base, token="zone-only-token")
    try:
        result = provider.check(ZONE)
    finally:
        provider.close()
    assert not result.ok
    assert "no permission to read DNS records" in result.detail


def test_account_owned_token_is_verified_under_its_account(emulator: CloudflareEmulator):
    emulator.add_token("account-token", owner="account")
    provider = _provider(emulator.api_base, token="account-token")
    try:
        result = provider.check(ZONE)
    finally:
        provider.close()
    assert result.ok, result.detail
    paths = [r.path for r in emulator.requests if r.path.endswith("/tokens/verify")]
    assert paths == [
        "/client/v4/user/tokens/verify",
        f"/client/v4/accounts/{ACCOUNT_ID}/tokens/verify",
    ]


def test_disabled_token_is_diagnosed(emulator: CloudflareEmulator):
    emulator.add_token("old-token", status="disabled")
    provider = _provider(emulator.api_base, token="old-token")
    try:
        result = provider.check()
    finally:
        provider.close()
    assert not result.ok
    assert "token is disabled" in result.detail


# -- zones --------------------------------------------------------------------------------------


def test_zones_list_follows_pagination(emulator: CloudflareEmulator):
    emulator.max_per_page = 7
    for n in range(20):
        emulator.add_zone(f"zone{n:02d}.example")
    emulator.add_zone("elsewhere.example", account_id="f" * 32)
    provider = _provider(emulator.api_base)
    try:
        zones = provider.zones()
    finally:
        provider.close()
    assert len(zones) == 22
    assert "elsewhere.example" not in zones
    pages = [r.query["page"] for r in emulator.requests if r.path.endswith("/zones")]
    assert pages == [["1"], ["2"], ["3"], ["4"]]


def test_check_without_zone_counts_the_zones(provider: CloudflareProvider):
    result = provider.check()
    assert result.ok
    assert "2 zone(s)" in result.detail


def test_zone_id_is_looked_up_once(provider: CloudflareProvider, emulator: CloudflareEmulator):
    provider.get_a(ZONE, "a")
    provider.get_a(ZONE, "b")
    assert sum(r.path.endswith("/zones") for r in emulator.requests) == 1


def test_zone_added_again_under_a_new_id_is_found_after_one_failure(
    provider: CloudflareProvider, emulator: CloudflareEmulator
):
    provider.get_a(ZONE, "lb")
    del emulator.zones[emulator.zone_id(ZONE)]
    emulator.add_zone(ZONE)
    with pytest.raises(ProviderError) as caught:
        provider.get_a(ZONE, "lb")
    assert "Could not route" in caught.value.message
    assert provider.get_a(ZONE, "lb") is None


# -- settings -----------------------------------------------------------------------------------


def test_settings_name_the_bad_key():
    with pytest.raises(ValidationError) as caught:
        build("cloudflare", {"api_token": "x", "account_id": "example.com"})
    assert "account_id" in caught.value.message
    with pytest.raises(ValidationError) as caught:
        build("cloudflare", {"account_id": ACCOUNT_ID})
    assert "api_token" in caught.value.message


def test_provider_declares_its_secret_and_capability():
    assert CloudflareProvider.secret_fields == frozenset({"api_token"})
    assert CloudflareProvider.supports_proxied is True
