"""PowerDNS Authoritative through its HTTP API (v4.x, `/api/v1`).

Records are read from the zone (`GET .../zones/{zone}.`, filtered to one RRset) and written
with `PATCH .../zones/{zone}.` (`REPLACE` or `DELETE` of one RRset). Names on the wire are
absolute with a trailing dot; TXT contents are in zone-file form, so quoted.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import httpx
from pydantic import Field, field_validator

from serverctl.dns.base import DNSProvider, ProviderConfig, Record
from serverctl.dns.http import ProviderHttp
from serverctl.dns.propagation import parse_server
from serverctl.errors import ProviderAuthError, ProviderError, RateLimited, ZoneNotFound

__all__ = ["PowerDNSConfig", "PowerDNSProvider"]


class PowerDNSConfig(ProviderConfig):
    api_url: str = Field(min_length=1, description="the API's base URL, e.g. http://ns1:8081")
    api_key: str = Field(min_length=1, repr=False, description="the server's api-key")
    server_id: str = Field("localhost", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    nameserver: str | None = Field(
        None, description="the server's DNS listener, host or host:port, for propagation checks"
    )
    verify_tls: bool = True

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (for example http://ns1:8081)")
        value = value.rstrip("/")
        # Accept the API root as well as the server root: both are written in the docs.
        return value.removesuffix("/api/v1").rstrip("/")

    @field_validator("nameserver")
    @classmethod
    def _nameserver(cls, value: str | None) -> str | None:
        if value:
            parse_server(value)
        return value or None


class PowerDNSProvider(DNSProvider):
    kind = "powerdns"
    title = "PowerDNS"
    config_model = PowerDNSConfig
    secret_fields = frozenset({"api_key"})

    def __init__(
        self,
        config: ProviderConfig,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(config, PowerDNSConfig):
            raise TypeError("PowerDNSProvider needs a PowerDNSConfig")
        super().__init__(config, timeout=timeout)
        self.settings = config
        self._server = f"/servers/{config.server_id}"
        self.http = ProviderHttp(
            f"{config.api_url}/api/v1",
            headers={"X-API-Key": config.api_key, "Accept": "application/json"},
            timeout=timeout,
            verify=config.verify_tls,
            transport=transport,
        )

    def nameservers(self, zone: str) -> list[tuple[str, int]]:
        """The server's DNS listener (`nameserver`), as an address when the name resolves."""
        if not self.settings.nameserver:
            return []
        host, port = parse_server(self.settings.nameserver)
        return [(_address(host), port)]

    def close(self) -> None:
        self.http.close()

    # -- hooks ----------------------------------------------------------------------------------

    def _check(self, zone: str | None) -> str:
        server = self._call("GET", self._server)
        version = server.get("version", "") if isinstance(server, dict) else ""
        detail = f"API key accepted by PowerDNS {version}".rstrip()
        if zone:
            self._call("GET", self._zone(zone), zone=zone, params={"rrsets": "false"})
            detail += f"; zone {zone} found"
        return detail

    def _zones(self) -> list[str]:
        zones = self._call("GET", f"{self._server}/zones")
        return [str(z["name"]).rstrip(".") for z in zones if isinstance(z, dict) and "name" in z]

    def _get(self, zone: str, fqdn: str, rtype: str) -> Record | None:
        params = {"rrset_name": f"{fqdn}.", "rrset_type": rtype}  # ignored before 4.6: filter
        data = self._call("GET", self._zone(zone), zone=zone, params=params)
        for rrset in data.get("rrsets", []):
            if str(rrset.get("name")).rstrip(".").lower() == fqdn and rrset.get("type") == rtype:
                return _record(fqdn, rtype, rrset)
        return None

    def _put(self, zone: str, record: Record) -> None:
        contents = [_content(record.type, v) for v in record.values]
        rrset = {
            "name": f"{record.name}.",
            "type": record.type,
            "ttl": record.ttl,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in contents],
        }
        self._call("PATCH", self._zone(zone), zone=zone, json={"rrsets": [rrset]})

    def _delete(self, zone: str, fqdn: str, rtype: str) -> None:
        rrset = {"name": f"{fqdn}.", "type": rtype, "changetype": "DELETE"}
        self._call("PATCH", self._zone(zone), zone=zone, json={"rrsets": [rrset]})

    # -- HTTP -----------------------------------------------------------------------------------

    def _zone(self, zone: str) -> str:
        return f"{self._server}/zones/{zone}."  # the zone id: its canonical name

    def _call(self, method: str, path: str, *, zone: str | None = None, **kwargs: Any) -> Any:
        """The decoded JSON answer (None for 204), or the ProviderError the status means."""
        response = self.http.request(method, path, **kwargs)
        if not response.is_success:
            self._raise_for_status(response, path, zone)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                f"{self.http.base_url}{path} did not answer with JSON: "
                "is api_url the PowerDNS API (webserver-port)?"
            ) from None

    def _raise_for_status(self, response: httpx.Response, path: str, zone: str | None) -> None:
        message = _error_text(response)
        status = response.status_code
        if status in (401, 403):
            raise ProviderAuthError(
                f"PowerDNS refused the API key (HTTP {status}): check api_key against the "
                "server's api-key setting, and webserver-allow-from"
            )
        if zone and (status == 404 or (status == 422 and "could not find" in message.lower())):
            raise ZoneNotFound(
                f"zone {zone} is not on the PowerDNS server {self.settings.server_id!r} "
                f"at {self.settings.api_url}: create it there, or check the zone name"
            )
        if status == 404:
            raise ProviderError(
                f"{self.http.base_url}{path} was not found (HTTP 404): check api_url and server_id"
            )
        if status == 429:
            raise RateLimited(
                "PowerDNS is rate limiting the API (HTTP 429)", _retry_after(response)
            )
        raise ProviderError(f"PowerDNS answered HTTP {status}: {message}")


def _address(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)[0][4][0])
    except (OSError, IndexError):
        return host  # unresolvable now: the propagation check will say so


def _record(fqdn: str, rtype: str, rrset: dict[str, Any]) -> Record | None:
    values = tuple(
        _value(rtype, r["content"]) for r in rrset.get("records", []) if not r.get("disabled")
    )
    if not values:
        return None
    return Record(fqdn, rtype, values, int(rrset.get("ttl", 0)))


def _content(rtype: str, value: str) -> str:
    """A value in PowerDNS's zone-file form: TXT quoted (and split at 255 bytes)."""
    if rtype != "TXT":
        return value
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks).to_text()


def _value(rtype: str, content: str) -> str:
    """The value of a PowerDNS record content: TXT strings unquoted and joined."""
    if rtype != "TXT":
        return content
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, content)
    except dns.exception.DNSException:
        return content
    if not isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return content
    return b"".join(rdata.strings).decode(errors="replace")


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return response.text.strip()[:300]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
