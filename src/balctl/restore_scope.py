"""Where a restore may write: the files of a snapshot that may land on this host.

Always: /etc/haproxy/haproxy.cfg, /etc/haproxy/conf.d/*.cfg, everything under
/etc/haproxy/certs/ and /etc/letsencrypt/ (the "static" scope). Any other file only when the
restored configuration references it (directly, through a crt folder or crt-list, or as the
target of a referenced symlink) and it lies under /etc/ssl/, /etc/pki/ or a folder listed in
BALCTL_RESTORE_DIRS. So a snapshot, even a forged one, cannot write elsewhere in /etc.

The backup applies the same rules (backup_scope.py), so that what it captures restores.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from balctl.backup_manifest import (
    FILE,
    SYMLINK,
    Entry,
    StagingError,
    ancestors,
    is_logical,
    link_target,
    under,
)
from balctl.errors import ConfigError
from balctl.haproxy_cfg import Section, parse_sections
from balctl.haproxy_refs import DIR, MAX_LINK_HOPS, Tree, closure, references

RESTORE_DIRS_ENV = "BALCTL_RESTORE_DIRS"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
CONF_D = "/etc/haproxy/conf.d"
CERTS = "/etc/haproxy/certs"
LETSENCRYPT = "/etc/letsencrypt"
DEFAULT_DIRS = ("/etc/ssl", "/etc/pki")
# The agent's own settings and secret: never a restore target, whatever an operator lists.
FORBIDDEN_DIRS = ("/etc/balctl",)
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def is_conf_d_file(path: str) -> bool:
    name = posixpath.basename(path)
    return posixpath.dirname(path) == CONF_D and name.endswith(".cfg") and not name.startswith(".")


def in_static_scope(path: str) -> bool:
    return (
        path == HAPROXY_CFG
        or is_conf_d_file(path)
        or under(path, CERTS)
        or under(path, LETSENCRYPT)
    )


def in_replaced_set(path: str) -> bool:
    """Within /etc/haproxy the snapshot's set replaces the member's: these files of the member
    go away when the snapshot does not have them."""
    return path == HAPROXY_CFG or is_conf_d_file(path) or under(path, CERTS)


def restore_dirs(environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """/etc/ssl, /etc/pki and the folders of BALCTL_RESTORE_DIRS (colon-separated, under /etc/)."""
    env = os.environ if environ is None else environ
    found: List[str] = list(DEFAULT_DIRS)
    for raw in env.get(RESTORE_DIRS_ENV, "").split(":"):
        folder = raw.strip().rstrip("/")
        if not folder:
            continue
        if not is_logical(folder) or not under(folder, "/etc"):
            raise ConfigError(
                f"{RESTORE_DIRS_ENV}: {raw[:200]!r} is not an absolute folder under /etc/ "
                "(list folders such as /etc/mycerts, separated by ':')"
            )
        if any(folder == bad or under(folder, bad) or under(bad, folder) for bad in FORBIDDEN_DIRS):
            raise ConfigError(
                f"{RESTORE_DIRS_ENV}: {folder} holds the agent's own settings and secret; "
                "a restore may never write there"
            )
        if folder not in found:
            found.append(folder)
    return tuple(found)


class RestoreScope(NamedTuple):
    allowed_dirs: Tuple[str, ...] = DEFAULT_DIRS

    def may_hold(self, path: str) -> bool:
        """Could `path` be restored at all (before knowing what the configuration references)?"""
        return in_static_scope(path) or self.allowed_dir(path)

    def allowed_dir(self, path: str) -> bool:
        return any(under(path, folder) for folder in self.allowed_dirs)

    def holds(self, path: str, referenced: Set[str]) -> bool:
        return in_static_scope(path) or (path in referenced and self.allowed_dir(path))

    def refusal(self, path: str, referenced: Set[str]) -> str:
        """Why `path` may not be restored here, in words an operator can act on."""
        if not self.may_hold(path):
            return (
                f"{path} lies outside the restore scope (/etc/haproxy, /etc/letsencrypt, "
                f"{', '.join(self.allowed_dirs)}); to allow files referenced by the configuration "
                f"in its folder, list the folder in {RESTORE_DIRS_ENV} on this host"
            )
        return f"{path} is not referenced by the restored configuration"


class StagedTree(Tree):
    """A snapshot's files in the staging folder, as the manifest describes them."""

    def __init__(self, staging: Path, entries: Sequence[Entry], root: str) -> None:
        self.staging = staging
        self.root = root
        self.entries: Dict[str, Entry] = {entry["path"]: entry for entry in entries}
        self._dirs: Set[str] = {a for path in self.entries for a in ancestors(path)}

    def staged(self, path: str) -> Path:
        return self.staging / path.lstrip("/")

    def kind(self, path: str) -> Optional[str]:
        entry = self.entries.get(path)
        if entry is not None:
            return str(entry["type"])
        return DIR if path in self._dirs else None

    def link(self, path: str) -> Optional[str]:
        entry = self.entries.get(path)
        return str(entry["link"]) if entry is not None and entry["type"] == SYMLINK else None

    def _follow(self, path: str) -> Optional[str]:
        for _ in range(MAX_LINK_HOPS):
            if self.kind(path) != SYMLINK:
                return path
            target = link_target(path, self.link(path) or "", self.root)
            if target is None:
                return None
            path = target
        return None

    def read(self, path: str, limit: int) -> Optional[bytes]:
        final = self._follow(path)
        if final is None or self.kind(final) != FILE:
            return None
        try:
            with open(self.staged(final), "rb") as handle:
                return handle.read(limit)
        except OSError:
            return None

    def is_dir(self, path: str) -> bool:
        final = self._follow(path)
        return final is not None and self.kind(final) == DIR

    def files_in(self, folder: str) -> List[str]:
        final = self._follow(folder) or folder
        return sorted(p for p in self.entries if posixpath.dirname(p) == final)


def staged_sections(tree: Tree) -> List[Section]:
    """The restored configuration (haproxy.cfg, then conf.d/*.cfg in HAProxy's order), parsed."""
    files = [HAPROXY_CFG] + sorted(
        (p for p in tree.files_in(CONF_D) if is_conf_d_file(p)), key=lambda p: p.encode()
    )
    sections: List[Section] = []
    for path in files:
        data = tree.read(path, MAX_CONFIG_BYTES)
        if data is not None:
            sections.extend(parse_sections(data.decode("utf-8", errors="replace")))
    return sections


# Directives with which a configuration makes HAProxy run code of its own choosing (Lua at
# parse time, programs and check commands later). A snapshot from another member that holds
# them could run anything on this host as root: see code_directives.
_CODE_KEYWORDS = frozenset(
    {"lua-load", "lua-load-per-thread", "lua-prepend-path", "external-check"}
)


def code_directives(sections: Sequence[Section]) -> List[str]:
    """The directives of a configuration that run code ("program web", "lua-load ..."),
    as short descriptions, in order."""
    found: List[str] = []
    for section in sections:
        if section.kind == "program":
            found.append(f"program {section.name}")
        for words in section.lines:
            keyword = words[0].lower()
            if keyword == "option" and len(words) > 1 and words[1].lower() == "external-check":
                found.append(f"option external-check in {section.kind} {section.name}".strip())
            elif keyword in _CODE_KEYWORDS:
                found.append(" ".join(words[:2]))
    return found


def referenced(tree: Tree, root: str) -> Set[str]:
    """What the configuration in `tree` references, symlinks followed."""
    found = references(staged_sections(tree), root, tree)
    return set(closure(found.files, root, tree))


def check_staged(tree: StagedTree, scope: RestoreScope) -> None:
    """Refuse (StagingError) an entry, or a symlink's target, outside the restore scope."""
    named = referenced(tree, tree.root)
    for path, entry in tree.entries.items():
        if not scope.holds(path, named):
            raise StagingError(f"refused the archive: {scope.refusal(path, named)}")
        if entry["type"] == SYMLINK:
            _check_link(tree, path, str(entry["link"]), scope, named)


def _check_link(
    tree: StagedTree, path: str, link: str, scope: RestoreScope, named: Set[str]
) -> None:
    # The kernel follows each symlink before it applies the `..` after it, so `q/../x` need not
    # be `x`; only leading `..` (up from the link's own real folders) is read as a string.
    parts = [part for part in link.split("/") if part not in ("", ".")]
    named_first = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    if ".." in parts[named_first:] or (link.startswith("/") and ".." in parts):
        raise StagingError(
            f"refused the archive: the symlink {path} points to {link}, with '..' after a "
            "folder name"
        )
    target = link_target(path, link, tree.root)
    if target is None:
        raise StagingError(
            f"refused the archive: the symlink {path} points to {link}, outside this host's root"
        )
    through = next((a for a in ancestors(target) if tree.kind(a) == SYMLINK), None)
    if through is not None:
        raise StagingError(
            f"refused the archive: the symlink {path} points to {target} through the symlink "
            f"{through}"
        )
    if target == path or not scope.holds(target, named):
        raise StagingError(
            f"refused the archive: the symlink {path} points to {target}, outside the restore scope"
        )
