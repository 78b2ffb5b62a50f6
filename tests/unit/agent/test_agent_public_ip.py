from __future__ import annotations

import ipaddress
import socket

import pytest

from balctl import public_ip
from balctl.public_ip import probe_ip, resolve_ip


def test_source_ip_wins_over_public_ip() -> None:
    assert resolve_ip("https://cp", "192.0.2.1", "203.0.113.9") == "192.0.2.1"


def test_public_ip_wins_over_the_probe() -> None:
    assert resolve_ip("https://cp", None, "203.0.113.9") == "203.0.113.9"


def test_probe_finds_the_address_routed_to_the_control_plane() -> None:
    assert probe_ip("http://127.0.0.1:8000") == "127.0.0.1"


def test_probe_falls_back_when_the_server_cannot_be_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo

    def fake(host: str, *args: object, **kwargs: object) -> object:
        if host == "cp.invalid":
            raise socket.gaierror("no such host")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(public_ip.socket, "getaddrinfo", fake)
    address = ipaddress.ip_address(probe_ip("https://cp.invalid"))
    assert address.version == 4


def test_probe_ends_at_loopback_when_nothing_else_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror("offline")

    monkeypatch.setattr(public_ip.socket, "getaddrinfo", fail)
    assert probe_ip("https://cp.invalid") == "127.0.0.1"
