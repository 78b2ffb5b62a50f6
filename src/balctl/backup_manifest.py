"""The manifest of a backup: one entry per captured file, and what the two sides agree on.

An entry is a plain dict, exactly as it travels in job params and results (docs/backups.md):

    {"path": "/etc/haproxy/haproxy.cfg", "type": "file", "size": 1830, "mode": "0640",
     "owner": "root:haproxy", "sha256": "..."}
    {"path": "/etc/letsencrypt/live/x/cert.pem", "type": "symlink", "link": "../../archive/...",
     "size": 44, "mode": "0777", "owner": "root:root", "sha256": "<sha256 of the link text>"}

Paths are logical: absolute, normalised, as on a host without BALCTL_ROOT. Owners are names
(numbers when the source host had no name for them), resolved again on the restoring host.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import posixpath
import pwd
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from balctl.errors import JobError

Entry = Dict[str, Any]

MAX_ENTRIES = 5000
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_LINK = 4096
MAX_PATH = 4096
FILE = "file"
SYMLINK = "symlink"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MODE = re.compile(r"^[0-7]{3,4}$")
# user:group, names as useradd accepts them (or numbers); nothing a path or a shell could misread.
_OWNER_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$")
# Bits a restore never sets: setuid, setgid and sticky have no business on certificates.
RESTORED_MODE_BITS = 0o777


class ManifestError(ValueError):
    """An entry of a manifest is malformed; the message names the entry and the field."""


class StagingError(JobError):
    """A snapshot's archive was refused as a whole; nothing outside the staging folder was
    written, and the staging folder is gone. The message says which member and why."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode_text(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def owner_text(uid: int, gid: int) -> str:
    """ "user:group" by name where this host has one, by number otherwise."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group}"


def resolve_owner(owner: str) -> Tuple[int, int, List[str]]:
    """(uid, gid, notes) for "user:group" on this host. A name this host does not know falls back
    to root (0), never to the source host's number, which may belong to anyone here."""
    user, _, group = owner.partition(":")
    notes: List[str] = []
    uid = _lookup(user, lambda name: pwd.getpwnam(name).pw_uid)
    if uid is None:
        notes.append(f"no user {user!r} on this host: root owns the file instead")
        uid = 0
    gid = _lookup(group, lambda name: grp.getgrnam(name).gr_gid)
    if gid is None:
        notes.append(f"no group {group!r} on this host: group root instead")
        gid = 0
    return uid, gid, notes


def _lookup(name: str, by_name: Any) -> Optional[int]:
    try:
        return int(by_name(name))
    except KeyError:
        return int(name) if name.isdigit() else None


def canonical_json(entries: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps(list(entries), sort_keys=True, separators=(",", ":")).encode("utf-8")


def digest(entries: Sequence[Mapping[str, Any]]) -> str:
    """The SHA-256 of the entries' canonical JSON: equal digests, equal file sets."""
    return sha256_bytes(canonical_json(entries))


def is_logical(path: str) -> bool:
    """Absolute, normalised, no NUL, no "." or ".." parts, no trailing "/"."""
    return (
        isinstance(path, str)
        and 1 < len(path) <= MAX_PATH
        and path.startswith("/")
        and "\x00" not in path
        and posixpath.normpath(path) == path
        and not path.startswith("//")
    )


def under(path: str, folder: str) -> bool:
    """Is `path` strictly inside `folder` (both logical)?"""
    return path.startswith(folder.rstrip("/") + "/")


def ancestors(path: str) -> List[str]:
    """ "/etc/a/b" -> ["/etc", "/etc/a"] (never "/")."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def check_entries(raw: Any) -> List[Entry]:
    """The manifest's entries, each checked field by field; ManifestError on the first problem.

    Also refuses duplicate paths, a path under another entry (a file or symlink cannot be a
    folder), and manifests beyond MAX_ENTRIES / MAX_TOTAL_BYTES."""
    if not isinstance(raw, list):
        raise ManifestError("files must be a list of entries")
    if len(raw) > MAX_ENTRIES:
        raise ManifestError(f"files has {len(raw)} entries; at most {MAX_ENTRIES} are allowed")
    entries = [_check_entry(index, item) for index, item in enumerate(raw)]
    seen = set()
    for entry in entries:
        if entry["path"] in seen:
            raise ManifestError(f"{entry['path']} is listed twice")
        seen.add(entry["path"])
    for entry in entries:
        above = next((a for a in ancestors(entry["path"]) if a in seen), None)
        if above is not None:
            raise ManifestError(f"{entry['path']} lies under {above}, which is not a folder")
    total = sum(entry["size"] for entry in entries)
    if total > MAX_TOTAL_BYTES:
        raise ManifestError(f"files add up to {total} bytes; at most {MAX_TOTAL_BYTES} allowed")
    return entries


def _check_entry(index: int, item: Any) -> Entry:
    where = f"files[{index}]"
    if not isinstance(item, dict):
        raise ManifestError(f"{where} must be an object")
    kind = item.get("type")
    allowed = {"path", "type", "size", "mode", "owner", "sha256"}
    if kind == SYMLINK:
        allowed.add("link")
    elif kind != FILE:
        raise ManifestError(f"{where}.type must be 'file' or 'symlink'")
    unknown = sorted(set(item) - allowed)
    missing = sorted(allowed - set(item))
    if unknown or missing:
        raise ManifestError(
            f"{where} has unknown field(s) {unknown} / lacks {missing} (expected {sorted(allowed)})"
        )
    path = item["path"]
    if not isinstance(path, str) or not is_logical(path):
        raise ManifestError(f"{where}.path must be an absolute, normalised path")
    _check_fields(f"{where} ({path})", item)
    size, sha = item["size"], item["sha256"]
    entry: Entry = {
        "path": path,
        "type": kind,
        "size": size,
        "mode": f"{int(item['mode'], 8):04o}",
        "owner": item["owner"],
        "sha256": sha,
    }
    if kind == SYMLINK:
        link = item["link"]
        if not isinstance(link, str) or not 0 < len(link) <= MAX_LINK or "\x00" in link:
            raise ManifestError(f"{where}.link ({path}) must be the link's target text")
        if len(link.encode("utf-8")) != size:
            raise ManifestError(f"{where}.size ({path}) must be the length of the link text")
        if sha256_bytes(link.encode("utf-8")) != sha:
            raise ManifestError(f"{where}.sha256 ({path}) is not the SHA-256 of the link text")
        entry["link"] = link
    return entry


def _check_fields(where: str, item: Mapping[str, Any]) -> None:
    size = item["size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_TOTAL_BYTES:
        raise ManifestError(f"{where}: size must be a number of bytes")
    mode = item["mode"]
    if not isinstance(mode, str) or not _MODE.match(mode):
        raise ManifestError(f"{where}: mode must be octal digits such as '0640'")
    owner = item["owner"]
    user, sep, group = owner.partition(":") if isinstance(owner, str) else ("", "", "")
    if not sep or not _OWNER_PART.match(user) or not _OWNER_PART.match(group):
        raise ManifestError(f"{where}: owner must be 'user:group'")
    sha = item["sha256"]
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hexadecimal digits")


def link_target(path: str, link: str, root: str) -> Optional[str]:
    """Where a symlink at logical `path` with text `link` points, as a logical path.

    A relative target is read against the link's folder; an absolute one is a host path (so
    under BALCTL_ROOT it must lie under the root). None when the target is not on this root."""
    if link.startswith("/"):
        normal = posixpath.normpath(link)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        if not root:
            return normal
        if normal.startswith(root + "/"):
            return normal[len(root) :]
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), link))


def host_path(root: str, logical: str) -> str:
    return root + logical


def file_mode(entry: Mapping[str, Any]) -> int:
    return int(str(entry["mode"]), 8) & RESTORED_MODE_BITS


def stat_mode_matches(st: os.stat_result, entry: Mapping[str, Any]) -> bool:
    return (st.st_mode & RESTORED_MODE_BITS) == file_mode(entry)
