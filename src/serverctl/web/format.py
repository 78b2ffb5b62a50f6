"""Jinja filters for the pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "no heartbeat yet"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def haproxy_state(block: dict[str, Any] | None) -> str:
    if not block:
        return "unknown"
    if not block.get("monitored"):
        return "not visible to the agent"
    return "running" if block.get("active") else "inactive"


def register_filters(env: Environment) -> None:
    env.filters["when"] = when
    env.filters["age"] = age
    env.filters["haproxy_state"] = haproxy_state
