"""Real orders: the control plane's ACME client against Pebble, DNS-01 answered through the
PowerDNS provider and checked by Pebble on that PowerDNS server (no validation shortcut)."""

from __future__ import annotations

import pytest

from integration.acme.acme_kit import make_csr, sans, verify_chain
from serverctl.acme.client import AcmeClient, AcmeError
from serverctl.dns import registry
from serverctl.dns.base import DNSProvider, Record
from serverctl.domain.principal import SYSTEM
from serverctl.errors import Conflict, ValidationError
from support.pebble import Pebble
from support.powerdns import PowerDNS


def _provider(env) -> DNSProvider:
    # What an order for a pool gets: the provider built from the pool's linked account.
    return env.state.dns_accounts.provider(env.provider_id)


def test_an_order_completes_with_a_chain_to_pebbles_root_and_leaves_no_txt(
    acme_env, pebble: Pebble, pdns: PowerDNS
):
    said: list[str] = []
    names = ("lb.demo.example", "www.demo.example")
    issued = AcmeClient(acme_env.state.acme_settings).issue(
        _provider(acme_env), pdns.zone, make_csr(*names), progress=said.append
    )
    certs = verify_chain(issued.chain_pem, pebble.issuing_root(), "lb.demo.example")
    assert sans(certs[0]) == sorted(names)
    assert sorted(issued.names) == sorted(names)
    assert issued.not_after == certs[0].not_valid_after_utc
    assert issued.cleanup_error is None
    # Checked on the zone's own server (the provider's DNS listener), then removed.
    assert any(f"seen on {pdns.nameserver}" in line for line in said), said
    for name in names:
        assert pdns.query(f"_acme-challenge.{name}", "TXT") == []
    settings = acme_env.client.get("/api/settings/acme").json()
    assert settings["account_registered"] and settings["account_url"].startswith("https://")


def test_the_account_is_registered_once_and_reused(acme_env, pdns: PowerDNS):
    client = AcmeClient(acme_env.state.acme_settings)
    client.issue(_provider(acme_env), pdns.zone, make_csr("a.demo.example"))
    first = acme_env.state.acme_settings.get(SYSTEM)["account_url"]
    client.issue(_provider(acme_env), pdns.zone, make_csr("a.demo.example"))
    assert acme_env.state.acme_settings.get(SYSTEM)["account_url"] == first
    actions = [e["action"] for e in acme_env.client.get("/api/audit").json()["items"]]
    assert actions.count("settings.acme.account_registered") == 1
    assert actions.count("settings.acme.account_key") == 1


def test_a_ca_that_forgot_the_account_gets_the_same_key_registered_again(
    acme_env, pebble: Pebble, pdns: PowerDNS
):
    client = AcmeClient(acme_env.state.acme_settings)
    client.issue(_provider(acme_env), pdns.zone, make_csr("a.demo.example"))
    pebble.stop()  # Pebble keeps nothing: its accounts are gone after a restart
    pebble.start()
    issued = client.issue(_provider(acme_env), pdns.zone, make_csr("a.demo.example"))
    verify_chain(issued.chain_pem, pebble.issuing_root(), "a.demo.example")


class _SecondWriteWithWrongKey(DNSProvider):
    """The real PowerDNS provider, except that the second TXT write goes out with a wrong API
    key (PowerDNS answers 401): a provider that fails in the middle of an order."""

    kind, title = "powerdns", "PowerDNS"

    def __init__(self, good: DNSProvider, bad: DNSProvider) -> None:
        super().__init__(good.config)
        self.good, self.bad, self.puts = good, bad, 0

    def nameservers(self, zone):
        return self.good.nameservers(zone)

    def _check(self, zone):
        return self.good._check(zone)

    def _zones(self):
        return self.good._zones()

    def _get(self, zone, fqdn, rtype):
        return self.good._get(zone, fqdn, rtype)

    def _put(self, zone, record: Record):
        self.puts += 1
        (self.bad if self.puts == 2 else self.good)._put(zone, record)

    def _delete(self, zone, fqdn, rtype):
        self.good._delete(zone, fqdn, rtype)


def test_a_provider_failure_mid_order_fails_clearly_and_removes_the_txt_it_set(
    acme_env, pdns: PowerDNS
):
    config = pdns.powerdns_config()
    provider = _SecondWriteWithWrongKey(
        registry.build("powerdns", config),
        registry.build("powerdns", {**config, "api_key": "not-the-key"}),
    )
    names = ("lb.demo.example", "www.demo.example")
    with pytest.raises(AcmeError) as failed:
        AcmeClient(acme_env.state.acme_settings).issue(provider, pdns.zone, make_csr(*names))
    message = failed.value.message
    assert "the DNS provider could not set _acme-challenge." in message, message
    assert "API key" in message or "401" in message, message
    assert failed.value.acme_type is None
    assert provider.puts == 2  # the first value was set, the second refused
    for name in names:  # the one that was set is gone again
        assert pdns.query(f"_acme-challenge.{name}", "TXT") == []


class _ServerDiesAfterFirstWrite(DNSProvider):
    """The real PowerDNS provider; its server stops right after the first TXT value is set."""

    kind, title = "powerdns", "PowerDNS"

    def __init__(self, real: DNSProvider, pdns: PowerDNS) -> None:
        super().__init__(real.config)
        self.real, self.pdns = real, pdns

    def nameservers(self, zone):
        return self.real.nameservers(zone)

    def _check(self, zone):
        return self.real._check(zone)

    def _zones(self):
        return self.real._zones()

    def _get(self, zone, fqdn, rtype):
        return self.real._get(zone, fqdn, rtype)

    def _put(self, zone, record: Record):
        self.real._put(zone, record)
        self.pdns.stop()

    def _delete(self, zone, fqdn, rtype):
        self.real._delete(zone, fqdn, rtype)


def test_a_dns_server_gone_mid_order_fails_and_says_which_txt_is_left(acme_env, pdns: PowerDNS):
    provider = _ServerDiesAfterFirstWrite(registry.build("powerdns", pdns.powerdns_config()), pdns)
    client = AcmeClient(acme_env.state.acme_settings, visible_timeout=2, poll_interval=0.2)
    with pytest.raises(AcmeError) as failed:
        client.issue(provider, pdns.zone, make_csr("lb.demo.example"))
    message = failed.value.message
    assert "not visible after 2 s" in message, message
    assert "could not remove the TXT value at _acme-challenge.lb.demo.example" in message
    assert "remove it by hand" in message
    pdns.start()  # the value really is still there, as the message says
    assert len(pdns.query("_acme-challenge.lb", "TXT")) == 1


def test_a_failed_validation_carries_the_cas_detail_and_removes_the_txt(
    acme_env, tmp_path, pdns: PowerDNS
):
    # Pebble asks another server for the zone, one that never sees the provider's records.
    with (
        PowerDNS(tmp_path / "other-pdns") as other,
        Pebble(tmp_path / "other-pebble", other.nameserver) as blind,
    ):
        acme_env.state.acme_settings.set(
            SYSTEM,
            directory_url=blind.directory_url,
            email="ops@demo.example",
            ca_bundle=blind.ca_bundle_pem,
        )
        with pytest.raises(AcmeError) as failed:
            AcmeClient(acme_env.state.acme_settings).issue(
                _provider(acme_env), pdns.zone, make_csr("lb.demo.example")
            )
    error = failed.value
    assert error.acme_type == "urn:ietf:params:acme:error:unauthorized", error.message
    assert error.detail and error.detail in error.message
    assert "lb.demo.example" in error.message and "TXT" in error.message
    assert pdns.query("_acme-challenge.lb", "TXT") == []


def test_the_cas_refusal_of_an_order_reaches_the_operator_in_its_own_words(
    acme_env, pdns: PowerDNS
):
    # Pebble refuses the underscore in a DNS identifier (the zone accepts it as a label).
    with pytest.raises(AcmeError) as failed:
        AcmeClient(acme_env.state.acme_settings).issue(
            _provider(acme_env), pdns.zone, make_csr("bad_name.demo.example")
        )
    error = failed.value
    assert error.acme_type == "urn:ietf:params:acme:error:malformed", error.message
    assert "illegal character" in error.message and error.detail in error.message
    assert not error.rate_limited


def test_names_outside_the_zone_are_refused_before_the_ca_is_asked(acme_env, pdns: PowerDNS):
    with pytest.raises(ValidationError, match="outside the zone demo.example"):
        AcmeClient(acme_env.state.acme_settings).issue(
            _provider(acme_env), pdns.zone, make_csr("lb.demo.example", "lb.other.example")
        )
    assert acme_env.state.acme_settings.get(SYSTEM)["account_registered"] is False


def test_an_order_without_acme_settings_says_what_to_configure(app_env, pdns: PowerDNS):
    provider = registry.build("powerdns", pdns.powerdns_config())
    with pytest.raises(Conflict, match="ACME is not configured"):
        AcmeClient(app_env.state.acme_settings).issue(
            provider, pdns.zone, make_csr("a.demo.example")
        )


def test_an_untrusted_ca_certificate_is_refused_with_a_hint(acme_env, pebble: Pebble, pdns):
    acme_env.state.acme_settings.set(
        SYSTEM, directory_url=pebble.directory_url, email="ops@demo.example", ca_bundle=None
    )
    with pytest.raises(
        AcmeError, match="cannot verify the ACME server's HTTPS certificate.*ca_bundle"
    ):
        AcmeClient(acme_env.state.acme_settings).issue(
            _provider(acme_env), pdns.zone, make_csr("a.demo.example")
        )
