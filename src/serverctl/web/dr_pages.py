"""The pool's Disaster Recovery tab (HAProxy pools with two or more members): restore one
member's snapshot onto another after seeing what it would change there, provision a standby from
the active member's latest backup, and the checklist for rebuilding a lost host on a fresh VM.

The restore picker is a GET form: with HTMX, changing the target or the snapshot swaps in the
picker again (`/dr/picker`) with the snapshots of the other members and the diff for that target;
without JavaScript, "Show changes" reloads the page with the same choices."""

from __future__ import annotations

from itertools import groupby
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.backup_pages import followed_job
from serverctl.web.common import redirect, render, workspace

router = APIRouter(include_in_schema=False)
DR = "/pools/{pool_id}/dr"
# The form's "Install HAProxy" choices, as provision_standby takes them.
INSTALL: dict[str, Literal["auto"] | bool] = {"auto": "auto", "yes": True, "no": False}


def dr_available(pool: dict[str, Any], members: list[dict[str, Any]]) -> bool:
    """The tab exists for HAProxy pools with a member to restore onto or from."""
    return pool["template"] == "haproxy" and len(members) >= 2


def _id(value: str | None, what: str) -> int | None:
    """A chosen id from a form or query ("" = nothing chosen yet)."""
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{what} must be chosen from the list, not {value!r}") from None


def picker(
    state: AppState,
    user: WebUser,
    pool_id: int,
    members: list[dict[str, Any]],
    target_id: int | None,
    snapshot_id: int | None,
) -> dict[str, Any]:
    """The cross-member restore choices: a target, the other members' snapshots (grouped by
    the host they were taken on, removed hosts included) and, once both are chosen, the diff."""
    snapshots = [
        s
        for s in state.backups.pool_snapshots(user.principal, pool_id)
        if s.get("kind", "haproxy") == "haproxy" and s.get("state", "completed") == "completed"
    ]
    target = next((m for m in members if m["id"] == target_id), None)
    if target is None:
        target = next((m for m in members if m["role"] == "standby"), members[0])
    choices = [s for s in snapshots if s.get("member_id") != target["id"]]
    chosen = next((s for s in choices if s["id"] == snapshot_id), None)
    ordered = sorted(choices, key=lambda s: str(s.get("hostname")))
    groups = [(host, list(items)) for host, items in groupby(ordered, key=lambda s: s["hostname"])]
    diff = (
        state.backups.diff(user.principal, chosen["id"], target["id"])
        if chosen is not None
        else None
    )
    return {
        "target": target,
        "snapshot_groups": groups,
        "snapshot": chosen,
        "diff": diff,
        "has_snapshots": bool(snapshots),
    }


def provision_context(
    state: AppState, user: WebUser, pool_id: int, members: list[dict[str, Any]]
) -> dict[str, Any]:
    active = next((m for m in members if m["role"] == "active"), None)
    latest = None
    if active is not None:
        own = [
            s
            for s in state.backups.pool_snapshots(user.principal, pool_id)
            if s.get("member_id") == active["id"] and s.get("kind", "haproxy") == "haproxy"
        ]
        latest = max(own, key=lambda s: int(s["id"])) if own else None
    return {
        "active": active,
        "active_latest": latest,
        "standbys": [m for m in members if m["role"] == "standby"],
    }


def dr_context(
    state: AppState,
    user: WebUser,
    pool_id: int,
    target_id: int | None = None,
    snapshot_id: int | None = None,
) -> dict[str, Any]:
    context = workspace(state, user, pool_id)
    context["tab"] = "dr"
    pool, members = context["pool"], context["members"]
    if not dr_available(pool, members):
        context["unavailable"] = (
            "Disaster Recovery is for HAProxy pools: this is a Generic Linux pool."
            if pool["template"] != "haproxy"
            else f"Disaster Recovery needs two or more members: {pool['name']} has "
            f"{len(members)}. Add a second member on the Overview first."
        )
        return context
    context.update(picker(state, user, pool_id, members, target_id, snapshot_id))
    context.update(provision_context(state, user, pool_id, members))
    return context


def _page(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    status_code: int = 200,
    target_id: int | None = None,
    snapshot_id: int | None = None,
    **extra: Any,
) -> HTMLResponse:
    context = dr_context(state, user, pool_id, target_id, snapshot_id)
    if "unavailable" in context:
        status_code = 404
    context.update(extra)
    return render(request, "disaster_recovery.html", user, status_code, **context)


@router.get(DR)
def dr_page(
    request: Request,
    pool_id: Id,
    state: State,
    user: CurrentUser,
    target_member_id: str | None = None,
    snapshot_id: str | None = None,
    job: int | None = None,
) -> HTMLResponse:
    try:
        target, snapshot = _id(target_member_id, "the target"), _id(snapshot_id, "the snapshot")
    except ValidationError as exc:
        return _page(request, state, user, pool_id, exc.status_code, error=exc.message)
    return _page(
        request,
        state,
        user,
        pool_id,
        target_id=target,
        snapshot_id=snapshot,
        followed=followed_job(state, user, pool_id, job),
    )


@router.get(DR + "/picker")
def dr_picker(
    request: Request,
    pool_id: Id,
    state: State,
    user: CurrentUser,
    target_member_id: str | None = None,
    snapshot_id: str | None = None,
) -> HTMLResponse:
    context = dr_context(
        state,
        user,
        pool_id,
        _id(target_member_id, "the target"),
        _id(snapshot_id, "the snapshot"),
    )
    if "unavailable" in context:
        return render(request, "error.html", user, 404, message=context["unavailable"])
    return render(request, "_dr_picker.html", user, **context)


@router.post(DR + "/restore")
def dr_restore(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    target_member_id: Annotated[str, Form()] = "",
    snapshot_id: Annotated[str, Form()] = "",
) -> Response:
    target = snapshot = None
    try:
        target, snapshot = _id(target_member_id, "the target"), _id(snapshot_id, "the snapshot")
        if target is None or snapshot is None:
            raise ValidationError("choose the target member and the snapshot to restore onto it")
        context = dr_context(state, user, pool_id, target, snapshot)
        if "unavailable" in context:
            raise ValidationError(context["unavailable"])
        if context["snapshot"] is None:
            raise ValidationError(
                f"snapshot {snapshot} is not a completed HAProxy backup of another member of "
                f"{context['pool']['name']}: choose one from the list"
            )
        queued = state.backups.restore(user.principal, snapshot, target_member_id=target)
    except ServerCTLError as exc:
        return _page(
            request,
            state,
            user,
            pool_id,
            exc.status_code,
            target_id=target,
            snapshot_id=snapshot,
            restore_error=exc.message,
        )
    return redirect(
        f"/pools/{pool_id}/dr?target_member_id={target}&snapshot_id={snapshot}"
        f"&job={queued['job_id']}#cross-restore"
    )


@router.post(DR + "/provision")
def dr_provision(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    member_id: Annotated[str, Form()] = "",
    install_haproxy: Annotated[str, Form()] = "auto",
) -> Response:
    try:
        standby = _id(member_id, "the standby")
        if standby is None:
            raise ValidationError("choose the standby to provision")
        if install_haproxy not in INSTALL:
            raise ValidationError(
                f"Install HAProxy must be one of {', '.join(INSTALL)}, not {install_haproxy!r}"
            )
        context = dr_context(state, user, pool_id)
        if "unavailable" in context:
            raise ValidationError(context["unavailable"])
        queued = state.backups.provision_standby(
            user.principal, pool_id, standby, install_haproxy=INSTALL[install_haproxy]
        )
    except ServerCTLError as exc:
        return _page(request, state, user, pool_id, exc.status_code, provision_error=exc.message)
    return redirect(f"/pools/{pool_id}/dr?job={queued['job_id']}#provision")
