"""Jobs, backups and restores on a Fleet's members, and what their hosts show afterwards: the
job states the API reports, the jobs each agent says it ran (its log), and a member's HAProxy
files byte for byte."""

from __future__ import annotations

import re
import stat
from collections import Counter
from pathlib import Path
from typing import Any

from support.agent import Agent
from support.fleet import Fleet, FleetMember
from support.util import wait_until

# docs/jobs.md: a job ends in one of these and never leaves it.
FINAL = ("completed", "failed", "cancelled", "timed_out")
_RAN = re.compile(r"running job (\d+) \(")
_ENDED = re.compile(r"job (\d+) \([^)]*\) (completed|failed): ")

# Logical path (as in a manifest) -> (content, permission bits).
FileSet = dict[str, tuple[bytes, int]]


def queue_job(
    fleet: Fleet,
    member: FleetMember,
    job_type: str,
    params: dict[str, Any] | None = None,
    timeout_s: int | None = None,
) -> int:
    body: dict[str, Any] = {"type": job_type, "params": params or {}}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    queued = fleet.call("POST", f"{fleet.pool_url}/members/{member.id}/jobs", body)
    return int(queued["job_id"])


def job(fleet: Fleet, job_id: int) -> dict[str, Any]:
    found: dict[str, Any] = fleet.call("GET", f"/api/jobs/{job_id}")
    return found


def wait_final(fleet: Fleet, job_id: int, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = job(fleet, job_id)
        return found if found["state"] in FINAL else None

    done = wait_until(ended, timeout, interval=0.2, what=f"job {job_id} to end")
    assert isinstance(done, dict)
    return done


def backup(fleet: Fleet, member: FleetMember) -> dict[str, Any]:
    """A completed snapshot of the member's HAProxy set, as GET /api/backups/{id} shows it."""
    queued = fleet.call("POST", f"{fleet.pool_url}/members/{member.id}/backups", {})
    done = wait_final(fleet, queued["job_id"], timeout=90)
    assert done["state"] == "completed", done
    newest = fleet.call("GET", f"{fleet.pool_url}/members/{member.id}/backups")["items"][0]
    assert newest["job_id"] == queued["job_id"]
    snapshot: dict[str, Any] = fleet.call("GET", f"/api/backups/{newest['id']}")
    return snapshot


def queue_restore(fleet: Fleet, snapshot_id: int, member: FleetMember) -> int:
    queued = fleet.call(
        "POST", f"/api/backups/{snapshot_id}/restore", {"target_member_id": member.id}
    )
    return int(queued["job_id"])


# -- what the agents say they did --------------------------------------------------------------


def runs(agent: Agent) -> Counter[int]:
    """How many times the agent started each job, over all its runs (its log is appended)."""
    return Counter(int(found) for found in _RAN.findall(agent.log()))


def results(agent: Agent) -> dict[int, str]:
    """The result the agent reached for each job it finished: completed or failed."""
    return {int(job_id): state for job_id, state in _ENDED.findall(agent.log())}


# -- the host's files --------------------------------------------------------------------------


def haproxy_set(member: FleetMember) -> FileSet:
    """Every file under the member's /etc/haproxy (the agent's own dot-folders left out)."""
    root = member.haproxy.root
    found: FileSet = {}
    for path in sorted((root / "etc/haproxy").rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found["/" + str(relative)] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def put_set(member: FleetMember, files: FileSet) -> None:
    """Make the member's /etc/haproxy hold exactly `files`."""
    root = member.haproxy.root
    for path in sorted((root / "etc/haproxy").rglob("*"), reverse=True):
        relative = "/" + str(path.relative_to(root))
        if path.is_file() and relative not in files and ".balctl" not in relative:
            path.unlink()
    for logical, (data, mode) in files.items():
        path = root / logical.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)


def describe(current: FileSet, expected: FileSet) -> str:
    """Which paths differ, for an assertion message."""
    missing = sorted(expected.keys() - current.keys())
    extra = sorted(current.keys() - expected.keys())
    changed = sorted(p for p in expected.keys() & current.keys() if expected[p] != current[p])
    return f"missing {missing}, extra {extra}, changed {changed}"


def work_folders(member: FleetMember) -> list[Path]:
    """The agent's unfinished restore work folders on the member's host."""
    folder = member.haproxy.root / "etc/haproxy/.balctl-restore"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
