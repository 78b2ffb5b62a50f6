"""The local store: archives as files under one directory of the control plane's host.

Agents never reach this directory: they transfer through the control plane's one-time URLs,
which call `write` and `read` here. Keys are relative paths (`edge/lb1/20261124T030000Z-17.tar.gz`)
and never leave the directory. Files are written atomically (a temporary file in the target
folder, then a rename) and readable by the control plane's user only (files 0600, folders 0700).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serverctl.backups.base import BackupStore, StoreConfig, StoredObject
from serverctl.errors import StorageError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_SUBDIR = "backups"
CHUNK = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class LocalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    directory: str | None = Field(
        default=None,
        description="absolute, or relative to the data directory; default <data_dir>/backups",
    )

    @field_validator("directory")
    @classmethod
    def _one_path(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "\x00" in value or "\n" in value:
            raise ValueError("must be one line without NUL characters")
        return value


class NoSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")


def resolve_directory(directory: str | None, data_dir: Path) -> Path:
    """The store's absolute directory: `<data_dir>/backups` when not set; a relative one is
    taken relative to the data directory (not to wherever the service happened to start)."""
    if not directory:
        return (data_dir / DEFAULT_SUBDIR).absolute()
    path = Path(directory).expanduser()
    return (path if path.is_absolute() else data_dir / path).absolute()


def safe_name(value: str) -> str:
    """One path segment made of [A-Za-z0-9._-]; anything else becomes "_", and a name of dots
    only (".", "..") or nothing at all becomes underscores."""
    name = _UNSAFE.sub("_", value)
    if not name.strip("."):
        name = "_" * max(len(name), 1)
    return name


def layout_key(pool: str, member: str, stamp: str, snapshot_id: int) -> str:
    """`{pool}/{member}/{stamp}-{id}.tar.gz`, the per-member layout every store uses."""
    return f"{safe_name(pool)}/{safe_name(member)}/{safe_name(stamp)}-{int(snapshot_id)}.tar.gz"


class LocalStore(BackupStore):
    kind: ClassVar[str] = "local"
    title: ClassVar[str] = "Local directory"
    direct: ClassVar[bool] = False
    settings_model: ClassVar[type[BaseModel]] = LocalSettings
    secrets_model: ClassVar[type[BaseModel]] = NoSecrets

    def __init__(self, config: StoreConfig) -> None:
        super().__init__(config)
        directory = config.settings.get("directory")
        if not isinstance(directory, str) or not Path(directory).is_absolute():
            # The settings service resolves the default and relative paths (resolve_directory).
            raise ValidationError(
                f"the local backup store needs an absolute directory, not {directory!r}"
            )
        self.directory = Path(os.path.normpath(directory))

    def location(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def same_place(self, location: dict[str, Any]) -> bool:
        where = location.get("directory")
        return isinstance(where, str) and os.path.normpath(where) == str(self.directory)

    def key_for(self, pool: str, member: str, stamp: str, snapshot_id: int) -> str:
        return layout_key(pool, member, stamp, snapshot_id)

    # -- objects ----------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int) -> StoredObject:
        target = self._path(key)
        self._make_folders(target.parent)
        try:
            fd, temp_name = _temp_file(target)
        except OSError as exc:
            raise StorageError(_os_reason(f"cannot create a file in {target.parent}", exc)) from exc
        temp = Path(temp_name)
        try:
            stored = _copy_into(fd, chunks, max_bytes, key, target)
            try:
                os.replace(temp, target)
            except OSError as exc:
                raise StorageError(_os_reason(f"cannot write {target}", exc)) from exc
        except BaseException:
            # Whatever broke (the store, the size, the sender's stream): no partial file stays.
            temp.unlink(missing_ok=True)
            raise
        _sync_folder(target.parent)
        return stored

    def read(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise StorageError(
                f"no object {key!r} in the local store at {self.directory}"
            ) from None
        except OSError as exc:
            raise StorageError(_os_reason(f"cannot read {path}", exc)) from exc
        return _chunks_of(handle, path)

    def digest(self, key: str) -> StoredObject | None:
        path = self._path(key)
        digest, size = hashlib.sha256(), 0
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(_os_reason(f"cannot read {path}", exc)) from exc
        return StoredObject(size, digest.hexdigest())

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(_os_reason(f"cannot delete {path}", exc)) from exc
        self._prune(path.parent)

    def check(self) -> str:
        probe = f".serverctl-check-{secrets.token_hex(8)}"
        data = secrets.token_bytes(64)
        self.put_bytes(probe, data)
        try:
            if self.get_bytes(probe, len(data)) != data:
                raise StorageError(f"a test file written in {self.directory} read back different")
        finally:
            self.delete(probe)
        free = shutil.disk_usage(self.directory).free
        return (
            f"directory {self.directory}: wrote, read back and deleted a test file; "
            f"{_size(free)} free"
        )

    # -- paths ------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file of `key`, refusing any key that would leave the directory."""
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise StorageError(f"refused backup key {key!r}: it would leave {self.directory}")
        path = self.directory.joinpath(*parts)
        # A symlink planted in the tree must not lead out of it either.
        root = self.directory.resolve()
        if not path.resolve().is_relative_to(root):
            raise StorageError(f"refused backup key {key!r}: it resolves outside {self.directory}")
        return path

    def _make_folders(self, folder: Path) -> None:
        missing = []
        current = folder
        while not current.exists() and current != current.parent:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    _os_reason(f"cannot create the backup folder {path}", exc)
                ) from exc

    def _prune(self, folder: Path) -> None:
        """Remove the member and pool folders a delete left empty (never the directory)."""
        while folder != self.directory and folder.is_relative_to(self.directory):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _temp_file(target: Path) -> tuple[int, str]:
    # mkstemp creates the file 0600; in the target folder so the rename stays on one filesystem.
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")


def _copy_into(
    fd: int, chunks: Iterable[bytes], max_bytes: int, key: str, target: Path
) -> StoredObject:
    """Copy the stream into the open temporary file. Errors of the stream itself (a sender
    that went away) pass through as they are; only the disk's become StorageError."""
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise StorageError(
                    f"{key} is larger than the {max_bytes} bytes allowed; nothing was stored"
                )
            digest.update(chunk)
            try:
                handle.write(chunk)
            except OSError as exc:
                raise StorageError(_os_reason(f"cannot write {target}", exc)) from exc
        try:
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError(_os_reason(f"cannot write {target}", exc)) from exc
    return StoredObject(size, digest.hexdigest())


def _chunks_of(handle: Any, path: Path) -> Iterator[bytes]:
    with handle:
        while True:
            try:
                chunk = handle.read(CHUNK)
            except OSError as exc:
                raise StorageError(_os_reason(f"cannot read {path}", exc)) from exc
            if not chunk:
                return
            yield chunk


def _sync_folder(folder: Path) -> None:
    """Make the rename durable: a crash right after must not lose the new name."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_reason(what: str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    hint = ""
    if isinstance(exc, PermissionError):
        hint = "; make the folder writable by the user serverctl runs as"
    elif exc.errno == errno.ENOSPC:
        hint = "; free some space or choose another directory"
    return f"{what}: {reason}{hint}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
