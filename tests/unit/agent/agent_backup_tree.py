"""Writing a host's files under a private BALCTL_ROOT for the backup and restore tests."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balctl.paths import HostPaths


def put(paths: HostPaths, logical: str, data: bytes | str = b"x", mode: int = 0o644) -> Path:
    """A file at `logical` under the root (folders made), with `mode`."""
    target = paths.host(logical)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(target, mode)
    return target


def link(paths: HostPaths, logical: str, to: str) -> Path:
    target = paths.host(logical)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(to, target)
    return target


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_entry(
    path: str, data: bytes | str, mode: str = "0644", owner: str = "root:root"
) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    return {
        "path": path,
        "type": "file",
        "size": len(raw),
        "mode": mode,
        "owner": owner,
        "sha256": sha(raw),
    }


def link_entry(path: str, to: str, owner: str = "root:root") -> dict[str, Any]:
    return {
        "path": path,
        "type": "symlink",
        "link": to,
        "size": len(to.encode()),
        "mode": "0777",
        "owner": owner,
        "sha256": sha(to),
    }


def tar_gz(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar.gz made by hand, any member type allowed (hostile archives)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, data: bytes | str = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    raw = data.encode() if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size = 0
        return info, b""
    return info, raw


def listing(root: Path) -> set[str]:
    """Every path under `root`, relative, folders included."""
    found = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(top, name), root))
    return found
