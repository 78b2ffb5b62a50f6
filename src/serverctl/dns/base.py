"""The DNS provider interface.

The base class owns the public flow (check the arguments, call a hook, translate what went
wrong); a provider fills in a few small hooks that talk to its service (octoDNS's
`populate/_apply`, certbot's `_perform/_cleanup`). Capabilities are class attributes checked
here, in one place. Hooks work on whole RRsets: `_put` replaces the set of values of one name
and type, `_delete` removes it.

Every hook raises only `ProviderError` subclasses: `ProviderAuthError` (bad credentials or no
permission), `ZoneNotFound`, `ProviderUnreachable` (connection, timeout, TLS), `RateLimited`
(with the provider's Retry-After), or plain `ProviderError` with the provider's own message.
"""

from __future__ import annotations

import ipaddress
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from serverctl.dns import names
from serverctl.errors import NotSupported, ProviderError, ValidationError

MIN_TTL = 1
MAX_TTL = 86400


class ProviderConfig(BaseModel):
    """A provider's settings. Fields named in `DNSProvider.secret_fields` are secrets: stored
    encrypted, never shown again, never logged."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True)
class Record:
    """One RRset: a name (FQDN, no trailing dot), a type, its values and TTL."""

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int
    # Cloudflare's orange cloud; None where the provider has no such thing.
    proxied: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


class DNSProvider(ABC):
    kind: ClassVar[str]
    title: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]]
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    supports_proxied: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self.log = logging.getLogger(f"{__name__}.{self.kind}")

    @classmethod
    def from_dict(cls, config: dict[str, object], *, timeout: float = 10.0) -> DNSProvider:
        """Validate a config dict (422 naming the bad key) and build the provider."""
        from pydantic import ValidationError as PydanticError

        try:
            model = cls.config_model.model_validate(config)
        except PydanticError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValidationError(f"{cls.title} settings are not valid: {problems}") from None
        return cls(model, timeout=timeout)

    # -- the public flow ------------------------------------------------------------------------

    def check(self, zone: str | None = None) -> CheckResult:
        """Connectivity test: credentials, permissions and (when given) the zone. Never raises
        a ProviderError: it says what is wrong instead."""
        try:
            detail = self._check(names.normalise_zone(zone) if zone else None)
        except ProviderError as exc:
            return CheckResult(False, exc.message)
        return CheckResult(True, detail)

    def zones(self) -> list[str]:
        return sorted(names.normalise_zone(z) for z in self._zones())

    def get_a(self, zone: str, name: str) -> Record | None:
        return self._get(*self._place(zone, name), "A")

    def set_a(self, zone: str, name: str, address: str, ttl: int, proxied: bool = False) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValidationError(f"{address!r} is not an IPv4 address") from None
        if ip.version != 4:
            raise ValidationError(f"{address!r} is not an IPv4 address (A records hold IPv4)")
        if proxied and not self.supports_proxied:
            raise NotSupported(f"{self.title} cannot proxy records; use DNS-only (proxied false)")
        zone, fqdn = self._place(zone, name)
        record = Record(
            fqdn, "A", (str(ip),), check_ttl(ttl), proxied if self.supports_proxied else None
        )
        self.log.info("setting %s A %s (ttl %s)", fqdn, ip, record.ttl)
        self._put(zone, record)

    def get_txt(self, zone: str, name: str) -> Record | None:
        return self._get(*self._place(zone, name), "TXT")

    def set_txt(self, zone: str, name: str, value: str, ttl: int) -> None:
        """Add `value` to the TXT values of `name` (others stay: ACME may need two at once)."""
        zone, fqdn = self._place(zone, name)
        current = self._get(zone, fqdn, "TXT")
        values = current.values if current else ()
        if value in values:
            return
        self.log.info("adding a TXT value at %s", fqdn)
        self._put(zone, Record(fqdn, "TXT", (*values, value), check_ttl(ttl)))

    def delete_txt(self, zone: str, name: str, value: str | None = None) -> None:
        """Remove `value` from the TXT values of `name` (all of them when `value` is None)."""
        zone, fqdn = self._place(zone, name)
        current = self._get(zone, fqdn, "TXT")
        if current is None:
            return
        left = tuple(v for v in current.values if value is not None and v != value)
        if left == current.values:
            return
        self.log.info("removing a TXT value at %s", fqdn)
        if left:
            self._put(zone, Record(fqdn, "TXT", left, current.ttl))
        else:
            self._delete(zone, fqdn, "TXT")

    def nameservers(self, zone: str) -> list[tuple[str, int]]:
        """Servers that answer authoritatively for the zone, when the provider knows them
        (an RFC 2136 server, a PowerDNS server's DNS port); used to check propagation."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook: most providers hold nothing to close
        """Release connections; the provider is not used after this."""

    # -- hooks ----------------------------------------------------------------------------------

    @abstractmethod
    def _check(self, zone: str | None) -> str:
        """Prove the credentials work (and the zone is there, when given); return what was
        checked, e.g. 'token valid; zone example.com found'."""

    @abstractmethod
    def _zones(self) -> list[str]:
        """The zones these credentials can edit."""

    @abstractmethod
    def _get(self, zone: str, fqdn: str, rtype: str) -> Record | None:
        """The RRset of `fqdn` and `rtype`, or None."""

    @abstractmethod
    def _put(self, zone: str, record: Record) -> None:
        """Create or replace the RRset `record` names, with exactly its values."""

    @abstractmethod
    def _delete(self, zone: str, fqdn: str, rtype: str) -> None:
        """Remove the RRset (nothing to do when it is not there)."""

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _place(zone: str, name: str) -> tuple[str, str]:
        """(zone, fqdn) from a zone and a name that is either a FQDN inside it or a label."""
        zone = names.normalise_zone(zone)
        value = name.strip().rstrip(".").lower()
        if names.in_zone(value, zone):
            return zone, value
        return zone, names.fqdn(value, zone)


def check_ttl(ttl: int) -> int:
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValidationError(f"TTL must be between {MIN_TTL} and {MAX_TTL} seconds, not {ttl}")
    return ttl
