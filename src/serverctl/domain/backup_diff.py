"""What restoring a snapshot would change on a member, from the files its agent last reported.

Agents report the files in their backup scope in the heartbeat's `haproxy.backup_files` block
(`{"digest", "ufw": bool, "files": [{"path", "sha256", ...}], "truncated"?}`; a `{path: sha256}`
mapping is read too).
A restore replaces the member's HAProxy set as a whole (haproxy.cfg, conf.d/*.cfg, certs/**),
so the member's files there that the snapshot lacks are *removed*; elsewhere it only adds and
replaces files.
"""

from __future__ import annotations

from typing import Any

HAPROXY_DIR = "/etc/haproxy/"


def reported(block: dict[str, Any] | None) -> dict[str, Any] | None:
    """The member's `backup_files` block, or None when its agent has not reported one."""
    found = (block or {}).get("backup_files")
    return found if isinstance(found, dict) else None


def reported_files(block: dict[str, Any] | None) -> dict[str, str] | None:
    """path -> sha256 of the files the member last reported, or None when unknown (nothing
    reported, or a list the agent cut short: a partial list would invent additions)."""
    found = reported(block) or {}
    if found.get("truncated"):
        return None
    files = found.get("files")
    if isinstance(files, dict):
        return {
            str(path): str(value.get("sha256") if isinstance(value, dict) else value)
            for path, value in files.items()
        }
    if isinstance(files, list):
        return {
            str(entry["path"]): str(entry.get("sha256"))
            for entry in files
            if isinstance(entry, dict) and isinstance(entry.get("path"), str)
        }
    return None


def ufw_reported(block: dict[str, Any] | None) -> bool | None:
    """True/False as the agent says whether ufw is installed; None when it did not say."""
    value = (reported(block) or {}).get("ufw")
    return value if isinstance(value, bool) else None


def mirrored(path: str) -> bool:
    """Is `path` in the set a restore replaces as a whole (not only adds to)?"""
    if not path.startswith(HAPROXY_DIR):
        return False
    rest = path[len(HAPROXY_DIR) :]
    if rest == "haproxy.cfg" or rest.startswith("certs/"):
        return True
    name = rest.removeprefix("conf.d/")
    return name != rest and "/" not in name and name.endswith(".cfg")


def restore_diff(snapshot_files: list[dict[str, Any]], target: dict[str, str]) -> dict[str, Any]:
    """{"added", "changed", "removed": [paths], "unchanged": count}, the shape of a restore
    job's result."""
    wanted = {str(f["path"]): str(f.get("sha256")) for f in snapshot_files}
    added = sorted(p for p in wanted if p not in target)
    changed = sorted(p for p in wanted if p in target and target[p] != wanted[p])
    removed = sorted(p for p in target if p not in wanted and mirrored(p))
    unchanged = sum(1 for p in wanted if target.get(p) == wanted[p])
    return {"added": added, "changed": changed, "removed": removed, "unchanged": unchanged}
