"""Building a snapshot's archive: a deterministic tar.gz of the manifest's files.

Members are named by their logical path without the leading "/" (`etc/haproxy/haproxy.cfg`),
sorted, regular files and symlinks only (never hardlinks), with their mode, owner (numbers and
names) and modification time. The gzip header carries no name and no time, so the same files
give the same bytes. Each file is read once: its entry (size, SHA-256, mode, owner) is taken
from what went into the archive, so manifest and archive always agree even when a file changed
since the scope was gathered.

The archive is written to a temporary file in <root>/var/lib/balctl (0700), hashed on the way.
The safe extractor for restores is archive_extract.py.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, List, NamedTuple, Sequence

from balctl.backup_manifest import FILE, Entry, mode_text, owner_text, sha256_bytes
from balctl.backup_scope import ScopeError
from balctl.paths import HostPaths

_CHUNK = 64 * 1024
COMPRESS_LEVEL = 6


class Built(NamedTuple):
    path: Path
    sha256: str
    size: int
    entries: List[Entry]  # as archived


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class _HashingReader:
    """Reads at most `limit` bytes of `raw`, hashing them (tarfile reads exactly `size`)."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw = raw
        self.left = limit
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        data = self.raw.read(want) if want > 0 else b""
        self.left -= len(data)
        self.digest.update(data)
        return data


def private_dir(paths: HostPaths) -> Path:
    """<root>/var/lib/balctl, made 0700 if it is missing."""
    folder = paths.state_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def build(paths: HostPaths, entries: Sequence[Entry]) -> Built:
    """Archive `entries` (logical paths under BALCTL_ROOT) into a new temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=".backup-", suffix=".tar.gz", dir=str(private_dir(paths)))
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=COMPRESS_LEVEL
                ) as compressed,
                tarfile.TarFile(
                    fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
                ) as tar,
            ):
                archived = [
                    _add(tar, paths, entry)
                    for entry in sorted(entries, key=lambda e: str(e["path"]))
                ]
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Built(Path(tmp), hashing.digest.hexdigest(), hashing.size, archived)


def _info(path: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    user, _, group = owner_text(st.st_uid, st.st_gid).partition(":")
    info.uname = "" if user.isdigit() else user
    info.gname = "" if group.isdigit() else group
    info.mtime = int(st.st_mtime)
    return info


def _add(tar: tarfile.TarFile, paths: HostPaths, entry: Entry) -> Entry:
    path = str(entry["path"])
    host = str(paths.host(path))
    if entry["type"] == FILE:
        return _add_file(tar, path, host)
    try:
        st = os.lstat(host)
        link = os.readlink(host)
    except OSError as exc:
        raise ScopeError(
            f"{path} changed while it was archived ({exc.strerror}); back up again"
        ) from exc
    info = _info(path, st)
    info.type = tarfile.SYMTYPE
    info.linkname = link
    tar.addfile(info)
    data = link.encode("utf-8", errors="surrogateescape")
    return {
        **entry,
        "link": link,
        "size": len(data),
        "sha256": sha256_bytes(data),
        "mode": mode_text(st.st_mode),
        "owner": owner_text(st.st_uid, st.st_gid),
    }


def _add_file(tar: tarfile.TarFile, path: str, host: str) -> Entry:
    try:
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # The scope captured this symlink as the file it points to (backup_scope.py).
            fd = os.open(host, os.O_RDONLY)
    except OSError as exc:
        raise ScopeError(
            f"{path} changed while it was archived ({exc.strerror}); back up again"
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ScopeError(f"{path} is no longer a regular file; back up again")
        info = _info(path, st)
        info.size = st.st_size
        reader = _HashingReader(handle, st.st_size)
        try:
            tar.addfile(info, reader)
        except OSError as exc:  # tarfile: "unexpected end of data" when the file shrank
            raise ScopeError(f"{path} changed while it was archived; back up again") from exc
    return {
        "path": path,
        "type": FILE,
        "size": st.st_size,
        "mode": mode_text(st.st_mode),
        "owner": owner_text(st.st_uid, st.st_gid),
        "sha256": reader.digest.hexdigest(),
    }
