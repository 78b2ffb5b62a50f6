"""Which address a request really comes from.

Forwarding headers are believed only when the socket peer is a configured trusted proxy;
otherwise anyone could claim any address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import ip_address

from serverctl.domain.validation import IPNetwork


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _valid(address: str) -> str | None:
    try:
        return str(ip_address(address.strip()))
    except ValueError:
        return None


def resolve(
    peer: str | None, header: Callable[[str], str | None], trusted: Sequence[IPNetwork]
) -> str:
    """The client address: the peer, or what a trusted proxy says the client was."""
    peer = peer or "0.0.0.0"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    for name in ("cf-connecting-ip", "x-real-ip"):
        value = header(name)
        if value and (address := _valid(value)):
            return address
    forwarded = header("x-forwarded-for")
    if forwarded:
        # Walk from the right: the last hop not run by us is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            address = _valid(hop)
            if address is None:
                break
            if not _is_trusted(address, trusted):
                return address
    return peer
