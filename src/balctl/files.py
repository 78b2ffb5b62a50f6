"""Replacing a file atomically: a reader (HAProxy, a reload, a crash) sees the old file or the
new one, never half of one.

The new content goes to a temporary file in the same directory (same filesystem, so rename is
atomic), is fsynced, gets the old file's mode and owner, and is renamed over the old one; the
directory is fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Tuple

BACKUP_SUFFIX = ".balctl-backup"


def replace_file(path: Path, data: bytes, default_mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, keeping its mode and owner when it exists."""
    try:
        old: Optional[os.stat_result] = path.stat()
    except FileNotFoundError:
        old = None
    owner = None
    if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        owner = (old.st_uid, old.st_gid)
    _write(path, data, stat.S_IMODE(old.st_mode) if old else default_mode, owner)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically with `mode`, whatever the mode of the file it replaces:
    a secret (agent.env, a private key) never inherits a looser mode."""
    _write(path, data, mode, None)


def _write(path: Path, data: bytes, mode: int, owner: Optional[Tuple[int, int]]) -> None:
    # mkstemp makes the file 0600, and the mode is set before the first byte: a secret is never
    # briefly readable by others.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            if owner is not None:
                # Only root may give a file away; without that right the new file stays ours.
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def backup_path(path: Path) -> Path:
    # Not *.cfg: HAProxy loads every *.cfg of conf.d, and must not load a backup.
    return path.with_name(path.name + BACKUP_SUFFIX)


def fsync_dir(directory: Path) -> None:
    # Some filesystems refuse fsync on a directory; the rename is then as durable as it gets.
    with contextlib.suppress(OSError):
        fd = os.open(str(directory), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
