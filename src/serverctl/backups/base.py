"""The backup store interface. A store keeps archives and manifests under keys; agents never see
its credentials.

A *direct* store (S3) lets agents transfer straight to it through presigned URLs. Otherwise
(the local store) agents transfer through the control plane's one-time URLs
(`/api/agents/backups/transfer/{token}`), which call `write` and `read` here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from serverctl.errors import StorageError

# Archives are configuration and certificates: anything near this is a mistake, not a backup.
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str


@dataclass(frozen=True)
class StoreConfig:
    """A store's settings (validated by its `settings_model`) and its decrypted secrets."""

    settings: dict[str, Any]
    secrets: dict[str, str]


class BackupStore(ABC):
    kind: ClassVar[str]
    title: ClassVar[str]
    # True when agents transfer straight to the store through `presign`.
    direct: ClassVar[bool]
    # Pydantic models of the settings and the secrets (`extra="forbid"`); the UI form and the
    # API's 422 messages come from them.
    settings_model: ClassVar[type[BaseModel]]
    secrets_model: ClassVar[type[BaseModel]]

    def __init__(self, config: StoreConfig) -> None:
        self.config = config

    @abstractmethod
    def location(self) -> dict[str, Any]:
        """Where this store is (no secrets), saved on each snapshot: {"directory": ...} or
        {"bucket": ..., "prefix": ..., "region": ..., "endpoint_url": ...}."""

    def same_place(self, location: dict[str, Any]) -> bool:
        """Is a snapshot saved with `location` in this store?"""
        return self.location() == location

    @abstractmethod
    def key_for(self, pool: str, member: str, stamp: str, snapshot_id: int) -> str:
        """`{prefix}/{pool}/{member}/{stamp}-{id}.tar.gz` (no prefix for the local store); names
        made safe for a key (no `/`, no `..`)."""

    def presign(self, key: str, method: Literal["PUT", "GET"], expires_s: int) -> dict[str, Any]:
        """A transfer for the agent: {"method", "url", "headers"}. Direct stores only."""
        raise NotImplementedError(f"the {self.kind} store has no presigned URLs")

    @abstractmethod
    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int) -> StoredObject:
        """Store the stream under `key` atomically (all or nothing); StorageError past max_bytes."""

    @abstractmethod
    def read(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; StorageError when it is missing or unreadable."""

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        return self.write(key, [data], max(len(data), 1))

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        out = bytearray()
        for chunk in self.read(key):
            out += chunk
            if len(out) > max_bytes:
                raise StorageError(f"{key} is larger than {max_bytes} bytes")
        return bytes(out)

    @abstractmethod
    def digest(self, key: str) -> StoredObject | None:
        """Size and SHA-256 of the stored object, read back from the store; None when missing."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def check(self) -> str:
        """Connectivity test: write, read back and delete a small object. Returns what was
        checked, in words; raises StorageError with the store's own reason."""
