"""Extracting a snapshot's archive safely: all of it into a fresh staging folder, or nothing.

The archive comes from a store the agent does not control, so every member is checked against
the manifest the control plane sent, and the whole archive is refused (StagingError, the
staging folder removed) on the first problem:

- the archive's SHA-256 is not the expected one;
- a name that is empty, absolute, has a ".." part, appears twice, or is not in the manifest;
- a manifest entry missing from the archive, or outside the restore scope (restore_scope.py);
- a member of another type than its entry; a folder, device file, FIFO or anything else;
- a hardlink, unless its target is a regular file earlier in the same archive (then a copy is
  written); a symlink whose target leaves the restore scope;
- a file whose size or SHA-256 differs from the manifest; a path under a symlink entry.

Files are written with O_CREAT|O_EXCL|O_NOFOLLOW into folders this code made, so nothing is
written outside the staging folder; tarfile's extract functions are never used. The manifest's
mode (setuid, setgid and sticky bits dropped), owner (resolved by name on this host; only when
running as root) and modification time are applied to the staged files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Sequence, Set, Tuple, cast

from balctl.backup_manifest import (
    FILE,
    SYMLINK,
    Entry,
    ManifestError,
    StagingError,
    check_entries,
    file_mode,
    resolve_owner,
    sha256_bytes,
)
from balctl.restore_scope import RestoreScope, StagedTree, check_staged

_CHUNK = 64 * 1024
# Headers, pax records and padding per member, beyond the files' own bytes.
_PER_MEMBER_SLACK = 8 * 1024
_SLACK = 1024 * 1024
_DEVICES = {tarfile.CHRTYPE: "a device file", tarfile.BLKTYPE: "a device file"}


class Staged:
    __slots__ = ("staging", "entries", "tree", "notes")

    def __init__(
        self,
        staging: Path,
        entries: Dict[str, Entry],
        tree: StagedTree,
        notes: Optional[List[str]] = None,
    ) -> None:
        self.staging = staging
        self.entries = entries
        self.tree = tree
        self.notes: List[str] = [] if notes is None else notes

    def path(self, logical: str) -> Path:
        return self.staging / logical.lstrip("/")


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Bounded:
    """The decompressed stream, refused past `limit` bytes (a gzip bomb stops here)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.left = limit

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.left -= len(data)
        if self.left < 0:
            raise StagingError(
                "refused the archive: it unpacks to far more than its manifest lists"
            )
        return data


def stage(
    archive: Path,
    expected_sha256: str,
    entries: Sequence[Entry],
    staging: Path,
    scope: RestoreScope,
    root: str,
) -> Staged:
    """Check and extract `archive` into the new folder `staging`; StagingError on any problem."""
    actual = sha256_path(archive)
    if actual != expected_sha256:
        raise StagingError(
            f"refused the archive: its SHA-256 is {actual}, not the snapshot's {expected_sha256}"
        )
    try:
        entries = check_entries(list(entries))
    except ManifestError as exc:
        raise StagingError(f"refused the archive: its manifest is invalid: {exc}") from None
    by_path = {str(entry["path"]): entry for entry in entries}
    for path in by_path:
        if not scope.may_hold(path):
            raise StagingError(f"refused the archive: {scope.refusal(path, set())}")
    os.mkdir(staging, 0o700)
    try:
        staged = Staged(staging, by_path, StagedTree(staging, entries, root))
        _Extractor(staged).run(archive)
        check_staged(staged.tree, scope)
        _apply_owners(staged)
        return staged
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class _Extractor:
    def __init__(self, staged: Staged) -> None:
        self.staged = staged
        self.entries = staged.entries
        self.done: Set[str] = set()
        self.files: Set[str] = set()  # regular file members so far: hardlink targets

    def run(self, archive: Path) -> None:
        limit = sum(int(e["size"]) for e in self.entries.values())
        limit += _SLACK + _PER_MEMBER_SLACK * len(self.entries)
        try:
            with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                bounded = cast(IO[bytes], _Bounded(cast(IO[bytes], unzipped), limit))
                with tarfile.open(fileobj=bounded, mode="r|") as tar:
                    for member in tar:
                        self._member(tar, member)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise StagingError(f"refused the archive: it is not a valid tar.gz ({exc})") from exc
        missing = sorted(set(self.entries) - self.done)
        if missing:
            raise StagingError(
                f"refused the archive: {missing[0]} is in the manifest but not in the archive"
                + (f" ({len(missing)} files missing)" if len(missing) > 1 else "")
            )

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = _checked_name(member.name)
        if path in self.done:
            raise StagingError(f"refused the archive: {member.name!r} appears twice")
        entry = self.entries.get(path)
        if entry is None:
            raise StagingError(f"refused the archive: {member.name!r} is not in the manifest")
        self.done.add(path)
        if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            self._expect(entry, FILE, member)
            self._file(tar, member, entry)
            self.files.add(path)
        elif member.type == tarfile.SYMTYPE:
            self._expect(entry, SYMLINK, member)
            self._symlink(member, entry)
        elif member.type == tarfile.LNKTYPE:
            self._expect(entry, FILE, member)
            self._hardlink(member, entry)
            self.files.add(path)
        else:
            what = _DEVICES.get(member.type) or (
                "a FIFO"
                if member.type == tarfile.FIFOTYPE
                else "a folder"
                if member.type == tarfile.DIRTYPE
                else f"an unsupported member (type {member.type!r})"
            )
            raise StagingError(f"refused the archive: {member.name!r} is {what}")

    @staticmethod
    def _expect(entry: Entry, kind: str, member: tarfile.TarInfo) -> None:
        if entry["type"] != kind:
            raise StagingError(
                f"refused the archive: {member.name!r} is a {kind} in the archive but a "
                f"{entry['type']} in the manifest"
            )

    def _target(self, path: str) -> Path:
        """The staging path for `path`, its folders made (by this code, so never symlinks)."""
        target = self.staged.path(path)
        folder = self.staged.staging
        for part in Path(path.lstrip("/")).parts[:-1]:
            folder = folder / part
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                if not folder.is_dir() or folder.is_symlink():
                    raise StagingError(
                        f"refused the archive: {path} lies under a non-folder"
                    ) from None
        return target

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, entry: Entry) -> None:
        path = str(entry["path"])
        if member.size != entry["size"]:
            raise StagingError(
                f"refused the archive: {path} holds {member.size} bytes, the manifest says "
                f"{entry['size']}"
            )
        source = tar.extractfile(member)
        if source is None:
            raise StagingError(f"refused the archive: cannot read {member.name!r}")
        self._write(path, entry, iter(lambda: source.read(_CHUNK), b""))
        self._utime(path, member.mtime)

    def _hardlink(self, member: tarfile.TarInfo, entry: Entry) -> None:
        path = str(entry["path"])
        origin = _checked_name(member.linkname)
        if origin not in self.files:
            raise StagingError(
                f"refused the archive: {member.name!r} is a hardlink to {member.linkname!r}, "
                "which is not a regular file earlier in the archive"
            )
        fd = os.open(self.staged.path(origin), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as source:
            self._write(path, entry, iter(lambda: source.read(_CHUNK), b""))
        self._utime(path, member.mtime)

    def _write(self, path: str, entry: Entry, chunks: Iterator[bytes]) -> None:
        target = self._target(path)
        digest = hashlib.sha256()
        size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > int(entry["size"]):
                    break
                digest.update(chunk)
                out.write(chunk)
            os.fchmod(out.fileno(), file_mode(entry))
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise StagingError(
                f"refused the archive: {path} does not match the manifest "
                f"(size {size} vs {entry['size']}, or a different SHA-256)"
            )

    def _symlink(self, member: tarfile.TarInfo, entry: Entry) -> None:
        path = str(entry["path"])
        link = member.linkname
        data = link.encode("utf-8", errors="surrogateescape")
        if link != entry["link"] or sha256_bytes(data) != entry["sha256"]:
            raise StagingError(
                f"refused the archive: the symlink {path} points to {link!r}, the manifest says "
                f"{entry['link']!r}"
            )
        os.symlink(link, self._target(path))
        self._utime(path, member.mtime)

    def _utime(self, path: str, mtime: float) -> None:
        with contextlib.suppress(OSError, OverflowError, ValueError):
            stamp = int(mtime)
            os.utime(self.staged.path(path), (stamp, stamp), follow_symlinks=False)


def _checked_name(name: str) -> str:
    """The logical path of a member name; StagingError for empty, absolute or ".." names."""
    if not name:
        raise StagingError("refused the archive: a member has an empty name")
    if name.startswith("/"):
        raise StagingError(f"refused the archive: {name!r} is an absolute name")
    if ".." in name.split("/"):
        raise StagingError(f"refused the archive: {name!r} has a '..' part")
    if "\x00" in name:
        raise StagingError(f"refused the archive: {name!r} holds a NUL byte")
    return "/" + name


def _apply_owners(staged: Staged) -> None:
    """chown the staged files to the manifest's owners, by name on this host (root only)."""
    if os.geteuid() != 0:
        return
    cache: Dict[str, Tuple[int, int]] = {}
    for path, entry in staged.entries.items():
        owner = str(entry["owner"])
        if owner not in cache:
            uid, gid, notes = resolve_owner(owner)
            cache[owner] = (uid, gid)
            staged.notes.extend(f"{path}: {note}" for note in notes)
        uid, gid = cache[owner]
        os.chown(staged.path(path), uid, gid, follow_symlinks=False)
