"""haproxy.restore: download, check, stage, swap under a journal, `haproxy -c`, reload, commit.

Any failure puts the previous files back (restore_swap.py) and, when a new HAProxy had already
taken over, reloads the previous set. Params and result: docs/backups.md.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List

from balctl import haproxy_ctl, transfer
from balctl.archive_extract import Staged, stage
from balctl.backup_manifest import MAX_TOTAL_BYTES, ManifestError, check_entries
from balctl.errors import AgentError, ParamError
from balctl.jobs import params as p
from balctl.jobs.backup_jobs import positive_int
from balctl.jobs.model import JobContext, Outcome
from balctl.proc import Deadline
from balctl.restore_plan import Plan, plan
from balctl.restore_scope import (
    HAPROXY_CFG,
    RestoreScope,
    code_directives,
    restore_dirs,
    staged_sections,
)
from balctl.restore_swap import (
    ADD,
    CHANGE,
    CHECKING,
    COMMITTED,
    RELOADING,
    REMOVE,
    ROLLBACK_BUDGET_S,
    SWAPPING,
    Swap,
    SwapError,
    recover_one,
    step_pause,
)

logger = logging.getLogger(__name__)

KEYS = ("snapshot_id", "source_hostname", "archive_sha256", "size", "files", "download")


def check(params: Any) -> Dict[str, Any]:
    given = dict(p.only(p.as_object(params), KEYS))
    try:
        files = check_entries(given["files"])
    except ManifestError as exc:
        raise ParamError(f"files: {exc}") from None
    return {
        "snapshot_id": positive_int(given, "snapshot_id", 2**63 - 1),
        "source_hostname": p.string(given, "source_hostname", 253),
        "archive_sha256": p.sha256(given, "archive_sha256"),
        "size": positive_int(given, "size", MAX_TOTAL_BYTES),
        "files": files,
        "download": transfer.check_spec(given["download"], "GET", "download"),
    }


def _result(params: Dict[str, Any], work: Plan, reloaded: bool) -> Dict[str, Any]:
    return {
        "snapshot_id": params["snapshot_id"],
        "added": work.paths(ADD),
        "changed": work.paths(CHANGE),
        "removed": work.paths(REMOVE),
        "unchanged": work.unchanged,
        "reloaded": reloaded,
    }


def restore(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    paths, snapshot = ctx.paths, params["snapshot_id"]
    if haproxy_ctl.haproxy_binary() is None:
        return Outcome(
            False,
            "HAProxy is not installed on this host: install HAProxy first (haproxy.install), "
            "then restore again",
        )
    if not any(entry["path"] == HAPROXY_CFG for entry in params["files"]):
        return Outcome(False, f"snapshot {snapshot} holds no {HAPROXY_CFG}: refusing to restore it")
    try:
        scope = RestoreScope(restore_dirs())
    except AgentError as exc:
        return Outcome(False, str(exc))
    work = paths.restore_dir / str(ctx.job_id)
    output: List[str] = []
    if work.exists():
        output += recover_one(paths, ctx.cfg, work)
    try:
        paths.restore_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        work.mkdir(mode=0o700)
        staged = _download_and_stage(params, ctx, work, scope)
        todo = plan(paths, staged)
    except (AgentError, OSError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        return Outcome(False, _message(exc), "\n".join(output))
    output += staged.notes
    foreign = params["source_hostname"].rstrip(".").lower() != ctx.cfg.hostname.rstrip(".").lower()
    code = code_directives(staged_sections(staged.tree)) if foreign else []
    if code:
        shutil.rmtree(work, ignore_errors=True)
        return Outcome(
            False,
            f"refused: snapshot {snapshot} of {params['source_hostname']} configures code that "
            f"HAProxy runs as root ({', '.join(code[:3])}); a restore from another member never "
            "brings code along. Restore it on its own member, or copy those lines by hand after "
            "review",
            "\n".join(output),
        )
    if todo.empty:
        shutil.rmtree(work, ignore_errors=True)
        summary = f"nothing to change: this host already has snapshot {snapshot}'s files"
        return Outcome(True, summary, "\n".join(output), _result(params, todo, False))
    return _swap(params, ctx, Swap(paths, work, ctx.job_id, todo.changes), todo, output)


def _message(exc: BaseException) -> str:
    if isinstance(exc, AgentError):
        return str(exc)
    return f"cannot prepare the restore: {exc}"


def _download_and_stage(
    params: Dict[str, Any], ctx: JobContext, work: Path, scope: RestoreScope
) -> Staged:
    archive = work / "archive.tar.gz"
    moved = transfer.download(ctx.cfg, params["download"], archive, params["size"], ctx.deadline)
    if moved.sha256 != params["archive_sha256"]:
        raise transfer.TransferError(
            f"the archive downloaded from {moved.where} has SHA-256 {moved.sha256}, not the "
            f"snapshot's {params['archive_sha256']}: refused, nothing was changed"
        )
    return stage(
        archive, params["archive_sha256"], params["files"], work / "staging", scope, ctx.paths.root
    )


def _swap(
    params: Dict[str, Any], ctx: JobContext, swap: Swap, todo: Plan, output: List[str]
) -> Outcome:
    paths, pidfile = ctx.paths, ctx.cfg.haproxy_pidfile
    output.append(_describe(todo))
    try:
        swap.write_journal(SWAPPING)
        swap.apply(step_pause())
        swap.write_journal(CHECKING)
        check = haproxy_ctl.validate(paths, ctx.deadline)
        output.append(check.output)
        if not check.ok:
            reason = f"the restored configuration does not validate: {check.summary}"
            return _undo(params, ctx, swap, todo, reason, False, output)
        swap.write_journal(RELOADING)
        step = haproxy_ctl.reload(paths, pidfile, ctx.deadline)
        output.append(step.output)
        if not step.ok:
            return _undo(params, ctx, swap, todo, step.summary, step.took_over, output)
        swap.write_journal(COMMITTED)
    except (SwapError, OSError) as exc:
        reloading = swap.phase == RELOADING
        return _undo(params, ctx, swap, todo, str(exc), reloading, output)
    except BaseException:
        _undo(params, ctx, swap, todo, "interrupted", swap.phase == RELOADING, output)
        raise
    swap.clean()
    counts = (
        f"{len(todo.paths(ADD))} added, {len(todo.paths(CHANGE))} changed, "
        f"{len(todo.paths(REMOVE))} removed, {todo.unchanged} unchanged"
    )
    summary = f"restored snapshot {params['snapshot_id']} ({counts}); {step.summary}"
    return Outcome(True, summary, _join(output), _result(params, todo, True))


def _undo(
    params: Dict[str, Any],
    ctx: JobContext,
    swap: Swap,
    todo: Plan,
    reason: str,
    took_over: bool,
    output: List[str],
) -> Outcome:
    try:
        undone = swap.rollback()
    except OSError as exc:
        logger.error("restore of job %d: rollback failed: %s", ctx.job_id, exc)
        return Outcome(
            False,
            f"{reason}; putting the previous files back failed too ({exc}): the agent tries "
            f"again when it starts; the journal is in {swap.work}",
            _join(output),
            _result(params, todo, False),
        )
    output.append("# rollback\n" + "\n".join(undone))
    undo = "the previous files are back"
    if took_over:
        budget = Deadline(ROLLBACK_BUDGET_S)
        back = haproxy_ctl.reload(ctx.paths, ctx.cfg.haproxy_pidfile, budget)
        output.append(back.output)
        undo += " and reloaded" if back.ok else f", but reloading them failed: {back.summary}"
    swap.clean()
    return Outcome(False, f"{reason}; {undo}", _join(output), _result(params, todo, False))


def _describe(todo: Plan) -> str:
    lines = [f"{change.action} {change.target}" for change in todo.changes]
    return "\n".join(lines + [f"{todo.unchanged} file(s) unchanged"])


def _join(parts: List[str]) -> str:
    return "\n".join(part.rstrip("\n") for part in parts if part and part.strip())
