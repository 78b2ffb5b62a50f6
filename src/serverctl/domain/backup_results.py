"""What an agent reports when a backup job completes, checked before it becomes a manifest.

The manifest is what a later restore trusts: it names the files the agent may write and their
SHA-256. So the result must describe a sane archive (absolute paths under /etc, no `..`, no
duplicates, bounded counts) before the control plane keeps it.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from serverctl.backups.base import MAX_ARCHIVE_BYTES

# A completion body is at most 4 MiB (MAX_COMPLETION_BYTES); these make the limits explicit.
MAX_FILES = 5_000
MAX_SKIPPED = 1_000
MAX_PATH = 4_096

Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: StrictStr = Field(max_length=MAX_PATH)
    type: Literal["file", "symlink"]
    size: StrictInt = Field(ge=0, le=MAX_ARCHIVE_BYTES)
    mode: StrictStr = Field(pattern=r"^0?[0-7]{3,4}$")
    owner: StrictStr = Field(default="", max_length=256)
    sha256: Sha256
    link: StrictStr | None = Field(default=None, max_length=MAX_PATH)


class SkippedFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: StrictStr = Field(max_length=MAX_PATH)
    reason: StrictStr = Field(max_length=500)


class BackupResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    snapshot_id: StrictInt
    archive_sha256: Sha256
    size: StrictInt = Field(ge=1, le=MAX_ARCHIVE_BYTES)
    haproxy_version: StrictStr | None = Field(default=None, max_length=64)
    files: list[ManifestFile] = Field(max_length=MAX_FILES)
    skipped: list[SkippedFile] = Field(default_factory=list, max_length=MAX_SKIPPED)
    config_valid: StrictBool | None = None


class BadResult(Exception):
    """The agent's result does not describe an archive the control plane can keep."""


def check_result(result: dict[str, Any] | None, snapshot_id: int) -> BackupResult:
    """The parsed result, or BadResult saying what is wrong with it."""
    if not isinstance(result, dict):
        raise BadResult("the agent reported no result object for the backup")
    try:
        parsed = BackupResult.model_validate(result)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'result'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise BadResult(f"the backup result is malformed: {problems}") from None
    if parsed.snapshot_id != snapshot_id:
        raise BadResult(
            f"the result names snapshot {parsed.snapshot_id}, but this job's snapshot is "
            f"{snapshot_id}"
        )
    seen: set[str] = set()
    for entry in parsed.files:
        problem = path_problem(entry.path)
        if problem:
            raise BadResult(f"the backup lists {entry.path[:200]!r}: {problem}")
        if entry.path in seen:
            raise BadResult(f"the backup lists {entry.path[:200]!r} twice")
        if entry.type == "symlink" and not entry.link:
            raise BadResult(f"the symlink {entry.path[:200]!r} has no link target")
        seen.add(entry.path)
    return parsed


def path_problem(path: str) -> str | None:
    """Why a path cannot be in a backup's manifest, or None. Paths are absolute, normalised and
    under /etc (the agent's backup scope); the agent enforces its narrower scope on restore."""
    if "\x00" in path or "\n" in path:
        return "control characters in the path"
    if not path.startswith("/etc/"):
        return "not under /etc/"
    if ".." in path.split("/"):
        return "'..' in the path"
    if posixpath.normpath(path) != path:
        return "not a normalised path"
    return None


def manifest_of(parsed: BackupResult) -> dict[str, Any]:
    """The manifest part kept on the snapshot row (the rest are the row's own columns)."""
    return {
        "files": [f.model_dump(exclude_none=True) for f in parsed.files],
        "skipped": [s.model_dump() for s in parsed.skipped],
        "config_valid": parsed.config_valid,
    }
