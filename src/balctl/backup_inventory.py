"""The heartbeat's `backup_files`: the files a haproxy backup would capture on this host now.

The control plane compares a snapshot with them to show what a restore would change, and reads
`ufw` to refuse a UFW backup where there is no ufw. The scope is gathered again only when the
stat fingerprint of what it looked at changed (or every RESEND_EVERY_S), and only changed files
are hashed again (the hashes are kept by device, inode, size and times). The block is sent when
its digest changed, every RESEND_EVERY_S, and again after a beat that carried it was lost.
"""

from __future__ import annotations

import logging
import os
from typing import Any, BinaryIO, Callable, Dict, Optional, Tuple

from balctl.backup_manifest import digest
from balctl.backup_scope import HAPROXY, Scope, fingerprint, gather, hash_file, ufw_binary
from balctl.errors import AgentError
from balctl.paths import HostPaths

logger = logging.getLogger(__name__)

RESEND_EVERY_S = 600.0
MAX_REPORTED = 500

_Key = Tuple[int, int, int, int, int]


class Inventory:
    def __init__(self, paths: HostPaths) -> None:
        self.paths = paths
        self._scope: Optional[Scope] = None
        self._mark: Tuple[Any, ...] = ()
        self._gathered_at = 0.0
        self._block: Dict[str, Any] = {}
        self._hashes: Dict[_Key, str] = {}
        self._sent: Tuple[str, float] = ("", 0.0)
        self._failed_at: Optional[float] = None

    def due(self, now: float) -> Optional[Dict[str, Any]]:
        """The block to send with this beat, or None when the last one sent still stands."""
        if self._failed_at is not None and now - self._failed_at < RESEND_EVERY_S:
            return None  # a scope past its bounds is not walked again every few seconds
        try:
            block = self._current(now)
        except AgentError as exc:
            if self._failed_at is None:
                logger.warning("backup inventory left out of heartbeats: %s", exc)
            self._failed_at = now
            return None
        self._failed_at = None
        mark = f"{block['digest']}:{block['ufw']}"
        last_mark, last_at = self._sent
        if mark == last_mark and now - last_at < RESEND_EVERY_S:
            return None
        self._sent = (mark, now)
        return block

    def lost(self) -> None:
        """The beat that carried the block was not delivered: send it with the next one."""
        self._sent = ("", 0.0)

    def _current(self, now: float) -> Dict[str, Any]:
        stale = now - self._gathered_at >= RESEND_EVERY_S
        if self._scope is not None and not stale:
            if fingerprint(self._scope, self.paths.root) == self._mark:
                self._block["ufw"] = ufw_binary(self.paths) is not None
                return self._block
        used: Dict[_Key, str] = {}
        scope = gather(self.paths, HAPROXY, hasher=self._hasher(used))
        self._hashes = used  # forget the hashes of files that left the scope
        self._scope, self._mark, self._gathered_at = scope, fingerprint(scope, self.paths.root), now
        files = scope.entries
        block: Dict[str, Any] = {
            "digest": digest(files),
            "files": files[:MAX_REPORTED],
            "ufw": ufw_binary(self.paths) is not None,
        }
        if len(files) > MAX_REPORTED:
            block["truncated"] = True
        logger.debug("backup inventory: %d files, digest %s", len(files), block["digest"][:12])
        self._block = block
        return block

    def _hasher(self, used: Dict[_Key, str]) -> Callable[[BinaryIO, os.stat_result], str]:
        def hasher(handle: BinaryIO, st: os.stat_result) -> str:
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = self._hashes.get(key) or used.get(key)
            if known is None:
                known = hash_file(handle, st)
            used[key] = known
            return known

        return hasher
