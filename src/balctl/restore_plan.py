"""What a restore will change on this host: compute it all before touching anything.

Each snapshot file is an *add* (nothing there yet), a *change* (something else there: other
bytes, link, type, mode, or owner when running as root) or *unchanged*. Within /etc/haproxy the
snapshot's set replaces the member's, so haproxy.cfg, conf.d/*.cfg and certs/ files the snapshot
does not have are *removed* (moved into the journal's keeping, restorable). A folder where a
file should go, or a file where a folder is needed, is refused before anything changes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import List, Optional

from balctl.archive_extract import Staged
from balctl.backup_manifest import FILE, Entry, ancestors, resolve_owner, stat_mode_matches
from balctl.errors import JobError
from balctl.paths import HostPaths
from balctl.restore_scope import CERTS, CONF_D, HAPROXY_CFG, in_replaced_set
from balctl.restore_swap import ADD, CHANGE, REMOVE, Change

_CHUNK = 64 * 1024


class Plan:
    __slots__ = ("changes", "unchanged")

    def __init__(self, changes: Optional[List[Change]] = None, unchanged: int = 0) -> None:
        self.changes: List[Change] = [] if changes is None else changes
        self.unchanged = unchanged

    def paths(self, action: str) -> List[str]:
        return [c.target for c in self.changes if c.action == action]

    @property
    def empty(self) -> bool:
        return not self.changes


def plan(paths: HostPaths, staged: Staged) -> Plan:
    result = Plan()
    for folder in (CONF_D, CERTS):
        _refuse_linked_folders(paths, folder + "/x")
    for path in sorted(staged.entries):
        _refuse_linked_folders(paths, path)
        entry = staged.entries[path]
        staged_at = "staging" + path
        try:
            st: Optional[os.stat_result] = os.lstat(paths.host(path))
        except FileNotFoundError:
            st = None
        if st is None:
            made = _folders_to_make(paths, path)
            result.changes.append(Change(path, ADD, False, None, staged_at, made))
        elif stat.S_ISDIR(st.st_mode):
            raise JobError(
                f"cannot restore {path}: this host has a folder there; move it away, then restore"
            )
        elif _same(paths, path, st, entry):
            result.unchanged += 1
        else:
            kept = f"kept/{len(result.changes)}"
            result.changes.append(Change(path, CHANGE, True, kept, staged_at))
    for path in _member_set(paths):
        if path not in staged.entries:
            kept = f"kept/{len(result.changes)}"
            result.changes.append(Change(path, REMOVE, True, kept))
    return result


def _refuse_linked_folders(paths: HostPaths, path: str) -> None:
    """Refuse when a folder above `path` is a symlink on this host: a write or a removal there
    would land wherever the link points (/etc/haproxy/certs -> /etc/ssl/private would lose that
    folder's other files), which no check of the archive can see."""
    for folder in ancestors(path):
        if folder in ("/", "/etc"):
            continue
        if os.path.islink(paths.host(folder)):
            raise JobError(
                f"cannot restore {path}: {folder} is a symlink on this host, and a restore "
                "writes only into real folders; replace the link with a folder, then restore"
            )


def _folders_to_make(paths: HostPaths, path: str) -> List[str]:
    made: List[str] = []
    for folder in ancestors(path):
        host = paths.host(folder)
        if made or not os.path.lexists(host):
            made.append(folder)
        elif not host.is_dir():
            raise JobError(
                f"cannot restore {path}: {folder} is not a folder on this host; move it away, "
                "then restore"
            )
    return made


def _same(paths: HostPaths, path: str, st: os.stat_result, entry: Entry) -> bool:
    if os.geteuid() == 0:
        uid, gid, _ = resolve_owner(str(entry["owner"]))
        if (st.st_uid, st.st_gid) != (uid, gid):
            return False
    if entry["type"] == FILE:
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_size == entry["size"]
            and stat_mode_matches(st, entry)
            and _sha256(paths, path) == entry["sha256"]
        )
    return stat.S_ISLNK(st.st_mode) and os.readlink(paths.host(path)) == entry["link"]


def _sha256(paths: HostPaths, path: str) -> Optional[str]:
    digest = hashlib.sha256()
    try:
        fd = os.open(paths.host(path), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _member_set(paths: HostPaths) -> List[str]:
    """This host's files in the set a restore replaces as a whole (logical paths)."""
    found: List[str] = []
    if os.path.lexists(paths.host(HAPROXY_CFG)):
        found.append(HAPROXY_CFG)
    try:
        names = sorted(os.listdir(paths.host(CONF_D)))
    except OSError:
        names = []
    for name in names:
        path = f"{CONF_D}/{name}"
        if in_replaced_set(path) and not os.path.isdir(paths.host(path)):
            found.append(path)
    certs = str(paths.host(CERTS))
    for top, dirs, files in os.walk(certs):
        dirs.sort()
        linked = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in sorted(files) + linked:
            found.append(os.path.join(top, name)[len(paths.root) :])
    return found
