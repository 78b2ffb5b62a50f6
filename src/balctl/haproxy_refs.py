"""The files an HAProxy configuration names: certificates, CA and CRL files, crt-lists.

Read on `bind`, `server` and `default-server` lines: `crt` (a file, or a folder whose files
HAProxy loads), `crt-list` (a file naming one certificate per line, with optional `[...]` SSL
options), `ca-file`, `ca-verify-file`, `ca-sign-file` and `crl-file`. Relative paths are read
against `crt-base` (certificates, crt-lists) or `ca-base` (CA and CRL files) of `global`; a
certificate also brings the companion files HAProxy loads beside it (`.key`, `.ocsp`,
`.issuer`, `.sctl`) when they exist.

The same reading serves the backup (the live files) and the restore (the staged files of a
snapshot): a `Tree` says what exists and what a file holds, on the host or in the staging.
Paths in the configuration are host paths ("${BALCTL_ROOT}/etc/..." in tests); what comes out
is logical ("/etc/..."), with references elsewhere listed as skipped, with the reason.
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Dict, List, Optional, Sequence, Tuple

from balctl.backup_manifest import link_target, under
from balctl.haproxy_cfg import Section, split_words

LINE_KEYWORDS = frozenset({"bind", "server", "default-server"})
CRT_KEYWORDS = frozenset({"crt", "crt-list"})
CA_KEYWORDS = frozenset({"ca-file", "ca-verify-file", "ca-sign-file", "crl-file"})
COMPANIONS = (".key", ".ocsp", ".issuer", ".sctl")
MAX_CRT_LIST_BYTES = 4 * 1024 * 1024
MAX_LINK_HOPS = 8

FILE, SYMLINK, DIR, OTHER = "file", "symlink", "dir", "other"


class Tree:
    """What exists at logical paths (no symlink followed by `kind`/`link`)."""

    def kind(self, path: str) -> Optional[str]:
        raise NotImplementedError

    def link(self, path: str) -> Optional[str]:
        raise NotImplementedError

    def read(self, path: str, limit: int) -> Optional[bytes]:
        """The content of the file at `path`, symlinks followed; None when there is none."""
        raise NotImplementedError

    def is_dir(self, path: str) -> bool:
        """A folder at `path`, symlinks followed."""
        raise NotImplementedError

    def files_in(self, folder: str) -> List[str]:
        """The logical paths of the non-folder entries directly in `folder`, sorted."""
        raise NotImplementedError


class HostTree(Tree):
    """The live files under BALCTL_ROOT."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _host(self, path: str) -> str:
        return self.root + path

    def kind(self, path: str) -> Optional[str]:
        try:
            mode = os.lstat(self._host(path)).st_mode
        except OSError:
            return None
        if stat.S_ISREG(mode):
            return FILE
        if stat.S_ISLNK(mode):
            return SYMLINK
        if stat.S_ISDIR(mode):
            return DIR
        return OTHER

    def link(self, path: str) -> Optional[str]:
        try:
            return os.readlink(self._host(path))
        except OSError:
            return None

    def read(self, path: str, limit: int) -> Optional[bytes]:
        try:
            with open(self._host(path), "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                return handle.read(limit)
        except OSError:
            return None

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._host(path))

    def files_in(self, folder: str) -> List[str]:
        try:
            names = sorted(os.listdir(self._host(folder)))
        except OSError:
            return []
        base = folder.rstrip("/")
        return [f"{base}/{name}" for name in names if not self.is_dir(f"{base}/{name}")]


class References:
    """The configuration's files (logical, in the order first named) and the skipped ones."""

    __slots__ = ("files", "skipped", "looked_at")

    def __init__(
        self,
        files: Optional[List[str]] = None,
        skipped: Optional[List[Dict[str, str]]] = None,
        # What was read or listed to find references (crt-lists, crt folders): a change there
        # may change the references.
        looked_at: Optional[List[str]] = None,
    ) -> None:
        self.files: List[str] = [] if files is None else files
        self.skipped: List[Dict[str, str]] = [] if skipped is None else skipped
        self.looked_at: List[str] = [] if looked_at is None else looked_at

    def add(self, path: str) -> None:
        if path not in self.files:
            self.files.append(path)

    def skip(self, path: str, reason: str) -> None:
        item = {"path": path, "reason": reason}
        if item not in self.skipped:
            self.skipped.append(item)


def references(sections: Sequence[Section], root: str, tree: Tree) -> References:
    """The files the configuration names directly (symlinks not followed: see `closure`)."""
    found = References()
    crt_base, ca_base = _bases(sections)
    for section in sections:
        for words in section.lines:
            if not words or words[0] not in LINE_KEYWORDS:
                continue
            for index, word in enumerate(words[:-1]):
                value = words[index + 1]
                if word == "crt":
                    _crt(_resolve(value, crt_base, "crt-base", root, found), tree, found)
                elif word == "crt-list":
                    target = _resolve(value, crt_base, "crt-base", root, found)
                    _crt_list(target, crt_base, ca_base, root, tree, found)
                elif word in CA_KEYWORDS:
                    _plain(_resolve(value, ca_base, "ca-base", root, found), tree, found)
    return found


def closure(paths: Sequence[str], root: str, tree: Tree) -> List[str]:
    """`paths` plus, transitively, the targets of those that are symlinks (logical, under /etc)."""
    result: List[str] = []
    pending = list(paths)
    while pending:
        path = pending.pop(0)
        if path in result:
            continue
        result.append(path)
        if tree.kind(path) == SYMLINK:
            target = link_target(path, tree.link(path) or "", root)
            if target is not None and under(target, "/etc") and target not in result:
                pending.append(target)
    return result


def _bases(sections: Sequence[Section]) -> Tuple[Optional[str], Optional[str]]:
    crt_base: Optional[str] = None
    ca_base: Optional[str] = None
    for section in sections:
        if section.kind != "global":
            continue
        for words in section.lines:
            if len(words) >= 2 and words[0] == "crt-base":
                crt_base = words[1]
            elif len(words) >= 2 and words[0] == "ca-base":
                ca_base = words[1]
    return crt_base, ca_base


def _resolve(
    value: str, base: Optional[str], base_name: str, root: str, found: References
) -> Optional[str]:
    """The logical path of a configured host path, or None (recorded as skipped)."""
    if not value:
        return None
    if not value.startswith("/"):
        if base is None or not base.startswith("/"):
            found.skip(value, f"relative path and no absolute {base_name} in global")
            return None
        value = posixpath.join(base, value)
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if root:
        if not normal.startswith(root + "/"):
            found.skip(normal, "outside /etc")
            return None
        normal = normal[len(root) :]
    if not under(normal, "/etc"):
        found.skip(normal, "outside /etc")
        return None
    return normal


def _plain(path: Optional[str], tree: Tree, found: References) -> None:
    if path is None:
        return
    if tree.kind(path) is None:
        found.skip(path, "missing")
    elif tree.is_dir(path):
        found.skip(path, "a folder where a file is expected")
    else:
        found.add(path)


def _crt(path: Optional[str], tree: Tree, found: References) -> None:
    if path is None:
        return
    if tree.kind(path) is None:
        found.skip(path, "missing")
        return
    if tree.is_dir(path):
        # HAProxy loads every file of a crt folder (not its subfolders).
        found.looked_at.append(path)
        for member in tree.files_in(path):
            found.add(member)
        return
    found.add(path)
    for extension in COMPANIONS:
        if tree.kind(path + extension) is not None:
            found.add(path + extension)


def _crt_list(
    path: Optional[str],
    crt_base: Optional[str],
    ca_base: Optional[str],
    root: str,
    tree: Tree,
    found: References,
) -> None:
    if path is None:
        return
    _plain(path, tree, found)
    data = tree.read(path, MAX_CRT_LIST_BYTES)
    if data is None:
        return
    found.looked_at.append(path)
    for line in data.decode("utf-8", errors="replace").splitlines():
        words = split_words(line)
        if not words:
            continue
        _crt(_resolve(words[0], crt_base, "crt-base", root, found), tree, found)
        # `[ssl options]` may name CA and CRL files of their own.
        options = [word.strip("[]") for word in words[1:]]
        for index, word in enumerate(options[:-1]):
            if word in CA_KEYWORDS:
                _plain(_resolve(options[index + 1], ca_base, "ca-base", root, found), tree, found)
