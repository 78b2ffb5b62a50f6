"""How a snapshot is shown: in lists (no files), in full (the manifest of docs/backups.md), and
as the `.manifest.json` written beside its archive in the store."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from serverctl.db.models import BackupSnapshot

ARCHIVE_SUFFIX = ".tar.gz"


def snapshot_summary(snap: BackupSnapshot) -> dict[str, Any]:
    manifest = snap.manifest or {}
    files = manifest.get("files")
    return {
        "id": snap.id,
        "pool_id": snap.pool_id,
        "member_id": snap.member_id,
        "hostname": snap.hostname,
        "kind": snap.kind,
        "state": snap.state,
        "store": snap.store,
        "key": snap.key,
        "size": snap.size,
        "sha256": snap.sha256,
        "haproxy_version": snap.haproxy_version,
        "created_at": snap.created_at,
        "completed_at": snap.completed_at,
        "source": snap.source,
        "enqueued_by": snap.enqueued_by,
        "job_id": snap.job_id,
        "error": snap.error,
        "file_count": len(files) if isinstance(files, list) else None,
        "config_valid": manifest.get("config_valid"),
    }


def snapshot_view(snap: BackupSnapshot) -> dict[str, Any]:
    """The manifest: the summary plus `files` and `skipped`."""
    manifest = snap.manifest or {}
    view = snapshot_summary(snap)
    del view["file_count"]
    view["files"] = list(manifest.get("files") or [])
    view["skipped"] = list(manifest.get("skipped") or [])
    return view


def manifest_key(archive_key: str) -> str:
    """`<key without .tar.gz>.manifest.json`."""
    return archive_key.removesuffix(ARCHIVE_SUFFIX) + ".manifest.json"


def manifest_document(snap: BackupSnapshot) -> bytes:
    """The manifest as the store keeps it: enough, with the archive, to rebuild a host without
    this control plane's database."""
    view = {k: v for k, v in snapshot_view(snap).items() if k != "error"}
    return json.dumps(view, default=_iso, indent=1, sort_keys=True).encode()


def archive_filename(snap: BackupSnapshot) -> str:
    """What a download is saved as: `<hostname>-<stamp>-<id>.tar.gz`."""
    return f"{snap.hostname}-{snap.key.rsplit('/', 1)[-1]}"


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} into a manifest")
