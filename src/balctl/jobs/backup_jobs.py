"""haproxy.backup and backup.ufw: gather the scope, archive it, upload it, report the manifest.

A backup never fails because HAProxy's configuration is invalid: it captures the files as they
are, and says so (`config_valid: false`). Params and result: docs/backups.md.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Optional

from balctl import archive, backup_scope, haproxy_ctl, proc, transfer
from balctl.backup_manifest import MAX_TOTAL_BYTES
from balctl.errors import AgentError, ParamError
from balctl.jobs import params as p
from balctl.jobs.install import installed_version
from balctl.jobs.model import JobContext, Outcome
from balctl.restore_scope import RestoreScope, restore_dirs

UFW_STATUS_TIMEOUT_S = 30.0
MAX_SKIPPED = 1000


def positive_int(params: Dict[str, Any], key: str, maximum: int) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ParamError(f"{key} must be a whole number from 1 to {maximum}")
    return value


def check(params: Any) -> Dict[str, Any]:
    """{"snapshot_id", "max_bytes", "upload"} exactly."""
    given = dict(p.only(p.as_object(params), ("snapshot_id", "max_bytes", "upload")))
    return {
        "snapshot_id": positive_int(given, "snapshot_id", 2**63 - 1),
        "max_bytes": positive_int(given, "max_bytes", MAX_TOTAL_BYTES),
        "upload": transfer.check_spec(given["upload"], "PUT", "upload"),
    }


def haproxy_backup(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    paths = ctx.paths
    if not paths.haproxy_cfg.is_file():
        return Outcome(
            False,
            f"there is no HAProxy configuration at {paths.haproxy_cfg}: nothing to back up "
            "(install HAProxy first)",
        )
    binary = haproxy_ctl.haproxy_binary()
    version = installed_version(binary, ctx.deadline) if binary else None
    check_step = haproxy_ctl.validate(paths, ctx.deadline)
    try:
        scope = backup_scope.gather(paths, backup_scope.HAPROXY, _scope_for_backup())
    except AgentError as exc:
        return Outcome(False, str(exc), check_step.output)
    note = "" if check_step.ok else f"; note: {check_step.summary}"
    return _archive_and_upload(params, ctx, scope, version, check_step.ok, note, check_step.output)


def ufw_backup(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    paths = ctx.paths
    ufw = backup_scope.ufw_binary(paths)
    if ufw is None:
        return Outcome(
            False, "ufw is not installed on this host: there are no UFW rules to back up"
        )
    status = proc.run([ufw, "status", "verbose"], ctx.deadline.cap(UFW_STATUS_TIMEOUT_S))
    output = f"$ ufw status verbose\n{status.output}"
    if not status.ok:
        output += f"\n({status.describe()})"
    binary = haproxy_ctl.haproxy_binary()
    version = installed_version(binary, ctx.deadline) if binary else None
    try:
        scope = backup_scope.gather(paths, backup_scope.UFW)
    except AgentError as exc:
        return Outcome(False, str(exc), output)
    if not scope.entries:
        return Outcome(False, "ufw is installed but none of its rule files exist", output)
    return _archive_and_upload(params, ctx, scope, version, None, "", output)


def _scope_for_backup() -> RestoreScope:
    # The folders this host would restore into; a bad BALCTL_RESTORE_DIRS only narrows it here.
    try:
        return RestoreScope(restore_dirs())
    except AgentError:
        return RestoreScope()


def _archive_and_upload(
    params: Dict[str, Any],
    ctx: JobContext,
    scope: backup_scope.Scope,
    version: Optional[str],
    valid: Optional[bool],
    note: str,
    output: str,
) -> Outcome:
    built: Optional[archive.Built] = None
    try:
        built = archive.build(ctx.paths, scope.entries)
        moved = transfer.upload(
            ctx.cfg, params["upload"], built.path, params["max_bytes"], ctx.deadline
        )
    except AgentError as exc:
        return Outcome(False, str(exc), output)
    except OSError as exc:
        return Outcome(
            False, f"cannot write the archive under {ctx.paths.state_dir}: {exc}", output
        )
    finally:
        if built is not None:
            with contextlib.suppress(OSError):
                os.unlink(built.path)
    skipped = scope.skipped[:MAX_SKIPPED]
    result = {
        "snapshot_id": params["snapshot_id"],
        "archive_sha256": built.sha256,
        "size": built.size,
        "haproxy_version": version,
        "files": built.entries,
        "skipped": skipped,
        "config_valid": valid,
    }
    summary = (
        f"backed up {len(built.entries)} files ({built.size} bytes, SHA-256 "
        f"{built.sha256[:12]}) to {moved.where}"
    )
    if skipped:
        summary += f"; {len(scope.skipped)} skipped"
    details = [output.rstrip("\n")] if output.strip() else []
    details += [f"skipped {item['path']}: {item['reason']}" for item in skipped]
    return Outcome(True, summary + note, "\n".join(details), result)
