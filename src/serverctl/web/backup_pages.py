"""A member's Restore Backups sub-tab: Back up now (and Back up UFW rules where the agent reports
ufw), the member's snapshots newest first, a Review & restore page per snapshot that shows what a
restore would change on the member, the restore job followed live, and the member's own backup
schedule and retention.

Jobs started here are followed by `/pools/{id}/backup-jobs/{job_id}`, a small partial that polls
itself every 2 s and stops once the job has finished (the Disaster Recovery tab uses it too).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.errors import NotFound, ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import member_context, redirect, render

router = APIRouter(include_in_schema=False)
BACKUPS = "/pools/{pool_id}/members/{member_id}/backups"
KINDS = ("haproxy", "ufw")


def reports_ufw(member: dict[str, Any]) -> bool:
    """Does the member's agent report ufw (`haproxy.backup_files.ufw` in its heartbeat)?"""
    heartbeat = member.get("heartbeat") or {}
    files = (heartbeat.get("haproxy") or {}).get("backup_files") or {}
    return isinstance(files, dict) and bool(files.get("ufw"))


def _tab_url(pool_id: int, member_id: int, suffix: str = "") -> str:
    return f"/pools/{pool_id}/members/{member_id}/backups{suffix}"


def followed_job(
    state: AppState, user: WebUser, pool_id: int, job_id: int | None
) -> dict[str, Any] | None:
    """The job a page was asked to follow (`?job=`), when it is one of this pool's."""
    if job_id is None:
        return None
    try:
        job = state.jobs.get(user.principal, job_id)
    except NotFound:
        return None
    return job if job["pool_id"] == pool_id else None


# -- the tab --------------------------------------------------------------------------------------


def backups_context(state: AppState, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    context = member_context(state, user, pool_id, member_id, "backups")
    context.update(
        snapshots=state.backups.list_snapshots(user.principal, pool_id, member_id),
        policy=state.backups.get_policy(user.principal, pool_id, member_id),
        reports_ufw=reports_ufw(context["member"]),
    )
    return context


def _tab(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    member_id: int,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    context = backups_context(state, user, pool_id, member_id)
    context.update(extra)
    return render(request, "member_backups.html", user, status_code, **context)


@router.get(BACKUPS)
def backups_tab(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: CurrentUser,
    job: int | None = None,
    saved: int = 0,
    deleted: int | None = None,
) -> HTMLResponse:
    return _tab(
        request,
        state,
        user,
        pool_id,
        member_id,
        followed=followed_job(state, user, pool_id, job),
        saved=bool(saved),
        deleted=deleted,
    )


@router.get(BACKUPS + "/live")
def backups_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    """The snapshot list, polled while the tab is open (a running backup turns completed)."""
    context = member_context(state, user, pool_id, member_id, "backups")
    context["snapshots"] = state.backups.list_snapshots(user.principal, pool_id, member_id)
    return render(request, "_backup_list.html", user, oob=True, **context)


@router.post(BACKUPS)
def back_up_now(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: FormUser,
    kind: Annotated[str, Form()] = "haproxy",
) -> Response:
    try:
        if kind not in KINDS:
            raise ValidationError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        queued = state.backups.enqueue_backup(user.principal, pool_id, member_id, kind=kind)
    except ServerCTLError as exc:
        return _tab(request, state, user, pool_id, member_id, exc.status_code, error=exc.message)
    return redirect(_tab_url(pool_id, member_id, f"?job={queued['job_id']}"))


def _optional_int(value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{what} must be a whole number or empty, not {value!r}") from None


@router.post(BACKUPS + "/policy")
def save_policy(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: FormUser,
    cron: Annotated[str, Form()] = "",
    keep_last: Annotated[str, Form()] = "",
    keep_days: Annotated[str, Form()] = "",
) -> Response:
    """Empty cron: on demand only; empty keep fields: no limit of that kind."""
    try:
        state.backups.set_policy(
            user.principal,
            pool_id,
            member_id,
            cron.strip() or None,
            _optional_int(keep_last, "Keep last"),
            _optional_int(keep_days, "Keep days"),
        )
    except ServerCTLError as exc:
        return _tab(
            request,
            state,
            user,
            pool_id,
            member_id,
            exc.status_code,
            policy_error=exc.message,
            policy_form={"cron": cron, "keep_last": keep_last, "keep_days": keep_days},
        )
    return redirect(_tab_url(pool_id, member_id, "?saved=1"))


# -- one snapshot: review & restore ---------------------------------------------------------------


def review_context(
    state: AppState, user: WebUser, pool_id: int, member_id: int, snapshot_id: int
) -> dict[str, Any]:
    context = member_context(state, user, pool_id, member_id, "backups")
    snapshot = state.backups.get_snapshot(user.principal, snapshot_id)
    if snapshot["pool_id"] != pool_id:
        raise NotFound(f"no backup {snapshot_id} in pool {context['pool']['name']}")
    restorable = snapshot["state"] == "completed" and snapshot["kind"] == "haproxy"
    context.update(
        snapshot=snapshot,
        restorable=restorable,
        diff=state.backups.diff(user.principal, snapshot_id, member_id) if restorable else None,
    )
    return context


@router.get(BACKUPS + "/{snapshot_id:int}")
def review_page(
    request: Request,
    pool_id: Id,
    member_id: Id,
    snapshot_id: Id,
    state: State,
    user: CurrentUser,
    job: int | None = None,
) -> HTMLResponse:
    context = review_context(state, user, pool_id, member_id, snapshot_id)
    context["followed"] = followed_job(state, user, pool_id, job)
    return render(request, "backup_review.html", user, **context)


@router.post(BACKUPS + "/{snapshot_id:int}/restore")
def restore(
    request: Request,
    pool_id: Id,
    member_id: Id,
    snapshot_id: Id,
    state: State,
    user: FormUser,
) -> Response:
    try:
        # Check the snapshot belongs to this pool before anything is queued.
        review_context(state, user, pool_id, member_id, snapshot_id)
        queued = state.backups.restore(user.principal, snapshot_id, target_member_id=member_id)
    except ServerCTLError as exc:
        context = review_context(state, user, pool_id, member_id, snapshot_id)
        return render(
            request, "backup_review.html", user, exc.status_code, error=exc.message, **context
        )
    return redirect(_tab_url(pool_id, member_id, f"/{snapshot_id}?job={queued['job_id']}"))


@router.post(BACKUPS + "/{snapshot_id:int}/delete")
def delete_snapshot(
    request: Request,
    pool_id: Id,
    member_id: Id,
    snapshot_id: Id,
    state: State,
    user: FormUser,
) -> Response:
    try:
        review_context(state, user, pool_id, member_id, snapshot_id)
        state.backups.delete_snapshot(user.principal, snapshot_id)
    except ServerCTLError as exc:
        return _tab(request, state, user, pool_id, member_id, exc.status_code, error=exc.message)
    return redirect(_tab_url(pool_id, member_id, f"?deleted={snapshot_id}"))


@router.get(BACKUPS + "/{snapshot_id:int}/archive")
def download_archive(
    pool_id: Id, member_id: Id, snapshot_id: Id, state: State, user: CurrentUser
) -> Response:
    """The snapshot's tar.gz (operators: it holds private keys)."""
    review_context(state, user, pool_id, member_id, snapshot_id)
    filename, chunks = state.backups.open_archive(user.principal, snapshot_id)
    return StreamingResponse(
        chunks,
        media_type="application/gzip",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )


# -- following a job ------------------------------------------------------------------------------


@router.get("/pools/{pool_id}/backup-jobs/{job_id}")
def job_live(
    request: Request, pool_id: Id, job_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    """A backup, restore or provisioning job's state and summary; polls itself until done."""
    job = followed_job(state, user, pool_id, job_id)
    if job is None:
        raise NotFound(f"no job {job_id} in this pool")
    return render(request, "_backup_job.html", user, pool={"id": pool_id}, followed=job)
