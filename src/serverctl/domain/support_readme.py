"""README.txt of a support bundle: what it holds, for whom, and what was left out."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

WIDTH = 96
FILES = {
    "pool.json": "the pool: settings, failover settings, alert settings, current incident, "
    "DNS link (provider by name and kind only, never its credentials)",
    "members.json": "the members: role, allowed IPs, latest heartbeat, health, last rejection",
    "failover-events.json": "failover events, newest first, with their DNS results and timings",
    "dns-updates.json": "A record updates, newest first: pending, applied or superseded, errors",
    "alerts.json": "alerts (health history: heartbeat lost, HAProxy down, rejections, failovers)",
    "audit.json": "audit log entries of the pool and its members",
    "agent-logs.json": "per member: the agent.logs job this bundle asked for, and why a member "
    "gave no fresh lines",
    "versions.json": "ServerCTL, Python, database and package versions, agent and HAProxy "
    "versions per member, and the control plane's non-secret settings",
}
MEMBER_FILES = {
    "heartbeat.json": "the latest heartbeat (ServerCTL keeps the latest one only), health, and "
    "HAProxy's last show stat / show info summary",
    "rejections.json": "refused agent requests (reason, source IP, count)",
    "alert-settings.json": "the member's alert thresholds",
    "jobs.json": "the newest jobs with their output and results",
    "backups.json": "backup snapshots (metadata only: no archives, no file lists)",
    "agent-log.txt": "the agent's recent log lines (journald, or its log file)",
    "agent-log.json": "where those lines came from (source, job, truncated, redactions)",
}


class _Request(Protocol):
    hostname: str
    job_id: int | None
    reason: str | None
    lines_from_job: int | None


def readme(
    pool: dict[str, Any],
    member: str | None,
    actor: str,
    generated: datetime,
    requests: Sequence[_Request],
    names: Sequence[str],
    redactions: int,
    problems: Sequence[str],
) -> str:
    scope = f"member {member} of pool {pool['name']}" if member else f"pool {pool['name']}"
    lines = [
        f"ServerCTL support bundle: {scope}",
        f"Made {generated.strftime('%Y-%m-%d %H:%M:%S UTC')} by {actor}.",
        "",
        *_wrap(
            "Every file was redacted before it was packed: the secrets this control plane knows "
            "(DNS provider credentials, SMTP and backup store secrets, its encryption key), the "
            "values of fields named like secrets, and anything shaped like one (enrolment "
            "secrets, API tokens, Authorization headers, passwords in URLs, private keys) read "
            f"[REDACTED]. Replacements made: {redactions}."
        ),
    ]
    for problem in problems:
        lines += _wrap(f"Note: {problem}.")
    lines += ["", "Files", "-----"]
    for name, text in FILES.items():
        if name in names:
            lines += _wrap(f"{name}: {text}", indent="    ")
    lines += ["members/<hostname>/ (one folder per member):"]
    for name, text in MEMBER_FILES.items():
        lines += _wrap(f"  {name}: {text}", indent="      ")
    lines += ["", "Agent logs", "----------"]
    for request in requests:
        said = request.reason or f"fresh lines from job {request.job_id}"
        if request.reason and request.lines_from_job:
            said += f"; agent-log.txt holds the lines of the earlier job {request.lines_from_job}"
        lines += _wrap(f"{request.hostname}: {said}", indent="    ")
    if not requests:
        lines.append("(the pool has no members)")
    return "\n".join(lines) + "\n"


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False)
