"""DNS-01: is a challenge's TXT value visible yet? Real DNS queries (dnspython), else the
provider's own read-back.

The CA may ask any of the zone's authoritative servers, so an order answers its challenges only
once every server checked shows every value. The servers, in order of preference: the ACME
`check_servers` setting (an operator who knows better: split horizon, a hidden primary), the
servers the provider knows (a PowerDNS or RFC 2136 server's DNS port), the zone's NS records
through the system resolver. Where none of those is known, the provider's `get_txt` is the only
witness left.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from serverctl.dns.base import DNSProvider
from serverctl.dns.propagation import Server, ask, parse_server, zone_nameservers
from serverctl.errors import ProviderError

log = logging.getLogger(__name__)

VISIBLE_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 1.5


@dataclass(frozen=True)
class TxtAnswer:
    server: Server
    values: frozenset[str] | None  # None: the server did not answer
    error: str | None = None


@dataclass(frozen=True)
class Challenge:
    """One TXT value to publish: `record` is the FQDN (`_acme-challenge.<name>`, no dot)."""

    record: str
    value: str


class NotVisible(ProviderError):
    """The values were not seen everywhere within the time allowed."""


def query_txt(server: Server, name: str, timeout: float = 1.0) -> TxtAnswer:
    """The TXT values `server` answers for `name` (each value's strings joined, as RFC 8555
    section 8.4 compares them)."""
    response, error = ask(server, name, dns.rdatatype.TXT, timeout)
    if response is None:
        return TxtAnswer(server, None, error)
    found = {
        b"".join(item.strings).decode(errors="replace")
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for item in rrset
    }
    return TxtAnswer(server, frozenset(found))


def servers_to_check(
    provider: DNSProvider, zone: str, check_servers: Sequence[str]
) -> list[Server]:
    """Where to look (see the module's docstring); [] means: read back through the provider."""
    if check_servers:
        return [_address(parse_server(text)) for text in check_servers]
    try:
        hinted = provider.nameservers(zone)
    except (ProviderError, OSError, ValueError) as exc:
        log.debug("the provider names no server for %s: %s", zone, exc)
        hinted = []
    return hinted or zone_nameservers(zone)


def wait_until_visible(
    provider: DNSProvider,
    zone: str,
    challenges: Sequence[Challenge],
    servers: Sequence[Server],
    *,
    timeout: float = VISIBLE_TIMEOUT_S,
    interval: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll until every server shows every value; what was checked, for the job's log.
    NotVisible (naming what was missing where) after `timeout` seconds; a provider error from
    the read-back passes through."""
    deadline = time.monotonic() + timeout
    while True:
        missing = (
            _missing_on_servers(challenges, servers)
            if servers
            else _missing_in_provider(provider, zone, challenges)
        )
        if not missing:
            if servers:
                return "seen on " + ", ".join(f"{h}:{p}" for h, p in servers)
            return "read back through the DNS provider (no DNS server known to query)"
        if time.monotonic() + interval > deadline:
            raise NotVisible(
                f"the DNS-01 TXT record was not visible after {timeout:g} s: {missing}; check "
                "that the zone's servers serve the provider's changes (or set check_servers in "
                "the ACME settings)"
            )
        sleep(interval)


def _missing_on_servers(challenges: Sequence[Challenge], servers: Sequence[Server]) -> str:
    problems: list[str] = []
    for server in servers:
        for challenge in challenges:
            answer = query_txt(server, challenge.record)
            if answer.values is None:
                problems.append(answer.error or f"{server[0]}:{server[1]} did not answer")
                break
            if challenge.value not in answer.values:
                problems.append(f"{challenge.record} not yet on {server[0]}:{server[1]}")
    return "; ".join(problems)


def _missing_in_provider(provider: DNSProvider, zone: str, challenges: Sequence[Challenge]) -> str:
    problems: list[str] = []
    for challenge in challenges:
        record = provider.get_txt(zone, challenge.record)
        if record is None or challenge.value not in record.values:
            problems.append(f"{challenge.record} not yet in the provider's zone")
    return "; ".join(problems)


def _address(server: Server) -> Server:
    """dnspython queries addresses: a host name in check_servers is resolved here."""
    host, port = server
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return server
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise NotVisible(f"check_servers entry {host!r} does not resolve: {exc}") from None
    return str(infos[0][4][0]), port
