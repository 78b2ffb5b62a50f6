"""Any authoritative server that takes RFC 2136 dynamic updates (BIND, Knot, PowerDNS...), with
TSIG. Records are read by asking the server itself (no recursion, authoritative answers only)
and written with DNS UPDATE messages signed with the key.

All network I/O goes through `RFC2136Client` (the test seam, as certbot's `_RFC2136Client`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from typing import Literal, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rrset
import dns.tsig
import dns.update
from pydantic import Field, field_validator, model_validator

from serverctl.dns import names
from serverctl.dns.base import DNSProvider, ProviderConfig, Record
from serverctl.errors import ProviderAuthError, ProviderError, ProviderUnreachable, ZoneNotFound

__all__ = ["RFC2136Client", "RFC2136Config", "RFC2136Provider"]

Algorithm = Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha1", "hmac-md5"]
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}


class RFC2136Config(ProviderConfig):
    server: str = Field(min_length=1, description="the primary server's IP address or name")
    port: int = Field(53, ge=1, le=65535)
    zone: str | None = Field(None, description="the zone apex this key may update")
    tsig_key_name: str | None = None
    tsig_secret: str | None = Field(None, repr=False, description="base64, as in the key file")
    tsig_algorithm: Algorithm = "hmac-sha256"
    tcp: bool = Field(True, description="TCP for every exchange (fails fast, never truncated)")
    timeout: float | None = Field(None, gt=0, le=60, description="seconds per exchange")

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return names.normalise_zone(value) if value else None

    @field_validator("tsig_key_name")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise ValueError(f"{value!r} is not a DNS name ({exc})") from None
        return value.rstrip(".")

    @field_validator("tsig_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64 (the secret line of the TSIG key file)") from None
        return value

    @model_validator(mode="after")
    def _key_pair(self) -> Self:
        if bool(self.tsig_key_name) != bool(self.tsig_secret):
            raise ValueError("give tsig_key_name and tsig_secret together (or neither)")
        return self


class RFC2136Client:
    """Queries and updates to one DNS server; every message signed when a TSIG key is set.
    Transport failures become `ProviderUnreachable`, refused signatures `ProviderAuthError`."""

    def __init__(
        self,
        server: str,
        port: int = 53,
        *,
        key: dns.tsig.Key | None = None,
        tcp: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.port = port
        self.key = key
        self.tcp = tcp
        self.timeout = timeout

    @property
    def where(self) -> str:
        return f"{self.server}:{self.port}"

    def query(self, fqdn: str, rdtype: str) -> dns.message.Message:
        """Ask the server itself for `fqdn`/`rdtype`, without recursion."""
        message = dns.message.make_query(f"{fqdn.rstrip('.')}.", rdtype)
        message.flags &= ~dns.flags.RD
        if self.key is not None:
            message.use_tsig(self.key, algorithm=self.key.algorithm)
        return self.send(message)

    def new_update(self, zone: str) -> dns.update.UpdateMessage:
        if self.key is None:
            return dns.update.UpdateMessage(f"{zone}.")
        return dns.update.UpdateMessage(
            f"{zone}.", keyring=self.key, keyname=self.key.name, keyalgorithm=self.key.algorithm
        )

    def send(self, message: dns.message.Message) -> dns.message.Message:
        address = self.address()
        try:
            if self.tcp:
                return dns.query.tcp(message, address, timeout=self.timeout, port=self.port)
            response, _ = dns.query.udp_with_fallback(
                message, address, timeout=self.timeout, port=self.port
            )
            return response
        except dns.exception.Timeout as exc:
            raise ProviderUnreachable(
                f"the DNS server {self.where} did not answer in {self.timeout:g} s"
            ) from exc
        except (OSError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ProviderUnreachable(
                f"cannot reach the DNS server {self.where}: {reason or 'connection closed'}"
            ) from exc
        except (dns.tsig.PeerError, dns.exception.FormError) as exc:
            if isinstance(exc, dns.exception.FormError) and "TSIG" not in str(exc):
                raise ProviderError(f"{self.where} sent a malformed answer: {exc}") from exc
            raise ProviderAuthError(self.key_refused(_tsig_failure(exc))) from exc
        except dns.exception.DNSException as exc:
            raise ProviderError(f"DNS exchange with {self.where} failed: {exc}") from exc

    def address(self) -> str:
        try:
            return str(ipaddress.ip_address(self.server))
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(self.server, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ProviderUnreachable(
                f"cannot resolve the DNS server {self.server}: {exc}"
            ) from exc
        return str(infos[0][4][0])

    def key_refused(self, why: str) -> str:
        name = self.key.name.to_text(omit_final_dot=True) if self.key else "(none)"
        return (
            f"TSIG key {name} refused by {self.where} ({why}): check tsig_key_name, "
            "tsig_secret and tsig_algorithm against the key the server has"
        )


class RFC2136Provider(DNSProvider):
    kind = "rfc2136"
    title = "RFC 2136 (dynamic DNS update)"
    config_model = RFC2136Config
    secret_fields = frozenset({"tsig_secret"})

    def __init__(
        self,
        config: ProviderConfig,
        *,
        timeout: float = 10.0,
        client: RFC2136Client | None = None,
    ) -> None:
        if not isinstance(config, RFC2136Config):
            raise TypeError("RFC2136Provider needs an RFC2136Config")
        super().__init__(config, timeout=timeout)
        self.settings = config
        self.client = client or RFC2136Client(
            config.server,
            config.port,
            key=_key(config),
            tcp=config.tcp,
            timeout=min(config.timeout or timeout, timeout),
        )

    def nameservers(self, zone: str) -> list[tuple[str, int]]:
        """The server updates go to, as an address when its name resolves."""
        try:
            return [(self.client.address(), self.client.port)]
        except ProviderUnreachable:
            return [(self.client.server, self.client.port)]

    # -- hooks ----------------------------------------------------------------------------------

    def _check(self, zone: str | None) -> str:
        zone = zone or self.settings.zone
        if zone is None:
            self.client.query(".", "SOA")  # proves the server answers and takes the key
            return f"{self.client.where} answered{self._signed()}"
        self._require_zone(zone)
        update = self.client.new_update(zone)
        update.present("@", "SOA")  # a prerequisite and no change: tests the update rights
        self._raise_for_update(zone, self.client.send(update))
        return f"{self.client.where} accepts updates{self._signed()}; zone {zone} found"

    def _zones(self) -> list[str]:
        return [self.settings.zone] if self.settings.zone else []

    def _get(self, zone: str, fqdn: str, rtype: str) -> Record | None:
        response = self.client.query(fqdn, rtype)
        rcode = response.rcode()
        authoritative = bool(response.flags & dns.flags.AA)
        if rcode == dns.rcode.NXDOMAIN and authoritative:
            return None
        if rcode != dns.rcode.NOERROR or not authoritative:
            self._require_zone(zone)
            raise ProviderError(
                f"{self.client.where} gave no authoritative answer for {fqdn} {rtype} "
                f"({dns.rcode.to_text(rcode)})"
            )
        rdtype = dns.rdatatype.from_text(rtype)
        for rrset in response.answer:
            if rrset.rdtype == rdtype and rrset.name == dns.name.from_text(f"{fqdn}."):
                return Record(fqdn, rtype, tuple(_value(rd) for rd in rrset), rrset.ttl)
        return None

    def _put(self, zone: str, record: Record) -> None:
        update = self.client.new_update(zone)
        rdatas = [_rdata(record.type, v) for v in record.values]
        update.replace(f"{record.name}.", record.ttl, *rdatas)
        self._raise_for_update(zone, self.client.send(update))

    def _delete(self, zone: str, fqdn: str, rtype: str) -> None:
        update = self.client.new_update(zone)
        update.delete(f"{fqdn}.", rtype)
        self._raise_for_update(zone, self.client.send(update))

    # -- diagnosis ------------------------------------------------------------------------------

    def _serves(self, zone: str) -> bool:
        response = self.client.query(zone, "SOA")
        return (
            response.rcode() == dns.rcode.NOERROR
            and bool(response.flags & dns.flags.AA)
            and any(r.rdtype == dns.rdatatype.SOA for r in response.answer)
        )

    def _require_zone(self, zone: str) -> None:
        if not self._serves(zone):
            raise ZoneNotFound(
                f"{self.client.where} is not authoritative for the zone {zone}: check the zone "
                "name and the server setting (updates go to the zone's primary)"
            )

    def _raise_for_update(self, zone: str, response: dns.message.Message) -> None:
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTZONE:
            raise ZoneNotFound(f"{self.client.where} answered NOTZONE: a name is not in {zone}")
        if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED, dns.rcode.SERVFAIL):
            self._require_zone(zone)
        if rcode == dns.rcode.NOTAUTH:
            raise ProviderAuthError(self.client.key_refused("NOTAUTH"))
        if rcode == dns.rcode.REFUSED:
            raise ProviderAuthError(self._refused(zone))
        if rcode == dns.rcode.NOTIMP:
            raise ProviderError(f"{self.client.where} does not take dynamic updates (NOTIMP)")
        raise ProviderError(f"{self.client.where} answered {text} to the update of {zone}")

    def _refused(self, zone: str) -> str:
        if self.client.key is None:
            return (
                f"the server {self.client.where} refused the unsigned update of {zone}: "
                "set tsig_key_name and tsig_secret (the server wants a TSIG key), or allow "
                "dynamic updates from this address"
            )
        return (
            f"the server {self.client.where} refused the update of {zone}: allow dynamic "
            "updates for this key (e.g. BIND update-policy, PowerDNS TSIG-ALLOW-DNSUPDATE) "
            "and from this address"
        )

    def _signed(self) -> str:
        key = self.client.key
        return f" and accepted the TSIG key {key.name.to_text(True)}" if key else " (no TSIG key)"


def _tsig_failure(exc: Exception) -> str:
    if isinstance(exc, dns.tsig.PeerBadKey):
        return "BADKEY: the server does not know this key name and algorithm"
    if isinstance(exc, dns.tsig.PeerBadSignature):
        return "BADSIG: the secret does not match"
    if isinstance(exc, dns.tsig.PeerBadTime):
        return "BADTIME: the clocks differ by more than the fudge; check NTP"
    if isinstance(exc, dns.tsig.PeerError):
        return f"TSIG error {exc}"
    return "the answer was not signed: the server does not know this key, secret or algorithm"


def _key(config: RFC2136Config) -> dns.tsig.Key | None:
    if not (config.tsig_key_name and config.tsig_secret):
        return None
    return dns.tsig.Key(
        f"{config.tsig_key_name}.", config.tsig_secret, ALGORITHMS[config.tsig_algorithm]
    )


def _rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    if rtype == "TXT":
        data = value.encode()
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), value)


def _value(rdata: dns.rdata.Rdata) -> str:
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return b"".join(rdata.strings).decode(errors="replace")
    if isinstance(rdata, dns.rdtypes.IN.A.A):
        return str(rdata.address)
    return rdata.to_text()
