"""The cPanel/WHM DNS provider: WHM API 1 over HTTPS with a WHM API token.

It reads a zone with `parse_dns_zone` and changes it with `mass_edit_dns_zone`, the calls
cPanel's own zone editor uses. Every change names the SOA serial of the zone it was computed
from, so a change made by someone else in between makes WHM refuse ours instead of being
overwritten; the zone is then read again and the change recomputed. One record changes per
call: WHM's syntax for several changes in one call is not settled, and line numbers are only
valid for the serial they were read with.

WHM answers HTTP 200 even when a call fails; the envelope's `metadata.result` (1 or 0) and
`metadata.reason` say what happened. An API token refused outright gets HTTP 401 or 403.

TLS: `verify_tls` (default true) checks the server certificate against the system's CAs, or
only against `ca_bundle` when it is given. `ca_bundle` is PEM text (not a path), so it travels
with the rest of the provider settings; for a WHM server with a self-signed certificate, paste
that certificate itself.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field, field_validator

from serverctl.dns.base import DNSProvider, ProviderConfig, Record
from serverctl.dns.http import ProviderHttp
from serverctl.errors import ProviderAuthError, ProviderError, RateLimited, ZoneNotFound

# A serial-checked edit that keeps being refused because the zone keeps changing gives up
# after this many fresh reads.
MAX_CONFLICTS = 3
# Reasons WHM gives when the token's user lacks the privilege for a call.
DENIED = ("access denied", "permission denied", "not have permission", "not authorized")


class CpanelConfig(ProviderConfig):
    host: str = Field(description="WHM host name or IP address, without https:// or port")
    port: int = Field(2087, ge=1, le=65535, description="WHM's HTTPS port (2087, or 443)")
    username: str = Field(min_length=1, description="the WHM user that owns the API token")
    api_token: str = Field(min_length=1, repr=False, description="a WHM API token")
    verify_tls: bool = Field(True, description="check the server's TLS certificate")
    ca_bundle: str | None = Field(
        None,
        repr=False,
        description="PEM text of the CA certificate(s) to trust instead of the system's; for "
        "a self-signed WHM certificate, the certificate itself",
    )

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        host = value.strip().lower().strip("[]")
        if not host or "/" in host or "@" in host:
            raise ValueError("give the host name only, for example whm.example.com")
        if ":" in host and not _is_ipv6(host):
            raise ValueError("give the host name only; put the port in port")
        return host

    @field_validator("username")
    @classmethod
    def _plain_user(cls, value: str) -> str:
        if ":" in value or any(c.isspace() for c in value):
            raise ValueError("a WHM user name has no colon or spaces")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if not value:
            return None
        if "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("paste the CA certificate in PEM form (-----BEGIN CERTIFICATE-----)")
        try:
            ssl.create_default_context(cadata=value)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"the PEM text is not a certificate OpenSSL can load ({exc})"
            ) from None
        return value


class WhmRefused(ProviderError):
    """A WHM API 1 call that answered `metadata.result: 0`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ZoneLine:
    """One record of a parsed zone: its line index (0-based), owner name, type, TTL, data."""

    index: int
    name: str
    type: str
    ttl: int
    data: tuple[str, ...]

    @property
    def value(self) -> str:
        # A TXT record's character-strings make up one value; other types have one datum.
        return "".join(self.data)


@dataclass(frozen=True)
class Zone:
    serial: int
    records: tuple[ZoneLine, ...]

    def rrset(self, fqdn: str, rtype: str) -> list[ZoneLine]:
        return [r for r in self.records if r.name == fqdn and r.type == rtype]


@dataclass(frozen=True)
class Change:
    """One `mass_edit_dns_zone` argument: `add`, `edit` (JSON objects) or `remove` (a line)."""

    action: str
    argument: str


class CpanelProvider(DNSProvider):
    kind = "cpanel"
    title = "cPanel/WHM"
    config_model = CpanelConfig
    secret_fields = frozenset({"api_token"})
    supports_proxied = False
    config: CpanelConfig

    def __init__(
        self,
        config: CpanelConfig,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(config, timeout=timeout)
        host = f"[{config.host}]" if _is_ipv6(config.host) else config.host
        self.where = f"{config.host}:{config.port}"
        self.http = ProviderHttp(
            f"https://{host}:{config.port}",
            headers={
                "Accept": "application/json",
                "Authorization": f"whm {config.username}:{config.api_token}",
            },
            timeout=timeout,
            transport=transport or httpx.HTTPTransport(verify=_tls(config)),
        )

    def close(self) -> None:
        self.http.close()

    # -- hooks ----------------------------------------------------------------------------------

    def _check(self, zone: str | None) -> str:
        zones = self._zones()
        who = f"API token of {self.config.username} accepted by WHM at {self.where}"
        if zone is None:
            return f"{who}; {len(zones)} zone(s) visible"
        if zone not in {z.lower() for z in zones}:
            raise self._zone_not_found(zone)
        serial = self._read(zone).serial
        return f"{who}; zone {zone} found (serial {serial})"

    def _zones(self) -> list[str]:
        data = self._call("listzones", {})
        entries = data.get("zone") or []
        return [
            str(e["domain"]).rstrip(".") for e in entries if isinstance(e, dict) and e.get("domain")
        ]

    def _get(self, zone: str, fqdn: str, rtype: str) -> Record | None:
        lines = self._read(zone).rrset(fqdn, rtype)
        if not lines:
            return None
        return Record(fqdn, rtype, tuple(line.value for line in lines), lines[0].ttl)

    def _put(self, zone: str, record: Record) -> None:
        # Address records are edited in place, so the name keeps answering during the change.
        self._converge(
            zone, record.name, record.type, record.values, record.ttl, record.type != "TXT"
        )

    def _delete(self, zone: str, fqdn: str, rtype: str) -> None:
        self._converge(zone, fqdn, rtype, (), 0, False)

    # -- the serial-checked edit loop -------------------------------------------------------------

    def _converge(
        self, zone: str, fqdn: str, rtype: str, values: tuple[str, ...], ttl: int, in_place: bool
    ) -> None:
        snapshot = self._read(zone)
        # Each step fixes one record; a refused step re-reads, so the bound allows for those.
        budget = len(snapshot.rrset(fqdn, rtype)) + len(values) + MAX_CONFLICTS + 1
        conflicts = 0
        for _ in range(budget):
            change = next_change(snapshot, fqdn, rtype, values, ttl, in_place)
            if change is None:
                return
            try:
                self._mass_edit(zone, snapshot.serial, change)
            except WhmRefused:
                fresh = self._read(zone)
                if fresh.serial == snapshot.serial or conflicts >= MAX_CONFLICTS:
                    raise
                conflicts += 1
                self.log.info("zone %s changed while editing it; trying again", zone)
                snapshot = fresh
                continue
            snapshot = self._read(zone)
        raise ProviderError(
            f"WHM at {self.where} did not settle the {rtype} records of {fqdn} after {budget} "
            "changes; someone else may be editing the zone"
        )

    def _mass_edit(self, zone: str, serial: int, change: Change) -> None:
        params = {"zone": zone, "serial": str(serial), change.action: change.argument}
        self._call("mass_edit_dns_zone", params)

    def _read(self, zone: str) -> Zone:
        try:
            data = self._call("parse_dns_zone", {"zone": zone})
        except WhmRefused as exc:
            # WHM's wording for an unknown zone is not documented; the zone list is.
            if zone not in {z.lower() for z in self._zones()}:
                raise self._zone_not_found(zone) from exc
            raise
        return parse_zone(zone, data.get("payload"))

    def _zone_not_found(self, zone: str) -> ZoneNotFound:
        return ZoneNotFound(
            f"zone {zone} is not on the WHM server {self.where}, or user "
            f"{self.config.username} may not manage it"
        )

    # -- WHM API 1 ------------------------------------------------------------------------------

    def _call(self, function: str, params: dict[str, str]) -> dict[str, Any]:
        self.log.debug("WHM %s %s", function, params.get("zone", ""))
        response = self.http.request(
            "GET", f"/json-api/{function}", params={**params, "api.version": "1"}
        )
        self._raise_for_status(function, response)
        body = _json(response)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(metadata, dict):
            raise ProviderError(
                f"WHM at {self.where} answered {function} without the WHM API 1 envelope; "
                "check host and port"
            )
        if str(metadata.get("result")) == "1":
            data = body.get("data")
            return data if isinstance(data, dict) else {}
        reason = str(metadata.get("reason") or "no reason given")
        if any(word in reason.lower() for word in DENIED):
            raise ProviderAuthError(
                f"WHM refused {function} to user {self.config.username}: {reason}; "
                "the API token needs the DNS privileges (edit-dns)"
            )
        raise WhmRefused(f"WHM at {self.where} refused {function}: {reason}", reason)

    def _raise_for_status(self, function: str, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            retry_after = _seconds(response.headers.get("Retry-After"))
            wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
            raise RateLimited(f"WHM at {self.where} is rate limiting requests{wait}", retry_after)
        if status in (401, 403):
            raise ProviderAuthError(
                f"WHM at {self.where} refused the API token of user {self.config.username} "
                f"(HTTP {status}: {_denial(response)}); check the token and the user name"
            )
        if status >= 400:
            raise ProviderError(f"WHM at {self.where} answered HTTP {status} to {function}")


# -- pure helpers -------------------------------------------------------------------------------


def parse_zone(zone: str, payload: object) -> Zone:
    """The records and SOA serial of a `parse_dns_zone` payload. Owner names may be absolute
    (trailing dot), relative to the zone, '@', or empty (the previous record's owner)."""
    if not isinstance(payload, list):
        raise ProviderError(f"WHM returned no records for zone {zone}")
    records: list[ZoneLine] = []
    serial: int | None = None
    owner = zone
    for item in payload:
        if not isinstance(item, dict) or item.get("type") != "record":
            continue
        owner = _owner(_b64(item.get("dname_b64")), zone, owner)
        data = tuple(_b64(d) for d in item.get("data_b64") or [])
        rtype = str(item.get("record_type", "")).upper()
        if rtype == "SOA" and len(data) > 2:
            serial = _int(data[2], "SOA serial")
        records.append(
            ZoneLine(
                _int(item.get("line_index"), "line_index"),
                owner,
                rtype,
                _int(item.get("ttl"), "ttl"),
                data,
            )
        )
    if serial is None:
        raise ProviderError(f"zone {zone} on WHM has no SOA serial; it cannot be edited safely")
    return Zone(serial, tuple(records))


def next_change(
    zone: Zone, fqdn: str, rtype: str, values: tuple[str, ...], ttl: int, in_place: bool
) -> Change | None:
    """The next single change that brings the RRset closer to `values` at `ttl`, or None when
    it holds them already. Adds come before removals, so the name keeps a value throughout."""
    kept: dict[str, ZoneLine] = {}
    spare: list[ZoneLine] = []
    for line in zone.rrset(fqdn, rtype):
        if line.value in values and line.value not in kept:
            kept[line.value] = line
        else:
            spare.append(line)
    for value, line in kept.items():
        if line.ttl != ttl:
            return _edit(line.index, fqdn, rtype, value, ttl)
    missing = [v for v in dict.fromkeys(values) if v not in kept]
    if missing and in_place and spare:
        return _edit(spare[0].index, fqdn, rtype, missing[0], ttl)
    if missing:
        return Change("add", json.dumps(_record(fqdn, rtype, missing[0], ttl)))
    if spare:
        return Change("remove", str(spare[0].index))
    return None


def _edit(index: int, fqdn: str, rtype: str, value: str, ttl: int) -> Change:
    return Change("edit", json.dumps({"line_index": index, **_record(fqdn, rtype, value, ttl)}))


def _record(fqdn: str, rtype: str, value: str, ttl: int) -> dict[str, Any]:
    # Absolute owner with its trailing dot: a relative dname would be read against the zone,
    # and without the dot cPanel would append the zone again. The TTL is always explicit
    # (WHM's default is 86400, far too long for failover).
    data = _txt_strings(value) if rtype == "TXT" else [value]
    return {"dname": f"{fqdn}.", "ttl": ttl, "record_type": rtype, "data": data}


def _txt_strings(value: str) -> list[str]:
    """Character-strings of at most 255 bytes, unquoted: cPanel quotes each one itself."""
    chunks: list[str] = []
    current = ""
    for char in value:
        if len((current + char).encode()) > 255:
            chunks.append(current)
            current = ""
        current += char
    chunks.append(current)
    return chunks


def _owner(dname: str, zone: str, previous: str) -> str:
    name = dname.strip().lower()
    if not name:
        return previous
    if name == "@":
        return zone
    if name.endswith("."):
        return name.rstrip(".")
    # Zone-file rules: a name without the trailing dot is relative to the zone.
    return f"{name}.{zone}"


def _b64(value: object) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        raise ProviderError("WHM returned a zone field that is not valid base64") from None


def _int(value: object, what: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ProviderError(f"WHM returned a {what} that is not a number: {value!r}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _denial(response: httpx.Response) -> str:
    """WHM's words for a refused token, from whichever envelope it used."""
    body = _json(response)
    if isinstance(body, dict):
        for outer in ("metadata", "cpanelresult", "data"):
            inner = body.get(outer)
            if isinstance(inner, dict):
                text = inner.get("reason") or inner.get("error")
                if text:
                    return str(text)
    return "Access denied"


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _tls(config: CpanelConfig) -> ssl.SSLContext | bool:
    if not config.verify_tls:
        return False
    if config.ca_bundle:
        # Only the given CAs: a private WHM certificate should not also be checked against
        # (or spoofable through) every public CA.
        return ssl.create_default_context(cadata=config.ca_bundle)
    return True
