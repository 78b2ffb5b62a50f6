"""The cPanel/WHM provider against the WHM API 1 emulator over real TLS: the shared contract,
then what is particular to WHM (serial-checked edits, explicit TTLs, TLS trust, no proxy)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.dns.provider_contract import ProviderContract
from serverctl.dns.base import Record
from serverctl.dns.cpanel import CpanelProvider
from serverctl.dns.registry import build
from serverctl.errors import (
    NotSupported,
    ProviderAuthError,
    ProviderError,
    RateLimited,
    ValidationError,
)
from support.tls import make_ca_and_server_cert
from support.util import free_port
from support.whm_emulator import TOKEN, USERNAME, WhmEmulator

ZONE = "example.com"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_ca_and_server_cert(tmp_path_factory.mktemp("whm-pki"))


@pytest.fixture
def emulator(pki: tuple[Path, Path, Path]) -> Iterator[WhmEmulator]:
    _, cert, key = pki
    with WhmEmulator(cert, key, zones=(ZONE, "example.org")) as emu:
        yield emu


def _settings(port: int, ca: Path | None, **changes: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "username": USERNAME,
        "api_token": TOKEN,
    }
    if ca is not None:
        settings["ca_bundle"] = ca.read_text()
    settings.update(changes)
    return settings


def _provider(port: int, ca: Path | None, **changes: object) -> CpanelProvider:
    provider = build("cpanel", _settings(port, ca, **changes), timeout=5.0)
    assert isinstance(provider, CpanelProvider)
    return provider


@pytest.fixture
def provider(emulator: WhmEmulator, pki: tuple[Path, Path, Path]) -> Iterator[CpanelProvider]:
    provider = _provider(emulator.port, pki[0])
    yield provider
    provider.close()


@pytest.fixture
def zone() -> str:
    return ZONE


@pytest.fixture
def bad_auth(emulator: WhmEmulator, pki: tuple[Path, Path, Path]) -> Iterator[CpanelProvider]:
    provider = _provider(emulator.port, pki[0], api_token="NOTTHETOKEN")
    yield provider
    provider.close()


@pytest.fixture
def unreachable(pki: tuple[Path, Path, Path]) -> Iterator[CpanelProvider]:
    provider = _provider(free_port(), pki[0])
    yield provider
    provider.close()


class TestCpanelContract(ProviderContract):
    pass


def _sent_records(emulator: WhmEmulator) -> list[tuple[str, dict[str, object]]]:
    """Every add/edit item of every mass_edit_dns_zone request, decoded."""
    items = []
    for request in emulator.edits():
        for action in ("add", "edit"):
            items += [(action, json.loads(raw)) for raw in request.params.get(action, [])]
    return items


# -- how records are changed --------------------------------------------------------------------


def test_ttl_is_always_sent(provider: CpanelProvider, emulator: WhmEmulator):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    provider.set_a(ZONE, "lb", "192.0.2.11", 90)
    provider.set_txt(ZONE, "_acme-challenge.lb", "token-one", 120)
    sent = _sent_records(emulator)
    assert [(action, item["ttl"]) for action, item in sent] == [
        ("add", 60),
        ("edit", 90),
        ("add", 120),
    ]
    assert all(isinstance(item["ttl"], int) for _, item in sent)


def test_a_record_is_edited_in_place(provider: CpanelProvider, emulator: WhmEmulator):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    provider.set_a(ZONE, "lb", "198.51.100.7", 60)
    actions = [
        next(k for k in ("add", "edit", "remove") if k in r.params) for r in emulator.edits()
    ]
    assert actions == ["add", "edit"]
    edit = json.loads(emulator.edits()[-1].params["edit"][0])
    assert edit["dname"] == "lb.example.com."
    assert edit["data"] == ["198.51.100.7"]
    assert [r.data for r in emulator.records(ZONE, "lb.example.com", "A")] == [("198.51.100.7",)]


def test_duplicate_a_records_are_collapsed(provider: CpanelProvider, emulator: WhmEmulator):
    emulator.add_record(ZONE, "lb.example.com", "A", 60, "192.0.2.1")
    emulator.add_record(ZONE, "lb.example.com", "A", 60, "192.0.2.2")
    emulator.add_record(ZONE, "lb.example.com", "A", 300, "192.0.2.3")
    provider.set_a(ZONE, "lb", "192.0.2.2", 60)
    assert [r.data for r in emulator.records(ZONE, "lb.example.com", "A")] == [("192.0.2.2",)]


def test_every_edit_names_the_serial_it_was_read_with(
    provider: CpanelProvider, emulator: WhmEmulator
):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    provider.set_a(ZONE, "lb", "192.0.2.11", 60)
    serials = [int(r.params["serial"][0]) for r in emulator.edits()]
    assert serials == [emulator.serials[ZONE] - 2, emulator.serials[ZONE] - 1]


def test_edit_raced_by_another_editor_is_retried_on_the_new_serial(
    provider: CpanelProvider, emulator: WhmEmulator
):
    emulator.interfere(1)
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    serials = [int(r.params["serial"][0]) for r in emulator.edits()]
    assert len(serials) == 2
    assert serials[1] == serials[0] + 1
    assert [r.data for r in emulator.records(ZONE, "lb.example.com", "A")] == [("192.0.2.10",)]


def test_a_zone_that_never_settles_is_an_error(provider: CpanelProvider, emulator: WhmEmulator):
    emulator.interfere(100)
    with pytest.raises(ProviderError) as caught:
        provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    assert "does not match" in caught.value.message
    assert len(emulator.edits()) == 4  # the first try and three fresh reads


def test_long_txt_value_is_split_into_character_strings(
    provider: CpanelProvider, emulator: WhmEmulator
):
    value = "v" * 300
    provider.set_txt(ZONE, "_long", value, 60)
    (line,) = emulator.records(ZONE, "_long.example.com", "TXT")
    assert [len(part) for part in line.data] == [255, 45]
    record = provider.get_txt(ZONE, "_long")
    assert record is not None
    assert record.values == (value,)


def test_records_made_elsewhere_are_read(provider: CpanelProvider):
    record = provider.get_a(ZONE, "@")
    assert record is not None
    assert record.values == ("203.0.113.1",)
    assert record.ttl == 14400
    assert record.proxied is None


# -- refusals -----------------------------------------------------------------------------------


def test_proxied_records_are_refused(provider: CpanelProvider, emulator: WhmEmulator):
    with pytest.raises(NotSupported):
        provider.set_a(ZONE, "lb", "192.0.2.10", 60, proxied=True)
    assert emulator.requests == []


def test_rate_limit_gives_retry_after(provider: CpanelProvider, emulator: WhmEmulator):
    emulator.fail_next(1, status=429, retry_after=12)
    with pytest.raises(RateLimited) as caught:
        provider.get_a(ZONE, "lb")
    assert caught.value.retry_after == 12
    assert provider.get_a(ZONE, "lb") is None


def test_server_error_is_a_provider_error(provider: CpanelProvider, emulator: WhmEmulator):
    emulator.fail_next(1, status=503)
    result = provider.check(ZONE)
    assert not result.ok
    assert "HTTP 503" in result.detail


def test_missing_privilege_is_an_auth_error(provider: CpanelProvider, emulator: WhmEmulator):
    emulator.deny("mass_edit_dns_zone")
    with pytest.raises(ProviderAuthError) as caught:
        provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    assert "Access denied" in caught.value.message
    assert "edit-dns" in caught.value.message


def test_whm_reason_reaches_the_exception(provider: CpanelProvider, emulator: WhmEmulator):
    # WHM refuses a record whose data it cannot use (the base class checks addresses first,
    # so the hook is called directly); WHM's reason is what the operator sees.
    with pytest.raises(ProviderError) as caught:
        provider._put(ZONE, Record("lb.example.com", "A", ("bad",), 60))
    assert "“bad” is not a valid IPv4 address." in caught.value.message


def test_bad_token_message_names_the_user(bad_auth: CpanelProvider):
    result = bad_auth.check(ZONE)
    assert "refused the API token of user root" in result.detail
    assert "HTTP 403: Access denied" in result.detail


def test_token_is_never_in_messages_or_logs(
    bad_auth: CpanelProvider, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.DEBUG):
        result = bad_auth.check(ZONE)
    for text in (result.detail, caplog.text, repr(bad_auth.config)):
        assert "NOTTHETOKEN" not in text


# -- TLS ----------------------------------------------------------------------------------------


def test_wrong_ca_is_a_tls_error(emulator: WhmEmulator, tmp_path: Path):
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other")
    provider = _provider(emulator.port, other_ca)
    try:
        result = provider.check(ZONE)
    finally:
        provider.close()
    assert not result.ok
    assert "TLS error" in result.detail
    assert emulator.requests == []


def test_system_cas_do_not_trust_a_private_certificate(emulator: WhmEmulator):
    provider = _provider(emulator.port, None)
    try:
        result = provider.check(ZONE)
    finally:
        provider.close()
    assert "TLS error" in result.detail


def test_verify_tls_false_accepts_any_certificate(emulator: WhmEmulator):
    provider = _provider(emulator.port, None, verify_tls=False)
    try:
        result = provider.check(ZONE)
    finally:
        provider.close()
    assert result.ok, result.detail


# -- zones and settings -------------------------------------------------------------------------


def test_check_without_zone_counts_the_zones(provider: CpanelProvider):
    result = provider.check()
    assert result.ok
    assert "2 zone(s)" in result.detail


def test_requests_use_api_version_1_and_the_whm_header(
    provider: CpanelProvider, emulator: WhmEmulator
):
    provider.set_a(ZONE, "lb", "192.0.2.10", 60)
    assert {r.params["api.version"][0] for r in emulator.requests} == {"1"}
    assert {r.authorization for r in emulator.requests} == {f"whm {USERNAME}:{TOKEN}"}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"host": "https://whm.example.com:2087/"}, "host"),
        ({"host": "whm.example.com:2087"}, "host"),
        ({"port": 70000}, "port"),
        ({"username": "root:x"}, "username"),
        ({"ca_bundle": "not a certificate"}, "ca_bundle"),
        (
            {"ca_bundle": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "ca_bundle",
        ),
        ({"api_token": ""}, "api_token"),
    ],
)
def test_settings_name_the_bad_key(changes: dict[str, object], key: str):
    with pytest.raises(ValidationError) as caught:
        build("cpanel", {**_settings(2087, None), **changes})
    assert key in caught.value.message


def test_settings_defaults():
    provider = build("cpanel", {"host": "WHM.example.com", "username": "root", "api_token": "t"})
    try:
        assert provider.config.model_dump() == {
            "host": "whm.example.com",
            "port": 2087,
            "username": "root",
            "api_token": "t",
            "verify_tls": True,
            "ca_bundle": None,
        }
    finally:
        provider.close()


def test_provider_declares_its_secret_and_capability():
    assert CpanelProvider.secret_fields == frozenset({"api_token"})
    assert CpanelProvider.supports_proxied is False
