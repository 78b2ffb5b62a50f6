"""Is a record visible on the zone's authoritative servers? Real DNS queries (dnspython)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)
Server = tuple[str, int]


@dataclass(frozen=True)
class Answer:
    server: Server
    addresses: frozenset[str] | None  # None: the server did not answer
    error: str | None = None


def parse_server(text: str, default_port: int = 53) -> Server:
    """'192.0.2.53', '192.0.2.53:5353', '[2001:db8::53]:53', a bare IPv6 address or
    'ns1.example.net' -> (host, port); ValueError naming the text when it is not one."""
    value = text.strip()
    host, port = value, default_port
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), value)
    elif value.count(":") == 1:
        host, _, digits = value.partition(":")
        port = _port(digits, value)
    if not host:
        raise ValueError(f"{value!r} names no host")
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r} has no valid port (1-65535)")
    return int(text)


def ask(
    server: Server, name: str, rdtype: dns.rdatatype.RdataType, timeout: float = 1.0
) -> tuple[dns.message.Message | None, str | None]:
    """One query to `server` (UDP, again over TCP when truncated): the response, or None and
    why there is none."""
    host, port = server
    query = dns.message.make_query(name.rstrip(".") + ".", rdtype)
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, host, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return None, f"{host}:{port} did not answer ({exc.__class__.__name__})"
    return response, None


def query_a(server: Server, name: str, timeout: float = 1.0) -> Answer:
    response, error = ask(server, name, dns.rdatatype.A, timeout)
    if response is None:
        return Answer(server, None, error)
    found = {
        item.to_text()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.A
        for item in rrset
    }
    return Answer(server, frozenset(found))


def zone_nameservers(zone: str, timeout: float = 2.0) -> list[Server]:
    """The zone's NS hosts through the system resolver, as (address, 53); [] when unknown."""
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    servers: list[Server] = []
    try:
        for ns in resolver.resolve(zone, "NS"):
            for address in resolver.resolve(ns.to_text(), "A"):
                servers.append((address.to_text(), 53))
    except (dns.exception.DNSException, OSError) as exc:
        log.debug("no authoritative servers found for %s: %s", zone, exc)
    return servers
