"""Providers by kind. Built-ins are registered as entry points of the `serverctl.dns_providers`
group (see pyproject.toml), the same way as any third-party provider; the table below is the
fallback for a source checkout that was never installed."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from serverctl.dns.base import DNSProvider
from serverctl.errors import ValidationError

GROUP = "serverctl.dns_providers"
BUILTIN = {
    "cloudflare": "serverctl.dns.cloudflare:CloudflareProvider",
    "cpanel": "serverctl.dns.cpanel:CpanelProvider",
    "rfc2136": "serverctl.dns.rfc2136:RFC2136Provider",
    "powerdns": "serverctl.dns.powerdns:PowerDNSProvider",
}


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        targets[ep.name] = ep.value
    return targets


def kinds() -> list[str]:
    return sorted(_targets())


def provider_class(kind: str) -> type[DNSProvider]:
    target = _targets().get(kind)
    if target is None:
        raise ValidationError(f"unknown DNS provider kind {kind!r}; choose one of {kinds()}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(
            f"the {kind} DNS provider cannot be loaded ({exc}); install its extra, "
            f"for example pip install 'serverctl[{kind}]'"
        ) from exc
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, DNSProvider)):
        raise ValidationError(f"{target} is not a DNS provider class")
    return cls


def build(kind: str, config: dict[str, object], *, timeout: float = 10.0) -> DNSProvider:
    return provider_class(kind).from_dict(config, timeout=timeout)
