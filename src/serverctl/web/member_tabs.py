"""A member's workspace tabs: Status, Control panel, Recipes, Cron & Jobs. (Restore Backups is
in backup_pages.py; Health and Monitoring in routes.py and monitoring.py.)

Buttons queue jobs through the same rules as the REST API and come back to the tab they were
pressed on, which then shows the job's progress as the agent reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.domain import catalogue
from serverctl.domain.certificates import pool_certificates
from serverctl.domain.jobs import Enqueue
from serverctl.domain.schedules import PRESETS
from serverctl.errors import ServerCTLError
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import base_url, member_context, redirect, render

router = APIRouter(include_in_schema=False)
MEMBER = "/pools/{pool_id}/members/{member_id}"
SUBTABS = ("status", "control", "recipes", "jobs")


def _page(subtab: str, pool_id: int, member_id: int, **query: Any) -> str:
    path = f"/pools/{pool_id}/members/{member_id}/{subtab}"
    extra = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return f"{path}?{extra}" if extra else path


def _status(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    return {"status": state.pools.member_status(user.principal, pool_id, member_id)}


def _jobs(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    jobs, total = state.jobs.list_jobs(user.principal, pool_id, member_id, limit=50)
    return {"jobs": jobs, "jobs_total": total}


def _control(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    return {**_status(state, user, pool_id, member_id), **_jobs(state, user, pool_id, member_id)}


def _recipes(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    return {"recipes": state.jobs.recipe_states(user.principal, pool_id, member_id)}


def _cron(state: State, user: WebUser, pool_id: int, member_id: int) -> dict[str, Any]:
    return {
        "schedules": state.schedules.list(user.principal, pool_id, member_id),
        "presets": PRESETS,
        "catalogue": [k for k in catalogue.CATALOGUE.values() if k.params is catalogue.NoParams],
        **_jobs(state, user, pool_id, member_id),
    }


TAB_DATA: dict[str, Callable[[State, WebUser, int, int], dict[str, Any]]] = {
    "status": _status,
    "control": _control,
    "recipes": _recipes,
    "jobs": _cron,
}


def _tab(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    member_id: int,
    subtab: str,
    template: str,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """A tab's page, or (with oob=True) its live partial, with the data that tab shows."""
    context = member_context(state, user, pool_id, member_id, subtab)
    context.update(TAB_DATA[subtab](state, user, pool_id, member_id))
    return render(request, template, user, status_code, **context, **extra)


# -- Status ---------------------------------------------------------------------------------------


@router.get(MEMBER + "/status")
def status_tab(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    inventory = pool_certificates(state.db, state.live, user.principal, pool_id)
    return _tab(
        request,
        state,
        user,
        pool_id,
        member_id,
        "status",
        "member_status.html",
        member_certificates=inventory.member(member_id),
    )


@router.get(MEMBER + "/status/live")
def status_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "status", "_status_live.html", oob=True)


# -- Control panel --------------------------------------------------------------------------------


@router.get(MEMBER + "/control")
def control_tab(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: CurrentUser,
    queued: int | None = None,
) -> HTMLResponse:
    return _tab(
        request, state, user, pool_id, member_id, "control", "member_control.html", queued=queued
    )


@router.get(MEMBER + "/control/live")
def control_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "control", "_control_live.html", oob=True)


@router.post(MEMBER + "/jobs")
def queue_job(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: FormUser,
    job_type: Annotated[str, Form()],
    back: Annotated[str, Form()] = "control",
    backend: Annotated[str | None, Form()] = None,
    server: Annotated[str | None, Form()] = None,
    server_state: Annotated[str | None, Form()] = None,
) -> Response:
    params: dict[str, Any] = {}
    if job_type == "haproxy.server_state":
        params = {"backend": backend, "server": server, "state": server_state}
    back = back if back in SUBTABS else "control"
    try:
        job = state.jobs.enqueue(
            user.principal,
            Enqueue(pool_id, member_id, job_type, params, base_url=base_url(state, request)),
        )
    except ServerCTLError as exc:
        return _tab(
            request,
            state,
            user,
            pool_id,
            member_id,
            "control",
            "member_control.html",
            exc.status_code,
            error=exc.message,
        )
    return redirect(_page(back, pool_id, member_id, queued=job["id"]))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: Id, state: State, user: FormUser) -> Response:
    job = state.jobs.cancel(user.principal, job_id)
    return redirect(_page("jobs", job["pool_id"], job["member_id"]))


# -- Recipes --------------------------------------------------------------------------------------


@router.get(MEMBER + "/recipes")
def recipes_tab(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "recipes", "member_recipes.html")


@router.get(MEMBER + "/recipes/live")
def recipes_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "recipes", "_recipes_live.html", oob=True)


@router.post(MEMBER + "/recipes/{recipe_id}/{action}")
def run_recipe(
    request: Request,
    pool_id: Id,
    member_id: Id,
    recipe_id: str,
    action: str,
    state: State,
    user: FormUser,
    extra_names: Annotated[str, Form(max_length=2400)] = "",
) -> Response:
    if action not in ("apply", "disable"):
        return redirect(_page("recipes", pool_id, member_id))
    # The form's one option today: the letsencrypt recipe's extra names, space/comma separated.
    extra = extra_names.replace(",", " ").split()
    options = {"extra_names": extra} if extra else None
    try:
        state.jobs.start_recipe(
            user.principal, pool_id, member_id, recipe_id, action, options=options
        )
    except ServerCTLError as exc:
        return _tab(
            request,
            state,
            user,
            pool_id,
            member_id,
            "recipes",
            "member_recipes.html",
            exc.status_code,
            error=exc.message,
        )
    return redirect(_page("recipes", pool_id, member_id))


# -- Cron & Jobs ----------------------------------------------------------------------------------


@router.get(MEMBER + "/jobs")
def jobs_tab(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: CurrentUser,
    queued: int | None = None,
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "jobs", "member_jobs.html", queued=queued)


@router.get(MEMBER + "/jobs/live")
def jobs_live(
    request: Request, pool_id: Id, member_id: Id, state: State, user: CurrentUser
) -> HTMLResponse:
    return _tab(request, state, user, pool_id, member_id, "jobs", "_jobs_live.html", oob=True)


@router.post(MEMBER + "/schedules")
def add_schedule(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: FormUser,
    job_type: Annotated[str, Form()],
    cron: Annotated[str, Form()],
    scope: Annotated[str, Form()] = "member",
) -> Response:
    target = member_id if scope == "member" else None
    try:
        state.schedules.create(user.principal, pool_id, job_type, cron, target)
    except ServerCTLError as exc:
        return _tab(
            request,
            state,
            user,
            pool_id,
            member_id,
            "jobs",
            "member_jobs.html",
            exc.status_code,
            error=exc.message,
            form_cron=cron,
            form_job=job_type,
        )
    return redirect(_page("jobs", pool_id, member_id))


@router.post(MEMBER + "/schedules/{schedule_id}/{action}")
def change_schedule(
    pool_id: Id, member_id: Id, schedule_id: Id, action: str, state: State, user: FormUser
) -> Response:
    if action == "delete":
        state.schedules.delete(user.principal, pool_id, schedule_id)
    elif action in ("enable", "disable"):
        state.schedules.set_enabled(user.principal, pool_id, schedule_id, action == "enable")
    return redirect(_page("jobs", pool_id, member_id))
