"""Checks on names and addresses that operators type in. Each raises ValidationError."""

from __future__ import annotations

import ipaddress
import re

from serverctl.errors import ValidationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_POOL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_USER_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
ROLES = ("viewer", "operator", "admin")
POOL_TEMPLATES = ("haproxy", "linux")


def pool_name(value: str) -> str:
    if not _POOL_NAME.match(value):
        raise ValidationError(
            f"pool name {value!r} is not valid: use 1-63 lower-case letters, digits and "
            "hyphens, starting and ending with a letter or digit (e.g. production-edge)"
        )
    return value


def pool_template(value: str) -> str:
    if value not in POOL_TEMPLATES:
        raise ValidationError(f"template must be one of {', '.join(POOL_TEMPLATES)}, not {value!r}")
    return value


def hostname(value: str) -> str:
    labels = value.rstrip(".").split(".")
    if not value or len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValidationError(
            f"hostname {value!r} is not valid: use letters, digits and hyphens in dot-separated "
            "labels of at most 63 characters (e.g. edge-1 or edge-1.example.com)"
        )
    return value.rstrip(".").lower()


def allowed_ips(values: list[str]) -> list[str]:
    """Addresses or CIDR networks an agent may call from; at least one is required."""
    if not values:
        raise ValidationError(
            "allowed_ips needs at least one address or network the agent will call from "
            "(e.g. 203.0.113.10, or 203.0.113.0/24)"
        )
    if len(values) > 64:
        raise ValidationError("allowed_ips takes at most 64 entries")
    result: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValidationError(
                f"allowed_ips entry {value!r} is not an IP address or CIDR network"
            ) from None
        text = str(network.network_address) if network.num_addresses == 1 else str(network)
        if text not in result:
            result.append(text)
    return result


def parse_networks(values: list[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def user_name(value: str) -> str:
    if not _USER_NAME.match(value):
        raise ValidationError(
            f"user name {value!r} is not valid: start with a lower-case letter, then up to 63 "
            "lower-case letters, digits, '.', '_' or '-'"
        )
    return value


def role(value: str) -> str:
    if value not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, not {value!r}")
    return value


def failover_delay(value: int) -> int:
    if not 10 <= value <= 120:
        raise ValidationError(f"failover delay must be 10-120 seconds, not {value}")
    return value


def failover_cooldown(value: int) -> int:
    """Seconds after an automatic promotion before another may happen (0 turns it off)."""
    if not 0 <= value <= 3600:
        raise ValidationError(f"failover cool-down must be 0-3600 seconds, not {value}")
    return value
