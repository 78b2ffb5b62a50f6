"""What a backup captures, as manifest entries: see docs/backups.md, "What a backup holds".

`haproxy` kind: /etc/haproxy/haproxy.cfg, /etc/haproxy/conf.d/*.cfg, everything under
/etc/haproxy/certs/ and /etc/letsencrypt/ (files and symlinks, symlinks kept as symlinks), and
every file under /etc/ the configuration references (haproxy_refs.py). `ufw` kind: UFW's rules.

A symlink is kept as a symlink when a restore could recreate it (its target lies in the restore
scope, restore_scope.py); its target is then captured too. Otherwise the file it points to is
captured in its place, so that the snapshot restores. Referenced paths outside /etc/ (or
outside BALCTL_ROOT) are listed in `skipped` with the reason, and not captured.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from typing import BinaryIO, Callable, Dict, List, Optional, Set, Tuple

from balctl.backup_manifest import (
    FILE,
    MAX_ENTRIES,
    MAX_TOTAL_BYTES,
    SYMLINK,
    Entry,
    link_target,
    mode_text,
    owner_text,
    sha256_bytes,
)
from balctl.errors import JobError
from balctl.haproxy_cfg import config_files, read_sections
from balctl.haproxy_refs import HostTree, references
from balctl.paths import HostPaths
from balctl.restore_scope import (
    CERTS,
    CONF_D,
    HAPROXY_CFG,
    LETSENCRYPT,
    RestoreScope,
    in_static_scope,
    is_conf_d_file,
)

HAPROXY = "haproxy"
UFW = "ufw"
KINDS = (HAPROXY, UFW)
UFW_DIR = "/etc/ufw"
UFW_FILES = ("/etc/ufw/ufw.conf", "/etc/default/ufw")
_CHUNK = 64 * 1024

# (the opened file, its stat) -> SHA-256 of its content; the heartbeat inventory passes one that
# remembers, so that only changed files are read again.
Hasher = Callable[[BinaryIO, os.stat_result], str]


class ScopeError(JobError):
    """The backup scope is beyond the bounds a snapshot may hold."""


class Scope:
    __slots__ = ("entries", "skipped", "watched", "followed")

    def __init__(
        self,
        entries: Optional[List[Entry]] = None,
        skipped: Optional[List[Dict[str, str]]] = None,
        # Every host path looked at (folders listed, configuration, crt-lists, missing
        # references): when none of them changed (stat), the scope is the same.
        watched: Optional[List[str]] = None,
        # Host paths of symlinks captured as the file they point to (watched by stat too).
        followed: Optional[List[str]] = None,
    ) -> None:
        self.entries: List[Entry] = [] if entries is None else entries
        self.skipped: List[Dict[str, str]] = [] if skipped is None else skipped
        self.watched: List[str] = [] if watched is None else watched
        self.followed: List[str] = [] if followed is None else followed


def hash_file(handle: BinaryIO, _: os.stat_result) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def ufw_binary(paths: HostPaths) -> Optional[str]:
    """The ufw command, or None when ufw is not installed. Under BALCTL_ROOT only
    <root>/usr/sbin/ufw counts, so tests decide."""
    if paths.root:
        fake = paths.root + "/usr/sbin/ufw"
        return fake if os.access(fake, os.X_OK) else None
    found = shutil.which("ufw")
    if found:
        return found
    return "/usr/sbin/ufw" if os.access("/usr/sbin/ufw", os.X_OK) else None


def gather(
    paths: HostPaths,
    kind: str,
    scope: Optional[RestoreScope] = None,
    hasher: Hasher = hash_file,
) -> Scope:
    """The entries of `kind`'s scope, sorted by path. ScopeError past the bounds."""
    collector = _Collector(paths, scope or RestoreScope(), hasher)
    if kind == HAPROXY:
        collector.haproxy()
    elif kind == UFW:
        collector.ufw()
    else:
        raise ValueError(f"unknown backup kind {kind!r}")
    return collector.done()


class _Collector:
    def __init__(self, paths: HostPaths, scope: RestoreScope, hasher: Hasher) -> None:
        self.paths = paths
        self.root = paths.root
        self.scope = scope
        self.hasher = hasher
        self.result = Scope()
        self.captured: Dict[str, Entry] = {}
        self.total = 0
        # Referenced by the configuration, or reached from there through kept symlinks.
        self.reached: Set[str] = set()

    def host(self, path: str) -> str:
        return self.root + path

    def done(self) -> Scope:
        self.result.entries = [self.captured[path] for path in sorted(self.captured)]
        return self.result

    # -- kinds ---------------------------------------------------------------------------------

    def haproxy(self) -> None:
        # References first: whether a symlink is kept depends on whether it is referenced.
        files = config_files(self.paths)
        self.result.watched.extend(str(p) for p in files)
        refs = references(read_sections(files), self.root, HostTree(self.root))
        self.result.watched.extend(self.host(p) for p in refs.looked_at)
        self.reached.update(refs.files)
        self.capture(HAPROXY_CFG, required=False)
        for name in self._listdir(CONF_D):
            if is_conf_d_file(f"{CONF_D}/{name}"):
                self.capture(f"{CONF_D}/{name}", required=False)
        self._walk(CERTS)
        self._walk(LETSENCRYPT)
        for item in refs.skipped:
            self._skip(item["path"], item["reason"])
            if item["reason"] == "missing":
                self.result.watched.append(self.host(item["path"]))  # noticed when it appears
        for path in refs.files:
            if path not in self.captured:
                self.capture(path, required=True)

    def ufw(self) -> None:
        for name in self._listdir(UFW_DIR):
            if name.endswith(".rules"):
                self.capture(f"{UFW_DIR}/{name}", required=False)
        for path in UFW_FILES:
            self.capture(path, required=False)

    # -- walking -------------------------------------------------------------------------------

    def _listdir(self, folder: str) -> List[str]:
        self.result.watched.append(self.host(folder))
        try:
            return sorted(os.listdir(self.host(folder)))
        except OSError:
            return []

    def _walk(self, folder: str) -> None:
        """Every file and symlink under `folder`; symlinked folders are kept as symlinks."""
        self.result.watched.append(self.host(folder))
        for top, dirs, files in os.walk(self.host(folder)):
            dirs.sort()
            for name in dirs:
                self.result.watched.append(os.path.join(top, name))
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
                logical = os.path.join(top, name)[len(self.root) :]
                self.capture(logical, required=False)

    # -- one path ------------------------------------------------------------------------------

    def capture(self, path: str, required: bool) -> None:
        """Add the entry for `path` (and, for a kept symlink, for its target)."""
        pending = [path]
        while pending:
            current = pending.pop(0)
            if current in self.captured:
                continue
            target = self._one(current, required or current != path)
            if target is not None and target not in self.captured:
                pending.append(target)

    def _one(self, path: str, required: bool) -> Optional[str]:
        """Capture `path`; the target of a kept symlink still to capture, if any."""
        host = self.host(path)
        try:
            st = os.lstat(host)
        except OSError:
            self.result.watched.append(host)
            if required:
                self._skip(path, "missing")
            return None
        if stat.S_ISREG(st.st_mode):
            self._add_file(path, host, follow=False)
        elif stat.S_ISLNK(st.st_mode):
            return self._symlink(path, host, st)
        elif stat.S_ISDIR(st.st_mode):
            if required:
                self._skip(path, "a folder where a file is expected")
        else:
            self._skip(path, "not a regular file or symlink")
        return None

    def _symlink(self, path: str, host: str, st: os.stat_result) -> Optional[str]:
        link = os.readlink(host)
        target = link_target(path, link, self.root)
        if target is not None and self._may_link_to(path, target):
            data = link.encode("utf-8", errors="surrogateescape")
            self._add(
                path,
                {
                    "path": path,
                    "type": SYMLINK,
                    "link": link,
                    "size": len(data),
                    "mode": mode_text(st.st_mode),
                    "owner": owner_text(st.st_uid, st.st_gid),
                    "sha256": sha256_bytes(data),
                },
            )
            if path in self.reached:
                self.reached.add(target)
            return None if in_static_scope(target) else target
        # A restore could not recreate this link: capture what it points to instead.
        try:
            followed = os.stat(host)
        except OSError:
            self._skip(path, f"symlink to {link}, which is missing or outside the backup scope")
            return None
        if not stat.S_ISREG(followed.st_mode):
            self._skip(path, f"symlink to {link}, not a file inside the backup scope")
            return None
        self._add_file(path, host, follow=True)
        self.result.followed.append(host)
        return None

    def _may_link_to(self, path: str, target: str) -> bool:
        if in_static_scope(target):
            return True
        if path not in self.reached or not self.scope.allowed_dir(target):
            return False
        # A folder outside the static scope would not be captured: follow the link instead.
        return not os.path.isdir(self.host(target))

    def _add_file(self, path: str, host: str, follow: bool) -> None:
        flags = os.O_RDONLY | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(host, flags)
        except OSError as exc:
            self._skip(path, f"cannot read: {exc.strerror or exc}")
            return
        with contextlib.closing(os.fdopen(fd, "rb")) as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._skip(path, "not a regular file or symlink")
                return
            try:
                sha = self.hasher(handle, st)
            except OSError as exc:
                self._skip(path, f"cannot read: {exc.strerror or exc}")
                return
        entry = {
            "path": path,
            "type": FILE,
            "size": st.st_size,
            "mode": mode_text(st.st_mode),
            "owner": owner_text(st.st_uid, st.st_gid),
            "sha256": sha,
        }
        self._add(path, entry)

    def _add(self, path: str, entry: Entry) -> None:
        if len(self.captured) >= MAX_ENTRIES:
            raise ScopeError(
                f"the backup scope holds more than {MAX_ENTRIES} files (at {path}); clean up "
                f"{CERTS} or {LETSENCRYPT} (old certificates), then back up again"
            )
        self.total += int(entry["size"])
        if self.total > MAX_TOTAL_BYTES:
            raise ScopeError(
                f"the backup scope is larger than {MAX_TOTAL_BYTES // (1024 * 1024)} MiB (at "
                f"{path}, {entry['size']} bytes): a snapshot holds configuration and "
                "certificates; move large files out of /etc/haproxy"
            )
        self.captured[path] = entry

    def _skip(self, path: str, reason: str) -> None:
        item = {"path": path, "reason": reason}
        if item not in self.result.skipped:
            self.result.skipped.append(item)


def fingerprint(scope: Scope, root: str) -> Tuple[Tuple[object, ...], ...]:
    """What changes when anything in `scope` changes: stat of every path it looked at."""
    marks: List[Tuple[object, ...]] = []
    for path in scope.watched + [root + str(entry["path"]) for entry in scope.entries]:
        marks.append((path, "l", *_stat_mark(os.lstat, path)))
    for path in scope.followed:
        marks.append((path, "s", *_stat_mark(os.stat, path)))
    return tuple(marks)


def _stat_mark(getter: Callable[[str], os.stat_result], path: str) -> Tuple[int, ...]:
    try:
        st = getter(path)
    except OSError:
        return ()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
