"""Fixtures for the ACME engine: a real PowerDNS (zone demo.example) and a real Pebble whose
DNS-01 lookups go to it, and the control plane's state configured to order from that Pebble."""

from __future__ import annotations

import pytest

from serverctl.domain.principal import SYSTEM
from support.pebble import Pebble
from support.powerdns import PowerDNS


@pytest.fixture
def acme_env(app_env, pebble: Pebble, pdns: PowerDNS):
    """`app_env` with ACME settings pointing at Pebble and a PowerDNS provider account."""
    app_env.state.acme_settings.set(
        SYSTEM,
        directory_url=pebble.directory_url,
        email="ops@demo.example",
        ca_bundle=pebble.ca_bundle_pem,
    )
    account = app_env.state.dns_accounts.create(
        SYSTEM, "pdns-test", "powerdns", pdns.powerdns_config()
    )
    app_env.provider_id = account["id"]
    return app_env
