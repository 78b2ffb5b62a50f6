"""Checks on what the operator types (and what agent.env holds). Each raises ConfigError."""

from __future__ import annotations

import ipaddress
import re

from balctl.errors import ConfigError

# RFC 1123 labels: letters, digits and hyphens, 1-63 characters, no hyphen at either end.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# A bearer token travels in an HTTP header and in agent.env: visible ASCII only, no spaces.
_KEY = re.compile(r"^[\x21-\x7e]{8,512}$")


def hostname(value: str) -> str:
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if not value or len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigError(
            f"hostname {value[:80]!r} is not valid: use letters, digits and hyphens in "
            "dot-separated labels of at most 63 characters (e.g. edge-1 or edge-1.example.com)"
        )
    return value


def ipv4(value: str, what: str) -> str:
    """An IPv4 address in canonical form; `what` names the option in the message."""
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        # DNS failover moves A records, so the address the agent reports is always IPv4.
        raise ConfigError(f"{what} {value[:64]!r} is not an IPv4 address") from None


def key(value: str) -> str:
    if not _KEY.match(value):
        # Never echo the value: it is (or was meant to be) a secret.
        raise ConfigError(
            "the enrolment key is not valid: it must be 8-512 visible ASCII characters with no "
            "spaces; copy it again from the member's install command"
        )
    return value
