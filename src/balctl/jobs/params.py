"""Strict checks of job parameters. Each check returns the checked value or raises ParamError.

Strict on purpose: a job changes a production load balancer, so an unknown key, a wrong type or
a name HAProxy would read differently (spaces, `;`, which separates runtime API commands) is
refused before anything runs, with a message that names the parameter.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Dict, Mapping

from balctl.errors import ParamError

# Backend and server names: what HAProxy accepts in names, minus anything the runtime API or
# a log line could misread.
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_URL = 2048


def as_object(params: Any) -> Mapping[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ParamError(f"params must be a JSON object, not {type(params).__name__}")
    return params


def only(params: Mapping[str, Any], allowed: Collection[str]) -> Mapping[str, Any]:
    """Refuse keys outside `allowed` and require all of them."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)} (expected: {expected})")
    missing = [name for name in sorted(allowed) if name not in params]
    if missing:
        raise ParamError(f"missing parameter(s) {', '.join(missing)}")
    return params


def string(params: Mapping[str, Any], key: str, max_length: int = 256) -> str:
    value = params.get(key)
    if not isinstance(value, str):
        raise ParamError(f"{key} must be a string")
    if not value or len(value) > max_length:
        raise ParamError(f"{key} must be 1-{max_length} characters")
    return value


def name(params: Mapping[str, Any], key: str) -> str:
    value = string(params, key)
    if not NAME.match(value):
        raise ParamError(
            f"{key} {value[:80]!r} is not a valid name: 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    return value


def choice(params: Mapping[str, Any], key: str, allowed: Collection[str]) -> str:
    value = string(params, key)
    if value not in allowed:
        raise ParamError(f"{key} must be one of {', '.join(allowed)}, not {value[:40]!r}")
    return value


def sha256(params: Mapping[str, Any], key: str) -> str:
    value = string(params, key, 64)
    if not SHA256.match(value.lower()):
        raise ParamError(f"{key} must be 64 hexadecimal digits (a SHA-256)")
    return value.lower()


def no_params(params: Any) -> Dict[str, Any]:
    only(as_object(params), ())
    return {}


def known(params: Mapping[str, Any], allowed: Collection[str]) -> Mapping[str, Any]:
    """Refuse keys outside `allowed`; unlike `only`, every key is optional."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)} (expected: {expected})")
    return params


def integer(params: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = params.get(key)
    # bool is an int subclass in Python; JSON true is not a number of lines.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ParamError(f"{key} must be a whole number from {low} to {high}")
    return value
