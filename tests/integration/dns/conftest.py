"""Fixtures for the DNS providers that run against a real PowerDNS server (the `powerdns` HTTP
API provider and the `rfc2136` provider, which PowerDNS serves with TSIG)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.powerdns import PowerDNS


@pytest.fixture
def pdns_server(tmp_path: Path) -> Iterator[PowerDNS]:
    """A fresh pdns_server for one test: zone demo.example, API key, TSIG key, no caches."""
    with PowerDNS(tmp_path / "pdns") as server:
        yield server
