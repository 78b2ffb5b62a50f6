"""Providers by kind. Built-ins are registered as entry points of the `serverctl.dns_providers`
group (see pyproject.toml), the same way as any third-party provider; the table below is the
fallback for a source checkout that was never installed."""

from __future__ import annotations

from serverctl.dns.base import DNSProvider
from serverctl.plugins import PluginGroup

GROUP = "serverctl.dns_providers"
BUILTIN = {
    "cloudflare": "serverctl.dns.cloudflare:CloudflareProvider",
    "cpanel": "serverctl.dns.cpanel:CpanelProvider",
    "rfc2136": "serverctl.dns.rfc2136:RFC2136Provider",
    "powerdns": "serverctl.dns.powerdns:PowerDNSProvider",
}
PROVIDERS: PluginGroup[DNSProvider] = PluginGroup(GROUP, BUILTIN, DNSProvider, "DNS provider")


def kinds() -> list[str]:
    return PROVIDERS.kinds()


def provider_class(kind: str) -> type[DNSProvider]:
    return PROVIDERS.load(kind)


def build(kind: str, config: dict[str, object], *, timeout: float = 10.0) -> DNSProvider:
    return provider_class(kind).from_dict(config, timeout=timeout)
