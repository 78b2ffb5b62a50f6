"""DNS names: labels, zones and the fully qualified names built from them."""

from __future__ import annotations

import re

from serverctl.errors import ValidationError

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalise_zone(zone: str) -> str:
    """A zone apex in lower case without the trailing dot; 422 when it is not a domain name."""
    value = zone.strip().rstrip(".").lower()
    parts = value.split(".")
    if not value or len(value) > 253 or len(parts) < 2:
        raise ValidationError(f"zone {zone!r} is not a domain name (for example example.com)")
    for part in parts:
        if not _LABEL.match(part) or part.startswith("_"):
            raise ValidationError(f"zone {zone!r} is not a domain name (bad label {part!r})")
    return value


def normalise_label(label: str) -> str:
    """A record label relative to its zone: '@' (or empty) for the apex, else one or more
    dot-separated DNS labels such as 'lb' or 'edge.lb'."""
    value = label.strip().rstrip(".").lower()
    if value in ("", "@"):
        return "@"
    for part in value.split("."):
        if not _LABEL.match(part):
            raise ValidationError(
                f"DNS label {label!r} is not valid: use letters, digits and hyphens "
                "(for example lb, giving lb.example.com)"
            )
    return value


def fqdn(label: str, zone: str) -> str:
    """The name a label gives inside a zone, without the trailing dot."""
    label = normalise_label(label)
    zone = normalise_zone(zone)
    name = zone if label == "@" else f"{label}.{zone}"
    if len(name) > 253:
        raise ValidationError(f"{name!r} is longer than 253 characters")
    return name


def relative(name: str, zone: str) -> str:
    """'lb.example.com' in 'example.com' -> 'lb'; the apex -> '@'."""
    name, zone = name.rstrip(".").lower(), zone.rstrip(".").lower()
    if name == zone:
        return "@"
    if not name.endswith("." + zone):
        raise ValidationError(f"{name!r} is not inside the zone {zone!r}")
    return name[: -len(zone) - 1]


def in_zone(name: str, zone: str) -> bool:
    name, zone = name.rstrip(".").lower(), zone.rstrip(".").lower()
    return name == zone or name.endswith("." + zone)
