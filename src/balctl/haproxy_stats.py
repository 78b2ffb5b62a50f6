"""Parsing the runtime API's answers: `show info`, `show stat` (CSV), `show servers state`.

Shapes verified against HAProxy 2.6.12 (APIS.md 5.2-5.4). `show stat` columns past 99 vary by
version, so columns are found by the header's names, never by position. A server's admin state
comes from `show servers state` (its srv_admin_state bits), because `show stat` reports a
drained server whose checks fail as plain DOWN.
"""

from __future__ import annotations

import csv
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from balctl.errors import RuntimeApiError

MAX_FRONTENDS = 200
MAX_BACKENDS = 200
MAX_SERVERS = 200
MAX_STATS_BYTES = 64 * 1024

# srv_admin_state bits (APIS.md 5.4).
FMAINT, IMAINT, CMAINT, FDRAIN, IDRAIN, RMAINT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MAINT_BITS = FMAINT | IMAINT | CMAINT | RMAINT
DRAIN_BITS = FDRAIN | IDRAIN

# `show stat` type column.
FRONTEND, BACKEND, SERVER, LISTENER = "0", "1", "2", "3"

ServerKey = Tuple[str, str]


def to_int(value: Optional[str]) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# -- show info ---------------------------------------------------------------------------------


def parse_info(text: str) -> Dict[str, str]:
    info: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key:
            info[key.strip()] = value.strip()
    if "Pid" not in info:
        raise RuntimeApiError(f"unexpected answer to show info: {text[:120]!r}")
    return info


def info_summary(info: Mapping[str, str]) -> Dict[str, Any]:
    return {
        "version": info.get("Version", ""),
        "pid": to_int(info.get("Pid")),
        "uptime_s": to_int(info.get("Uptime_sec")),
        "curr_conns": to_int(info.get("CurrConns")),
        "conn_rate": to_int(info.get("ConnRate")),
        "sess_rate": to_int(info.get("SessRate")),
    }


# -- show stat ---------------------------------------------------------------------------------


def parse_stat(text: str) -> List[Dict[str, str]]:
    """One dict per row, keyed by the header's column names."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeApiError(f"unexpected answer to show stat: {text[:120]!r}")
    rows = csv.reader(line for line in lines if line)
    header = next(rows)
    header[0] = header[0][2:]  # "# pxname" -> "pxname"
    return [dict(zip(header, row)) for row in rows]


# -- show servers state ------------------------------------------------------------------------


def parse_servers_state(text: str) -> List[Dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise RuntimeApiError(" ".join(text.split())[:200] or "empty answer to show servers state")
    header = lines[1][2:].split()
    return [dict(zip(header, line.split())) for line in lines[2:]]


def admin_state(bits: int) -> str:
    """ "maint", "drain" or "ready" from srv_admin_state."""
    if bits & MAINT_BITS:
        return "maint"
    if bits & DRAIN_BITS:
        return "drain"
    return "ready"


def admin_states(rows: Sequence[Mapping[str, str]]) -> Dict[ServerKey, str]:
    return {
        (row.get("be_name", ""), row.get("srv_name", "")): admin_state(
            to_int(row.get("srv_admin_state"))
        )
        for row in rows
    }


def admin_from_status(status: str) -> str:
    """A fallback when `show servers state` is unavailable."""
    if status.startswith("MAINT"):
        return "maint"
    return "drain" if status == "DRAIN" else "ready"


# -- the heartbeat's summary -------------------------------------------------------------------


def _size(value: Any) -> int:
    # The transport sends compact JSON: measure the same way.
    return len(json.dumps(value, separators=(",", ":")))


def _traffic(row: Mapping[str, str]) -> Dict[str, Any]:
    return {
        "name": row.get("pxname", ""),
        "status": row.get("status", ""),
        "scur": to_int(row.get("scur")),
        "rate": to_int(row.get("rate")),
        "stot": to_int(row.get("stot")),
        "bin": to_int(row.get("bin")),
        "bout": to_int(row.get("bout")),
    }


def _server(row: Mapping[str, str], admin: Mapping[ServerKey, str]) -> Dict[str, Any]:
    status = row.get("status", "")
    check = row.get("check_status", "")
    return {
        "name": row.get("svname", ""),
        "status": status,
        "weight": to_int(row.get("weight")),
        "scur": to_int(row.get("scur")),
        "rate": to_int(row.get("rate")),
        # "* L7OK" means a check is running right now: noise for a summary.
        "check_status": check[2:] if check.startswith("* ") else check,
        "admin": admin.get((row.get("pxname", ""), row.get("svname", "")))
        or admin_from_status(status),
    }


class _Budget:
    def __init__(self, size: int) -> None:
        self.left = size
        self.truncated = False
        self.full = False

    def take(self, size: int) -> bool:
        if self.full or size > self.left:
            self.truncated = self.full = True
            return False
        self.left -= size
        return True


def stats_summary(
    rows: Sequence[Mapping[str, str]],
    admin: Optional[Mapping[ServerKey, str]] = None,
    at: int = 0,
    max_bytes: int = MAX_STATS_BYTES,
) -> Dict[str, Any]:
    """The heartbeat's `stats`: frontends, backends and their servers, capped in count and
    in JSON size (then `"truncated": true`)."""
    admin = admin or {}
    summary: Dict[str, Any] = {"at": at, "frontends": [], "backends": []}
    budget = _Budget(max_bytes - _size({**summary, "truncated": True}))
    backends: Dict[str, Dict[str, Any]] = {}
    servers: Dict[str, List[Mapping[str, str]]] = {}
    for row in rows:
        kind, name = row.get("type"), row.get("pxname", "")
        if kind == FRONTEND:
            if len(summary["frontends"]) >= MAX_FRONTENDS:
                budget.truncated = True
            elif budget.take(_size(_traffic(row)) + 1):
                summary["frontends"].append(_traffic(row))
        elif kind == BACKEND:
            backends[name] = {**_traffic(row), "servers": []}
        elif kind == SERVER:
            servers.setdefault(name, []).append(row)
    for name, backend in backends.items():
        if len(summary["backends"]) >= MAX_BACKENDS or not budget.take(_size(backend) + 1):
            budget.truncated = True
            break
        summary["backends"].append(backend)
        members = servers.get(name, [])
        if len(members) > MAX_SERVERS:
            budget.truncated = True
        for row in members[:MAX_SERVERS]:
            entry = _server(row, admin)
            if not budget.take(_size(entry) + 1):
                break
            backend["servers"].append(entry)
    if budget.truncated:
        summary["truncated"] = True
    return summary
