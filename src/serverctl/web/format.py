"""Jinja filters for the pages."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape

_TICKS = re.compile(r"`([^`]+)`")


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


def size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def duration(job: dict[str, Any]) -> str:
    started, finished = job.get("started_at"), job.get("finished_at")
    if started is None:
        return ""
    if finished is None:
        return "running"
    return f"{(finished - started).total_seconds():.1f} s"


def ticks(text: str | None) -> Markup:
    """Escaped text whose `quoted` parts (configuration lines, paths, job names in the domain's
    own wording) are shown as code."""
    return Markup(_TICKS.sub(r"<code>\1</code>", str(escape(text or ""))))


def register_filters(env: Environment) -> None:
    env.filters["ticks"] = ticks
    env.filters["bytes"] = size
    env.filters["duration"] = duration
    env.filters["when"] = when
    env.filters["age"] = age
    env.filters["haproxy_state"] = haproxy_state
