"""The heartbeat's `certificates`: the TLS certificates HAProxy has on this host.

What is listed: the PEM files (`*.pem`, `*.crt`, not hidden) directly in /etc/haproxy/certs,
then every certificate the configuration loads through `crt` (a file, a crt folder's files, a
crt-list's entries; companions such as `.key` and `.ocsp` left out), at most MAX_FILES in all.
Each entry: {"path", "subject", "sans", "issuer", "not_after", "serial", "referenced"}, or
{"path", "referenced", "error"} for a file that cannot be read as a certificate. Paths are
logical ("/etc/haproxy/certs/x.pem"), as in `backup_files`.

Safety: a symlink is followed only when it resolves under /etc (the same bound the backup uses
for references), only regular files of at most MAX_FILE_BYTES are read, and each file is read
by `openssl x509 -noout` (tls_certs.inspect), which prints nothing of a private key kept in the
same PEM. The reading is cached by (path, mtime, size, inode), so unchanged files cost a stat
and no fork; at most MAX_INSPECT_PER_ROUND files are read per heartbeat round, and the list is
sent only once complete. Sent when it changed, every RESEND_EVERY_S, and after a lost beat; an
empty list only once the host had certificates (a host without any sends no key at all).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from balctl import tls_certs
from balctl.backup_manifest import under
from balctl.haproxy_cfg import Section
from balctl.haproxy_refs import (
    COMPANIONS,
    CRT_KEYWORDS,
    LINE_KEYWORDS,
    HostTree,
    closure,
    references,
)
from balctl.paths import HostPaths
from balctl.proc import Deadline

logger = logging.getLogger(__name__)

CERTS_DIR = "/etc/haproxy/certs"
MAX_FILES = 100
MAX_FILE_BYTES = 1024 * 1024
MAX_INSPECT_PER_ROUND = 25
INSPECT_TIMEOUT_S = 5.0
RESEND_EVERY_S = 300.0
_SUFFIXES = (".pem", ".crt")

_Key = Tuple[str, int, int, int]


def crt_only(sections: Sequence[Section]) -> List[Section]:
    """`sections` with bind/server lines cut down to their `crt`/`crt-list` options, so
    haproxy_refs.references finds certificates only (not CA or CRL files)."""
    out: List[Section] = []
    for section in sections:
        lines: List[List[str]] = []
        for words in section.lines:
            if not words:
                continue
            if words[0] in ("crt-base", "ca-base"):
                lines.append(words)
            elif words[0] in LINE_KEYWORDS:
                kept = [words[0]]
                for index, word in enumerate(words[:-1]):
                    if word in CRT_KEYWORDS:
                        kept += [word, words[index + 1]]
                lines.append(kept)
        out.append(Section(section.kind, section.name, lines))
    return out


def _is_certificate_name(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and not name.endswith(COMPANIONS)


class CertInventory:
    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self._cache: Dict[_Key, Dict[str, Any]] = {}
        self._sent: Tuple[str, float] = ("", 0.0)
        self._had_entries = False

    def due(self, now: float, sections: Sequence[Section]) -> Optional[List[Dict[str, Any]]]:
        """The list to send with this beat, or None (unchanged, or not fully read yet)."""
        entries = self.current(sections)
        if entries is None or (not entries and not self._had_entries):
            # A host with no certificate says nothing (the control plane's default is none),
            # until it had some: then the empty list says they are gone.
            return None
        self._had_entries = True
        mark = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
        last_mark, last_at = self._sent
        if mark == last_mark and now - last_at < RESEND_EVERY_S:
            return None
        self._sent = (mark, now)
        return entries

    def lost(self) -> None:
        """The beat that carried the list was not delivered: send it with the next one."""
        self._sent = ("", 0.0)

    def current(self, sections: Sequence[Section]) -> Optional[List[Dict[str, Any]]]:
        listed, referenced = self._candidates(sections)
        used: Dict[_Key, Dict[str, Any]] = {}
        entries: List[Dict[str, Any]] = []
        inspected = 0
        complete = True
        for path in listed:
            key, entry = self._look(path)
            if entry is None and key is not None:
                entry = self._cache.get(key)
                if entry is None:
                    if inspected >= MAX_INSPECT_PER_ROUND:
                        complete = False  # the rest next round: a heartbeat never waits long
                        continue
                    inspected += 1
                    entry = self._inspect(path)
                if entry.get("error") != tls_certs.OPENSSL_MISSING:  # read again once installed
                    used[key] = entry
            assert entry is not None
            entries.append({"path": path, **entry, "referenced": path in referenced})
        self._cache = used if complete else {**self._cache, **used}
        return entries if complete else None

    def _candidates(self, sections: Sequence[Section]) -> Tuple[List[str], Set[str]]:
        """(paths to list, in order; the paths HAProxy loads), all logical."""
        root = self.paths.root
        tree = HostTree(root)
        refs = references(crt_only(sections), root, tree)
        files = [
            path for path in refs.files if path not in refs.looked_at and _is_certificate_name(path)
        ]
        referenced = set(closure(files, root, tree))
        listed: List[str] = []
        for name in self._certs_dir():
            listed.append(f"{CERTS_DIR}/{name}")
        for path in files:
            if path not in listed:
                listed.append(path)
        if len(listed) > MAX_FILES:
            logger.debug("certificate inventory: %d files, listing %d", len(listed), MAX_FILES)
        return listed[:MAX_FILES], referenced

    def _certs_dir(self) -> List[str]:
        folder = self.paths.host(CERTS_DIR)
        try:
            with os.scandir(folder) as found:
                names = [
                    entry.name
                    for entry in found
                    if entry.name.lower().endswith(_SUFFIXES)
                    and not entry.name.startswith(".")
                    and not entry.is_dir(follow_symlinks=False)
                ]
        except OSError:
            return []
        return sorted(names)[: MAX_FILES + 1]

    def _look(self, path: str) -> Tuple[Optional[_Key], Optional[Dict[str, Any]]]:
        """(cache key, None) for a file to read; (None, {"error": ...}) for one not to read."""
        host = self.paths.host(path)
        try:
            if stat.S_ISLNK(os.lstat(host).st_mode):
                target = self.paths.logical(os.path.realpath(host))
                if target is None or not under(target, "/etc"):
                    return None, {"error": "a symlink that leads outside /etc: not read"}
            st = os.stat(host)
        except OSError as exc:
            return None, {"error": f"cannot read it: {exc.strerror or exc}"}
        if not stat.S_ISREG(st.st_mode):
            return None, {"error": "not a regular file"}
        if st.st_size > MAX_FILE_BYTES:
            return None, {"error": f"larger than {MAX_FILE_BYTES} bytes: not read"}
        return (path, st.st_mtime_ns, st.st_size, st.st_ino), None

    def _inspect(self, path: str) -> Dict[str, Any]:
        try:
            info = tls_certs.inspect(self.paths.host(path), Deadline(INSPECT_TIMEOUT_S))
        except tls_certs.CertError as exc:
            return {"error": str(exc)[:300]}
        return info.to_dict()
