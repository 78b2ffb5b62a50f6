"""haproxy.validate, haproxy.reload and haproxy.server_state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from balctl import haproxy_ctl, runtime_api
from balctl.errors import RuntimeApiError
from balctl.haproxy_stats import admin_state, parse_servers_state, parse_stat, to_int
from balctl.jobs import params as p
from balctl.jobs.model import JobContext, Outcome

SERVER_STATES = ("ready", "drain", "maint")
# A job may wait a little longer than a heartbeat for HAProxy to answer.
SOCKET_TIMEOUT_S = 5.0


def validate(_: Dict[str, Any], ctx: JobContext) -> Outcome:
    step = haproxy_ctl.validate(ctx.paths, ctx.deadline)
    return Outcome(step.ok, step.summary, step.output)


def reload(_: Dict[str, Any], ctx: JobContext) -> Outcome:
    step = haproxy_ctl.reload(ctx.paths, ctx.cfg.haproxy_pidfile, ctx.deadline)
    mode = (
        "systemd"
        if haproxy_ctl.pidfile_mode(ctx.paths, ctx.cfg.haproxy_pidfile) is None
        else "pidfile"
    )
    result = {"mode": mode, "pid": step.pid, "verified": step.verified, "reloaded": step.took_over}
    return Outcome(step.ok, step.summary, step.output, result)


def check_server_state(params: Any) -> Dict[str, Any]:
    given = p.only(p.as_object(params), ("backend", "server", "state"))
    return {
        "backend": p.name(given, "backend"),
        "server": p.name(given, "server"),
        "state": p.choice(given, "state", SERVER_STATES),
    }


def server_state(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    backend, server, wanted = params["backend"], params["server"], params["state"]
    target = f"{backend}/{server}"
    sockets = runtime_api.candidates(ctx.paths)
    if not sockets:
        return Outcome(
            False,
            "no admin socket is configured in haproxy.cfg: run haproxy.admin_socket.enable first",
        )
    transcript: List[str] = []
    line = f"set server {target} state {wanted}"
    try:
        path, answer = runtime_api.first_answer(sockets, line, SOCKET_TIMEOUT_S)
        transcript.append(f"> {line}\n{answer}")
        if answer.strip():
            # HAProxy says why in words: "No such server.", "Permission denied"...
            reason = " ".join(answer.split())
            return Outcome(False, f"HAProxy refused {line!r}: {reason}", "\n".join(transcript))
        admin, status = _read_back(path, backend, server, transcript)
    except RuntimeApiError as exc:
        return Outcome(False, f"cannot set {target} to {wanted}: {exc}", "\n".join(transcript))
    result = {
        "backend": backend,
        "server": server,
        "requested": wanted,
        "admin_state": admin,
        "status": status,
    }
    if admin == wanted:
        summary = f"{target} is {wanted} (status {status or 'unknown'})"
    else:
        summary = f"{target} reads back as {admin or 'unknown'}, not {wanted} (status {status})"
    return Outcome(admin == wanted, summary, "\n".join(transcript), result)


def _read_back(
    path: Path, backend: str, server: str, transcript: List[str]
) -> Tuple[Optional[str], str]:
    """(admin state from `show servers state`, status from `show stat`) of one server."""
    admin: Optional[str] = None
    line = f"show servers state {backend}"
    answer = runtime_api.query(path, line, SOCKET_TIMEOUT_S)
    transcript.append(f"> {line}\n{answer}")
    for row in parse_servers_state(answer):
        if row.get("srv_name") == server:
            admin = admin_state(to_int(row.get("srv_admin_state")))
    status = ""
    line = f"show stat {backend} 4 -1"  # type 4: servers only
    answer = runtime_api.query(path, line, SOCKET_TIMEOUT_S)
    transcript.append(f"> {line}\n{answer}")
    for row in parse_stat(answer):
        if row.get("svname") == server:
            status = row.get("status", "")
    return admin, status
