"""The address the heartbeat reports as `ip`: the one DNS failover points the A record at.

In order: the operator's --source-ip (the agent also sends from it), then BALCTL_PUBLIC_IP, then
a probe: the local address of a UDP socket connect()ed to the control plane (connect() on UDP
only picks a route; no packet is sent). Behind NAT the probe finds the private address, so
NAT'd hosts must set --public-ip.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Optional
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

FALLBACK_IP = "127.0.0.1"


def resolve_ip(
    server_url: str, source_ip: Optional[str] = None, public_ip: Optional[str] = None
) -> str:
    if source_ip:
        return source_ip
    if public_ip:
        return public_ip
    return probe_ip(server_url)


def probe_ip(server_url: str) -> str:
    """The IPv4 address this host uses to reach the control plane, or the best fallback."""
    parts = urlsplit(server_url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 443
    address = _routed_address(host, port)
    if address is None:
        address = _hostname_address()
    if address is None:
        logger.warning(
            "could not find this host's IPv4 address; reporting %s (set --public-ip)", FALLBACK_IP
        )
        return FALLBACK_IP
    return address


def _ipv4(text: str) -> Optional[ipaddress.IPv4Address]:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _routed_address(host: str, port: int) -> Optional[str]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(infos[0][4])
            local = str(sock.getsockname()[0])
    except (OSError, IndexError) as exc:
        logger.debug("route probe towards %s failed: %s", host, exc)
        return None
    address = _ipv4(local)
    if address is None or address.is_unspecified:
        return None
    return str(address)


def _hostname_address() -> Optional[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    for info in infos:
        address = _ipv4(str(info[4][0]))
        if address is not None and not address.is_loopback and not address.is_unspecified:
            return str(address)
    return None
